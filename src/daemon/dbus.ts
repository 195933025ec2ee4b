import { readFileSync } from 'node:fs';
import { Message, MessageType, NameFlag, RequestNameReply, Variant, type MessageBus } from '@jellybrick/dbus-next';
import { normalizePath } from '../config/paths';
import { DRIFT_ROWS, RESOLVED_ROWS, toRow } from '../bus/codec';
import {
  BASE_INTERFACES,
  DOCTYPE,
  OBJECT_MANAGER_INTERFACE,
  STANDARD_INTERFACES,
  STANDARD_METHODS,
  type InterfaceContract,
} from '../bus/contract';
import { BusError, ERRORS } from '../bus/errors';
import { callerOf } from '../bus/freedesktop';
import {
  ALLOW_INTERACTIVE_AUTHORIZATION,
  BUS_NAME,
  ENTRY_IFACE,
  ENTRY_PREFIX,
  entryObjectPath,
  entryPathOf,
  INTROSPECTABLE_IFACE,
  MANAGER_IFACE,
  MANAGER_PATH,
  NO_REPLY_EXPECTED,
  OBJECT_MANAGER_IFACE,
  PEER_IFACE,
  PROPERTIES_IFACE,
} from '../bus/names';
import { LOG_NOTICE, LOG_WARNING, type Logger } from '../shared/journal';
import { describe, shownCounts, type DriftItem, type DriftReport } from '../drift/report';
import { ScanBusy, ScanCancelled, type DriftChange, type EntryView, type Manager, type ReloadResult } from './manager';
import { optionsProblem } from './options';
import { ACTION_PERSIST, ACTION_RELOAD, checkAuthorization } from './polkit';
import type { PersistRunner } from './persist-runner';
import * as z from 'zod/mini';
import { callerKey, DriftSubscribers, TooManySubscribers } from './subscribers';
import { canListFolder, visibilityFor, type Caller } from './visibility';

export { BUS_NAME, BusError };
/** How long Subscribe waits for the first look: well under the 25 s clients wait for a reply. */
const FIRST_LOOK_WAIT_MS = 10_000;
/**
 * What a caller may see of the entries is computed once and kept for this long at most (folder
 * permissions can change without the daemon knowing), or until the entries change; for this many
 * distinct callers (uid and groups) at most.
 */
const CALLER_VIEW_MAX_AGE_MS = 2000;
const MAX_CALLER_VIEWS = 256;

/** One caller's view: the entries it may see, and the manager's properties as it sees them. */
interface CallerView {
  generation: number;
  at: number;
  entries: EntryView[];
  visible: Set<EntryView>;
  properties?: { drift: DriftReport; value: Record<string, Variant> };
}

const error = {
  invalidArgument: (m: string) => BusError.of('InvalidArgument', m),
  noSuchEntry: (m: string) => BusError.of('NoSuchEntry', m),
  notAuthorized: (m: string) => BusError.of('NotAuthorized', m),
  canObtain: (m: string) => BusError.of('NotAuthorizedCanObtain', m),
  invalidConfig: (m: string) => BusError.of('InvalidConfig', m),
  cancelled: (m: string) => BusError.of('Cancelled', m),
  busy: (m: string) => BusError.of('Busy', m),
  invalidArgs: (m: string) => BusError.of('InvalidArgs', m),
  unknownMethod: (m: string) => BusError.of('UnknownMethod', m),
  unknownObject: (m: string) => BusError.of('UnknownObject', m),
  unknownInterface: (m: string) => BusError.of('UnknownInterface', m),
  unknownProperty: (m: string) => BusError.of('UnknownProperty', m),
  readOnly: (m: string) => BusError.of('PropertyReadOnly', m),
  limitsExceeded: (m: string) => BusError.of('LimitsExceeded', m),
};

/** A call being handled: the message, its body, and its caller (asked of the bus once, when needed). */
export interface Call {
  msg: Message;
  body: unknown[];
  caller(): Promise<Caller>;
}

/** A method's handler: read → validate → authorize → act → reply (undefined: an empty reply). */
type Handler = (call: Call) => Promise<Message | undefined>;

/** Options dictionaries (bounded by dispatch already): no option is defined yet, so any key is refused. */
function checkOptions(value: unknown): void {
  for (const key in value as Record<string, unknown>) throw error.invalidArgument(`unknown option ${JSON.stringify(key.slice(0, 200))}`);
}

const ScanOptions = z.strictObject({ since: z.optional(z.bigint()), rescan: z.optional(z.boolean()) });
const SCAN_OPTION_TYPES: Record<string, [signature: string, what: string]> = { since: ['t', 'seconds since the epoch'], rescan: ['b', 'true for a full walk'] };

/**
 * Scan options: "since" (t, seconds since the epoch; 0 for everything), "rescan" (b: walk the
 * root even when the live drift could answer).
 */
function checkScanOptions(value: unknown): { since?: number; rescan: boolean } {
  const plain: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const type = SCAN_OPTION_TYPES[key];
    if (!Object.hasOwn(SCAN_OPTION_TYPES, key) || !type) throw error.invalidArgument(`unknown option ${JSON.stringify(key.slice(0, 200))}`);
    const variant = v as Variant;
    if (variant?.signature !== type[0]) throw error.invalidArgument(`option "${key}" takes a ${type[0]} (${type[1]})`);
    plain[key] = variant.value;
  }
  const parsed = ScanOptions.safeParse(plain);
  if (!parsed.success) throw error.invalidArgument(`option ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
  const { since, rescan = false } = parsed.data;
  return { since: since === undefined ? undefined : checkSince(since), rescan };
}

/**
 * "since" no later than now: a u64 goes up to 2^64 - 1, which no clock reaches and which the
 * walker cannot take (it answered Failed with its own message). Compared as a bigint, before
 * it becomes a Number that would round it.
 */
function checkSince(since: bigint): number {
  const now = BigInt(Math.ceil(Date.now() / 1000));
  if (since > now) throw error.invalidArgument(`option "since" (${since}) is later than now (${now}): give seconds since the epoch, or 0 for everything`);
  return Number(since);
}

/** The longest path GetEntry takes: PATH_MAX, which counts bytes (a path of 4096 "é" is 8192). */
const MAX_PATH_BYTES = 4096;
function checkPath(value: unknown, what = 'path'): string {
  if (typeof value !== 'string') throw error.invalidArgument(`${what} must be a string`);
  if (Buffer.byteLength(value, 'utf8') > MAX_PATH_BYTES) throw error.invalidArgument(`${what} is longer than ${MAX_PATH_BYTES} bytes`);
  if (value.includes('\0')) throw error.invalidArgument(`${what} holds a NUL byte`);
  try {
    return normalizePath(value, { relative: false });
  } catch (err) {
    throw error.invalidArgument(`${what}: ${(err as Error).message.slice(0, 300)}`);
  }
}

/** A user name as useradd takes it (and systemd's valid_user_group_name, relaxed). */
const PersistOptions = z.strictObject({
  user: z.optional(z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,255}\$?$/, 'a user name (letters, digits, "_", "." and "-")'))),
});

/** Persist options: "user" (s), the user whose home holds the path (users.<name>). */
function checkPersistOptions(value: Record<string, Variant>): { user?: string } {
  const plain: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (key !== 'user') throw error.invalidArgument(`unknown option ${JSON.stringify(key.slice(0, 200))}`);
    if (v?.signature !== 's') throw error.invalidArgument('option "user" takes an s (a user name)');
    plain[key] = v.value;
  }
  const parsed = PersistOptions.safeParse(plain);
  if (!parsed.success) throw error.invalidArgument(`option ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** Waits for `promise`, but at most `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The D-Bus front end: translates calls into the engine (Manager) and its answers into
 * replies, properties and signals. It decides nothing but who may see and do what.
 * Every message is handled here, in front of the library's own dispatch, because authorization
 * needs the call's sender and flags.
 */
export class DbusFrontEnd {
  private readonly onReload = (r: ReloadResult) => this.emitReload(r);
  private readonly onStatus = () => this.emitStatus();
  private readonly callerViews = new Map<string, CallerView>();
  private readonly onDrift = (d: DriftChange) => this.emitDrift(d);
  private lastProgress = 0;
  private readonly subscribers: DriftSubscribers;
  private readonly onProgress = (n: number) => {
    const now = Date.now();
    if (now - this.lastProgress < 250) return; // at most four a second
    this.lastProgress = now;
    this.bus.send(Message.newSignal(MANAGER_PATH, MANAGER_IFACE, 'ScanProgress', 'u', [Math.min(n, 0xffffffff)]));
  };

  constructor(
    private readonly bus: MessageBus,
    private readonly manager: Manager,
    private readonly contract: Map<string, InterfaceContract>,
    private readonly log: Logger,
    /** Runs persist and unpersist outside the sandbox; none: those methods fail. */
    private readonly persister?: PersistRunner,
  ) {
    this.subscribers = new DriftSubscribers(bus, (destination, rows) => {
      const signal = Message.newSignal(MANAGER_PATH, MANAGER_IFACE, 'DriftChanged', DRIFT_ROWS, [rows]);
      signal.destination = destination;
      this.bus.send(signal);
    });
  }

  async start(): Promise<void> {
    this.bus.addMethodHandler(this.handle);
    this.manager.on('reloaded', this.onReload);
    this.manager.on('status', this.onStatus);
    this.manager.on('drift', this.onDrift);
    this.manager.on('progress', this.onProgress);
    const reply = await this.bus.requestName(BUS_NAME, NameFlag.DO_NOT_QUEUE);
    if (reply !== RequestNameReply.PRIMARY_OWNER && reply !== RequestNameReply.ALREADY_OWNER) {
      throw new Error(`cannot own ${BUS_NAME} on the bus (another instance is running?)`);
    }
  }

  stop(): void {
    this.manager.off('reloaded', this.onReload);
    this.manager.off('status', this.onStatus);
    this.manager.off('drift', this.onDrift);
    this.manager.off('progress', this.onProgress);
    this.subscribers.stop();
    this.bus.removeMethodHandler(this.handle);
  }

  private readonly handle = (msg: Message): boolean => {
    if (msg.type !== MessageType.METHOD_CALL) return false;
    this.dispatch(msg).then(
      (reply) => this.reply(msg, reply ?? Message.newMethodReturn(msg)),
      (err: unknown) => {
        if (err instanceof BusError) this.reply(msg, Message.newError(msg, err.errorName, err.message));
        else {
          this.log.log(LOG_WARNING, `Failed to handle ${msg.interface}.${msg.member}: ${(err as Error)?.stack ?? String(err)}`);
          this.reply(msg, Message.newError(msg, ERRORS.Failed, (err as Error)?.message ?? String(err)));
        }
      },
    );
    return true;
  };

  /** Sends a reply; one that cannot be encoded becomes an error reply, never a crash. */
  private reply(call: Message, reply: Message): void {
    if (call.flags & NO_REPLY_EXPECTED) return;
    try {
      this.bus.send(reply);
    } catch (err) {
      this.log.log(LOG_WARNING, `Cannot send the reply to ${call.interface}.${call.member}: ${(err as Error).message}`);
      this.bus.send(Message.newError(call, ERRORS.Failed, 'the reply could not be encoded'));
    }
  }

  /** The interfaces an object path has, or undefined if there is no such object. */
  private interfacesAt(path: string): string[] | undefined {
    const base = [PEER_IFACE, INTROSPECTABLE_IFACE];
    if (path === MANAGER_PATH) return [...base, PROPERTIES_IFACE, OBJECT_MANAGER_IFACE, MANAGER_IFACE];
    if (path === '/' || path === '/org' || path === '/org/impermanence' || path === ENTRY_PREFIX) return base;
    if (this.manager.find(entryPathOf(path) ?? '')) return [...base, PROPERTIES_IFACE, ENTRY_IFACE];
    return undefined;
  }

  /**
   * Every method we answer, by interface and member: a named handler each (like sd-bus vtables).
   * dispatch() routes, checks the signature against the contract and what the caller may see;
   * the handler does the rest.
   */
  private readonly methods: Record<string, Handler> = {
    [`${PEER_IFACE}.Ping`]: async () => undefined,
    [`${PEER_IFACE}.GetMachineId`]: async ({ msg }) => Message.newMethodReturn(msg, 's', [readFileSync('/etc/machine-id', 'utf8').trim()]),
    [`${INTROSPECTABLE_IFACE}.Introspect`]: async (call) => Message.newMethodReturn(call.msg, 's', [await this.introspect(call)]),
    [`${PROPERTIES_IFACE}.Get`]: (call) => this.getProperty(call),
    [`${PROPERTIES_IFACE}.GetAll`]: async (call) => Message.newMethodReturn(call.msg, 'a{sv}', [await this.properties(call, call.body[0] as string)]),
    [`${PROPERTIES_IFACE}.Set`]: async () => {
      throw error.readOnly('every property is read-only');
    },
    [`${OBJECT_MANAGER_IFACE}.GetManagedObjects`]: (call) => this.getManagedObjects(call),
    [`${MANAGER_IFACE}.ListEntries`]: (call) => this.listEntries(call),
    [`${MANAGER_IFACE}.GetEntry`]: (call) => this.getEntry(call),
    [`${MANAGER_IFACE}.Scan`]: (call) => this.scan(call),
    [`${MANAGER_IFACE}.GetDrift`]: (call) => this.getDrift(call),
    [`${MANAGER_IFACE}.Subscribe`]: (call) => this.subscribe(call),
    [`${MANAGER_IFACE}.Unsubscribe`]: async ({ msg }) => {
      this.subscribers.remove(msg.sender);
      return undefined;
    },
    [`${MANAGER_IFACE}.CancelScan`]: (call) => this.cancelScan(call),
    [`${MANAGER_IFACE}.Reload`]: (call) => this.reload(call),
    [`${MANAGER_IFACE}.Persist`]: (call) => this.persist(call),
    [`${MANAGER_IFACE}.Unpersist`]: (call) => this.unpersist(call),
  };

  /** Routing, signature and visibility; then the method's handler. */
  private async dispatch(msg: Message): Promise<Message | undefined> {
    const interfaces = this.interfacesAt(msg.path);
    if (!interfaces) throw error.unknownObject(`no object at ${msg.path}`);
    const call: Call = { msg, body: msg.body, caller: () => this.caller(msg) };
    // An entry a caller could not see does not exist for it, whatever it asks of it.
    const view = this.manager.find(entryPathOf(msg.path) ?? '');
    if (view && !this.viewOf(await call.caller()).visible.has(view)) throw error.unknownObject(`no object at ${msg.path}`);
    let iface = msg.interface;
    if (!iface) iface = interfaces.find((i) => this.inSignature(i, msg.member) !== undefined) ?? '';
    if (!interfaces.includes(iface)) throw error.unknownInterface(`no interface ${JSON.stringify(iface)} at ${msg.path}`);
    const expected = this.inSignature(iface, msg.member);
    if (expected === undefined) throw error.unknownMethod(`no method ${JSON.stringify(msg.member)} in ${iface}`);
    if ((msg.signature ?? '') !== expected) {
      throw error.invalidArgs(`${iface}.${msg.member} takes (${expected}), not (${msg.signature ?? ''})`);
    }
    // Methods that may grow end with a{sv} options: bounded here, before any work on the call.
    if (expected.endsWith('a{sv}')) {
      const problem = optionsProblem(msg.body[msg.body.length - 1]);
      if (problem) throw error.invalidArgument(problem);
    }
    const handler = Object.hasOwn(this.methods, `${iface}.${msg.member}`) ? this.methods[`${iface}.${msg.member}`] : undefined;
    if (!handler) throw error.unknownMethod(`${iface}.${msg.member} is not implemented`);
    return handler(call);
  }

  private async getProperty(call: Call): Promise<Message> {
    const [ifaceName, prop] = call.body as [string, string];
    const props = await this.properties(call, ifaceName);
    // Own properties only: "constructor" or "__proto__" must not reach the encoder.
    const value = Object.hasOwn(props, prop) ? props[prop] : undefined;
    if (!value) throw error.unknownProperty(`no property ${JSON.stringify(prop.slice(0, 200))} in ${ifaceName}`);
    return Message.newMethodReturn(call.msg, 'v', [value]);
  }

  private async getManagedObjects(call: Call): Promise<Message> {
    const caller = await call.caller();
    const objects: Record<string, Record<string, Record<string, Variant>>> = {};
    for (const v of this.visibleEntries(caller)) objects[entryObjectPath(v.entry.path)] = { [ENTRY_IFACE]: this.entryProperties(v) };
    return Message.newMethodReturn(call.msg, 'a{oa{sa{sv}}}', [objects]);
  }

  private async listEntries(call: Call): Promise<Message> {
    checkOptions(call.body[0]);
    const caller = await call.caller();
    const rows = this.visibleEntries(caller).map((v) => [entryObjectPath(v.entry.path), v.entry.path, v.entry.kind, v.entry.storage, v.status.state]);
    return Message.newMethodReturn(call.msg, 'a(ossss)', [rows]);
  }

  private async getEntry(call: Call): Promise<Message> {
    const path = checkPath(call.body[0]);
    const caller = await call.caller();
    const view = this.manager.entry(path);
    if (!view || !this.viewOf(caller).visible.has(view)) throw error.noSuchEntry(`no persisted entry for ${path}`);
    return Message.newMethodReturn(call.msg, 'o', [entryObjectPath(view.entry.path)]);
  }

  private async scan(call: Call): Promise<Message> {
    const { since, rescan } = checkScanOptions(call.body[0]);
    const caller = await call.caller();
    let report;
    try {
      // From the live drift when it is complete, else a full walk: root's walks become the
      // daemon's current drift; anyone else just gets the answer.
      ({ report } = await this.manager.answer(since, rescan, call.msg.sender, caller.uid === 0, caller.uid));
    } catch (err) {
      if (err instanceof ScanCancelled) throw error.cancelled(err.message);
      if (err instanceof ScanBusy) throw error.busy(err.message);
      throw err;
    }
    return Message.newMethodReturn(call.msg, DRIFT_ROWS, [this.driftRows(report.items, caller)]);
  }

  private async getDrift(call: Call): Promise<Message> {
    checkOptions(call.body[0]);
    return Message.newMethodReturn(call.msg, DRIFT_ROWS, [this.driftRows(this.manager.drift.items, await call.caller())]);
  }

  private async subscribe(call: Call): Promise<Message> {
    checkOptions(call.body[0]);
    const caller = await call.caller();
    // A complete first view, not what the daemon saw so far; but on a huge root, answer with
    // what is known before the caller's bus library gives up (sd-bus and GDBus: 25 s).
    await within(this.manager.lookedFirst, FIRST_LOOK_WAIT_MS);
    const rows = this.driftRows(this.manager.drift.items, caller);
    try {
      await this.subscribers.add(call.msg.sender, caller, rows);
    } catch (err) {
      if (err instanceof TooManySubscribers) throw error.limitsExceeded(err.message);
      throw err;
    }
    return Message.newMethodReturn(call.msg, DRIFT_ROWS, [rows]);
  }

  private async cancelScan(call: Call): Promise<undefined> {
    const caller = await call.caller();
    this.manager.cancelScan(call.msg.sender, caller.uid === 0);
    return undefined;
  }

  private async reload(call: Call): Promise<undefined> {
    checkOptions(call.body[0]);
    await this.authorize(call, ACTION_RELOAD);
    const result = this.manager.reload();
    if (!result.ok) throw error.invalidConfig(result.problems.join('\n'));
    return undefined;
  }

  /**
   * Persist(path, storage, options{user}): validated, authorized (polkit, interactive if the
   * caller allows it), then run outside the sandbox by systemd (see PersistRunner).
   */
  private async persist(call: Call): Promise<Message> {
    const [rawPath, rawStorage, options] = call.body as [unknown, unknown, Record<string, Variant>];
    const path = checkPath(rawPath);
    const storage = rawStorage === '' ? undefined : checkPath(rawStorage, 'storage');
    const { user } = checkPersistOptions(options);
    await this.authorize(call, ACTION_PERSIST);
    const args = ['persist', ...(storage ? ['--storage', storage] : []), ...(user ? ['--user', user] : []), '--', path];
    return Message.newMethodReturn(call.msg, 'as', [await this.runPersist(call, args)]);
  }

  /** Unpersist(path, options): the same way as Persist. */
  private async unpersist(call: Call): Promise<Message> {
    const [rawPath, options] = call.body as [unknown, Record<string, Variant>];
    const path = checkPath(rawPath);
    checkOptions(options);
    await this.authorize(call, ACTION_PERSIST);
    return Message.newMethodReturn(call.msg, 'as', [await this.runPersist(call, ['unpersist', '--', path])]);
  }

  /** Runs impermanencectl persist|unpersist through systemd; its lines, or PersistFailed saying why. */
  private async runPersist(call: Call, args: string[]): Promise<string[]> {
    if (!this.persister) throw BusError.of('Failed', 'persisting at runtime is not available in this daemon (no systemd to run it)');
    const caller = await call.caller();
    const what = `${args[0]} ${args[args.length - 1]}`;
    let run;
    try {
      run = await this.persister.run(args);
    } catch (err) {
      throw BusError.of('Failed', `cannot run ${what}: ${(err as Error).message}`);
    }
    const lines = run.output.split('\n').filter(Boolean);
    this.log.log(run.ok ? LOG_NOTICE : LOG_WARNING, `${what} for uid ${caller.uid}: ${run.ok ? 'done' : `${run.result}: ${lines.join('; ')}`}`, {
      IMPERMANENCE_ACTION: ACTION_PERSIST,
      IMPERMANENCE_CALLER_UID: caller.uid,
      IMPERMANENCE_PATH: args[args.length - 1]!,
    });
    if (!run.ok) {
      const said = lines.map((l) => l.replace(/^impermanencectl (un)?persist: /, '')).join('\n');
      throw BusError.of('PersistFailed', said || `${what} failed (${run.result})`);
    }
    return lines;
  }

  private inSignature(iface: string, member: string): string | undefined {
    return STANDARD_METHODS[iface]?.[member] ?? this.contract.get(iface)?.methods.get(member);
  }

  /** The caller of a message, asked of the bus once per message. */
  private readonly callers = new WeakMap<Message, Promise<Caller>>();
  private caller(msg: Message): Promise<Caller> {
    let caller = this.callers.get(msg);
    if (!caller) {
      caller = callerOf(this.bus, msg.sender);
      this.callers.set(msg, caller);
    }
    return caller;
  }

  /** root is allowed outright (as systemd does for privileged callers); anyone else asks polkit. */
  private async authorize({ msg, caller: who }: Call, action: string): Promise<void> {
    const caller = await who();
    if (caller.uid === 0) return;
    const interactive = (msg.flags & ALLOW_INTERACTIVE_AUTHORIZATION) !== 0;
    let result;
    try {
      result = await checkAuthorization(this.bus, msg.sender, action, interactive);
    } catch (err) {
      throw error.notAuthorized(`cannot ask polkit whether uid ${caller.uid} may ${action}: ${(err as Error).message}`);
    }
    this.log.log(LOG_NOTICE, `${action} by uid ${caller.uid}: ${result}`, { IMPERMANENCE_ACTION: action, IMPERMANENCE_CALLER_UID: caller.uid });
    if (result === 'authorized') return;
    if (result === 'challenge') throw error.canObtain(`${action} needs authentication; allow interactive authorization to be asked for it`);
    throw error.notAuthorized(`uid ${caller.uid} is not allowed to ${action}`);
  }

  /**
   * Drift items as D-Bus rows, without the paths the caller could not see, and with counts of
   * only what it could count itself: the files in folders inside an item that it may not list
   * are left out (the detail says so), and an item of which it could count nothing is left out.
   */
  private driftRows(items: DriftItem[], caller: Caller): unknown[] {
    const see = visibilityFor(caller, this.manager.root);
    const rows: unknown[] = [];
    for (const i of items) {
      if (!see.canSeeContents(i.path)) continue;
      let { files, bytes, detail } = i;
      if (caller.uid !== 0 && i.closed?.length) {
        const shown = shownCounts(i, (c) => canListFolder(caller, c.uid, c.gid, c.mode));
        if (shown.cut) {
          if (shown.files === 0) continue;
          ({ files, bytes } = shown);
          detail = `${describe({ kind: i.kind, files, bytes })} (not counting folders you may not list)`;
        }
      }
      rows.push(toRow(i, { files, bytes, detail }));
    }
    return rows;
  }

  private emitDrift(d: DriftChange): void {
    const root = { uid: 0, gids: [] };
    // Delivered to root only by the bus policy: these carry paths.
    if (d.appeared.length) this.bus.send(Message.newSignal(MANAGER_PATH, MANAGER_IFACE, 'DriftAppeared', DRIFT_ROWS, [this.driftRows(d.appeared, root)]));
    if (d.resolved.length) this.bus.send(Message.newSignal(MANAGER_PATH, MANAGER_IFACE, 'DriftResolved', RESOLVED_ROWS, [d.resolved.map((i) => [i.kind, i.path])]));
    // Subscribers (any user) get their own view, addressed to them alone.
    this.subscribers.publish((caller) => this.driftRows(d.report.items, caller));
    this.bus.send(
      Message.newSignal(MANAGER_PATH, PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as', [
        MANAGER_IFACE,
        { LastScanSince: new Variant('t', BigInt(Math.floor(d.report.since))), LastScanSinceUSec: new Variant('t', BigInt(Math.round(d.report.since * 1e6))) },
        ['DriftCount'],
      ]),
    );
  }

  private visibleEntries(caller: Caller): EntryView[] {
    return this.viewOf(caller).entries;
  }

  /**
   * What `caller` may see of the entries, computed once per caller (uid and groups) and kept until
   * the entries change or CALLER_VIEW_MAX_AGE_MS passed: a flood of property reads costs a map
   * lookup each, not a look at every entry's folders.
   */
  private viewOf(caller: Caller): CallerView {
    const all = this.manager.entries(); // first: it may read the system, and so change the generation
    const generation = this.manager.generation;
    const key = callerKey(caller);
    const now = Date.now();
    let view = this.callerViews.get(key);
    if (view && view.generation === generation && now - view.at <= CALLER_VIEW_MAX_AGE_MS) return view;
    const see = visibilityFor(caller, this.manager.root);
    const entries = caller.uid === 0 ? all : all.filter((v) => see.canSee(v.entry.path));
    view = { generation, at: now, entries, visible: new Set(entries) };
    this.callerViews.delete(key);
    this.callerViews.set(key, view);
    if (this.callerViews.size > MAX_CALLER_VIEWS) this.callerViews.delete(this.callerViews.keys().next().value!);
    return view;
  }

  private async properties({ msg, caller }: Call, ifaceName: string): Promise<Record<string, Variant>> {
    if (msg.path === MANAGER_PATH && ifaceName === MANAGER_IFACE) return this.managerProperties(await caller());
    const view = this.manager.entry(entryPathOf(msg.path) ?? '');
    if (view && ifaceName === ENTRY_IFACE) {
      if (!this.viewOf(await caller()).visible.has(view)) throw error.unknownObject(`no object at ${msg.path}`);
      return this.entryProperties(view);
    }
    throw error.unknownInterface(`no interface ${JSON.stringify(ifaceName.slice(0, 200))} at ${msg.path}`);
  }

  /**
   * The manager's properties as `caller` sees them: counts and State over the entries and drift it
   * may see (State says degraded only for an entry it may see). Kept with the caller's view until
   * the entries or the drift change.
   */
  private managerProperties(caller: Caller): Record<string, Variant> {
    const m = this.manager;
    const view = this.viewOf(caller);
    if (view.properties?.drift === m.drift) return view.properties.value;
    const see = visibilityFor(caller, m.root);
    const visible = (paths: string[]) => paths.filter((p) => see.canSee(p, '/'));
    const entries = view.entries;
    const value = this.typed(MANAGER_IFACE, {
      Version: m.version,
      State: m.stateOf(entries),
      ConfigFiles: visible(m.configFiles),
      ConfigProblems: caller.uid === 0 || m.configProblems.length === 0 ? m.configProblems : ['the configuration is invalid (details for root only)'],
      StorageRoots: m.storageRoots.filter((p) => see.canSee(p)),
      EntryCount: entries.length,
      ActiveCount: entries.filter((v) => v.status.state === 'mounted' || v.status.state === 'linked').length,
      DriftCount: this.driftRows(m.drift.items, caller).length,
      LastScanSince: BigInt(Math.floor(m.drift.since)),
      LastScanSinceUSec: BigInt(Math.round(m.drift.since * 1e6)),
    });
    view.properties = { drift: m.drift, value };
    return value;
  }

  private entryProperties(v: EntryView): Record<string, Variant> {
    const e = v.entry;
    return this.typed(ENTRY_IFACE, {
      Path: e.path,
      Kind: e.kind,
      Storage: e.storage,
      Source: e.source,
      Method: v.status.method,
      Owner: e.perms ? `${e.perms.user}:${e.perms.group}` : '',
      Mode: e.perms?.mode ?? 0,
      State: v.status.state,
      Unit: v.status.unit,
      ConfigFile: e.origin.file,
      ConfigEntry: e.origin.entry,
    });
  }

  /** Wraps values in Variants of the types the contract declares. */
  private typed(iface: string, values: Record<string, unknown>): Record<string, Variant> {
    const types = this.contract.get(iface)!.properties;
    const out: Record<string, Variant> = {};
    for (const [name, type] of types) out[name] = new Variant(type, values[name]);
    return out;
  }

  private async introspect({ msg, caller: who }: Call): Promise<string> {
    const path = msg.path;
    const node = (inner: string) => `${DOCTYPE}<node>\n${inner}</node>\n`;
    if (path === MANAGER_PATH) {
      return node(STANDARD_INTERFACES + OBJECT_MANAGER_INTERFACE + this.contract.get(MANAGER_IFACE)!.xml + '\n  <node name="entry"/>\n');
    }
    if (path === ENTRY_PREFIX) {
      const caller = await who();
      const children = this.visibleEntries(caller).map((v) => `  <node name="${entryObjectPath(v.entry.path).slice(ENTRY_PREFIX.length + 1)}"/>\n`);
      return node(BASE_INTERFACES + children.join(''));
    }
    if (this.manager.find(entryPathOf(path) ?? '')) return node(STANDARD_INTERFACES + this.contract.get(ENTRY_IFACE)!.xml + '\n');
    const child = path === '/' ? 'org' : path === '/org' ? 'impermanence' : 'Manager';
    return node(BASE_INTERFACES + `  <node name="${child}"/>\n`);
  }

  /** After a reload: entries appear and disappear on the bus; the manager's properties change. */
  private emitReload(r: ReloadResult): void {
    for (const v of r.removed) {
      this.bus.send(Message.newSignal(MANAGER_PATH, OBJECT_MANAGER_IFACE, 'InterfacesRemoved', 'oas', [entryObjectPath(v.entry.path), [ENTRY_IFACE]]));
    }
    for (const v of r.added) {
      this.bus.send(
        Message.newSignal(MANAGER_PATH, OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}', [
          entryObjectPath(v.entry.path),
          { [ENTRY_IFACE]: this.entryProperties(v) },
        ]),
      );
    }
    // Signals go to every listener: what depends on who asks (paths, counts of what one may see,
    // State) is only invalidated; listeners Get it, and get their own answer.
    this.bus.send(
      Message.newSignal(MANAGER_PATH, PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as', [
        MANAGER_IFACE,
        {},
        ['State', 'ConfigFiles', 'ConfigProblems', 'StorageRoots', 'EntryCount', 'ActiveCount'],
      ]),
    );
  }

  /** An entry was mounted, unmounted, linked or replaced: State and ActiveCount may have changed, for some callers. */
  private emitStatus(): void {
    this.bus.send(Message.newSignal(MANAGER_PATH, PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as', [MANAGER_IFACE, {}, ['State', 'ActiveCount']]));
  }
}
