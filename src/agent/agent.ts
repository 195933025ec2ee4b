import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DBusError, Message, MessageType, NameFlag, RequestNameReply, Variant, type MessageBus } from '@jellybrick/dbus-next';
import { itemsFromRows } from '../bus/codec';
import { BusError, NO_OWNER } from '../bus/errors';
import { addMatch, nameOwner } from '../bus/freedesktop';
import { AGENT_NAME, ALLOW_INTERACTIVE_AUTHORIZATION, MANAGER, nameOwnerMatch, NOTIFICATIONS, ownerChange } from '../bus/names';
import { appendIgnore, DEFAULTS, readNotifyConfig, type NotifyConfig } from '../config/notify';
import { printable, printablePath } from '../shared/printable';
import { replaceFile } from '../shared/replace-file';
import { compose, concerning, itemKey, NORMAL, persistable, report, type Item } from './message';

export { AGENT_NAME };
/** NotificationClosed reasons: the user saw it (expired or dismissed) vs. we closed it. */
const SEEN = new Set([1, 2]);

export type Log = (level: number, message: string) => void;

export interface AgentOptions {
  /** The system bus (the daemon) and the user's session bus (the notification server). */
  system: MessageBus;
  session: MessageBus;
  home: string;
  configFile: string;
  log: Log;
  /** A burst is shown once it settled this long after its first change… */
  settleMs?: number;
  /** …and updated in place at most this often. */
  minIntervalMs?: number;
  env?: NodeJS.ProcessEnv;
  /** systemd-run, to start the Details viewer in a scope of its own (when running under systemd). */
  systemdRun?: string;
  /** Where what the user was told is kept across restarts of the agent (this boot only). */
  toldFile?: string;
}

/**
 * impermanence-notify: follows the drift its user may see (Subscribe on the daemon; DriftChanged
 * addressed to it alone) and keeps one notification up to date with what the user has not been
 * told yet. A notification the user dismissed, or that expired, counts as told: those items are
 * not shown again until they are resolved and come back. Bursts are coalesced: the first
 * notification after `settleMs`, then updates in place (replaces_id) at most every
 * `minIntervalMs`. Signals are believed only from the current owners of the daemon's and the
 * notification server's names. Either may go away and come back: the agent subscribes again,
 * and shows again what was not seen.
 */
export class Agent {
  private config: NotifyConfig;
  private items: Item[] = [];
  private readonly told = new Set<string>();
  private daemonOwner = '';
  private serverOwner = '';
  private markup = false;
  /** Whether the server shows actions (its "actions" capability): only then is Persist offered. */
  private actions = false;
  private notificationId = 0;
  private posted = '';
  private shownKeys: string[] = [];
  private lastPost = 0;
  private timer: NodeJS.Timeout | undefined;
  private work: Promise<void> = Promise.resolve();
  /** A DriftChanged that came before we knew who the daemon is (its Subscribe reply tells). */
  private early: { sender: string; rows: unknown } | undefined;
  private reportDir: string | undefined;
  private retry: NodeJS.Timeout | undefined;
  private retryMs = 0;
  private resolveDone!: (code: number) => void;
  /** Resolves with the exit code when the agent stops (disabled, or a bus went away). */
  readonly done = new Promise<number>((r) => (this.resolveDone = r));

  /**
   * Log lines name paths anyone may have chosen: one line each, printable (a newline or an
   * escape sequence in a file name must not forge a journal line or drive a terminal).
   */
  private readonly log: Log;

  constructor(private readonly o: AgentOptions) {
    this.log = (level, message) => o.log(level, printablePath(message));
    try {
      this.config = readNotifyConfig(o.configFile, o.home);
    } catch (err) {
      this.log(3, `${(err as Error).message}; using the defaults until it is fixed`);
      this.config = { ...DEFAULTS };
    }
    for (const k of readTold(o.toldFile)) this.told.add(k);
  }

  /** Starts; false if the agent should not run (disabled, or another instance has the name). */
  async start(): Promise<boolean> {
    if (!this.config.enable) {
      this.log(6, `Disabled in ${this.o.configFile} (enable = false): not starting`);
      return false;
    }
    const reply = await this.o.session.requestName(AGENT_NAME, NameFlag.DO_NOT_QUEUE);
    if (reply !== RequestNameReply.PRIMARY_OWNER && reply !== RequestNameReply.ALREADY_OWNER) {
      this.log(6, `Another impermanence-notify already runs in this session (${AGENT_NAME} is taken)`);
      return false;
    }
    this.o.system.on('message', this.onSystem);
    this.o.session.on('message', this.onSession);
    for (const bus of [this.o.system, this.o.session]) (bus as unknown as NodeJS.EventEmitter).on('error', (err: Error) => this.stop(1, `bus error: ${err.message}`));
    await addMatch(this.o.system, nameOwnerMatch(MANAGER.destination));
    await addMatch(this.o.session, nameOwnerMatch(NOTIFICATIONS.destination));
    await addMatch(this.o.session, `type='signal',interface='${NOTIFICATIONS.interface}',path='${NOTIFICATIONS.path}'`);
    this.serverOwner = await nameOwner(this.o.session, NOTIFICATIONS.destination);
    if (this.serverOwner) await this.readCapabilities();
    await this.subscribe();
    watchFile(this.o.configFile, { interval: 1000 }, this.onConfigFile);
    return true;
  }

  stop(code = 0, why = ''): void {
    if (why) this.log(code ? 3 : 6, `Stopping: ${why}`);
    clearTimeout(this.timer);
    clearTimeout(this.retry);
    unwatchFile(this.o.configFile, this.onConfigFile);
    this.o.system.off('message', this.onSystem);
    this.o.session.off('message', this.onSession);
    this.resolveDone(code);
  }

  /** Subscribes to the daemon (starting it by D-Bus activation if need be). */
  private async subscribe(): Promise<void> {
    let reply: Message | null;
    try {
      reply = await this.o.system.call(new Message({ ...MANAGER, member: 'Subscribe', signature: 'a{sv}', body: [{}] }));
    } catch (err) {
      const name = err instanceof DBusError ? err.type : (err as Error).message;
      this.daemonOwner = '';
      if (NO_OWNER.has(name)) {
        this.log(4, `impermanenced is not running (${name}); waiting for it to start`);
      } else {
        // Refused or failed while it runs: try again later, less and less often.
        this.retryMs = Math.min(Math.max(this.retryMs * 2, 5000), 300_000);
        this.log(4, `Cannot subscribe to impermanenced (${name}); trying again in ${this.retryMs / 1000} s`);
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.queue(() => this.subscribe()), this.retryMs);
      }
      return;
    }
    this.retryMs = 0;
    this.daemonOwner = reply?.sender ?? '';
    const early = this.early;
    this.early = undefined;
    this.setItems(early?.sender === this.daemonOwner ? early.rows : reply?.body[0]);
    this.log(6, `Following drift from impermanenced (${this.daemonOwner}): ${this.items.length} item(s) concern this user`);
  }

  private readonly onSystem = (msg: Message): void => {
    if (msg.type !== MessageType.SIGNAL) return;
    const owner = ownerChange(msg, MANAGER.destination);
    if (owner !== undefined) {
      if (!owner) {
        this.daemonOwner = '';
        this.log(4, 'impermanenced left the bus; waiting for it to come back');
      } else if (owner !== this.daemonOwner) {
        this.queue(() => this.subscribe());
      }
      return;
    }
    if (msg.interface !== MANAGER.interface || msg.member !== 'DriftChanged') return;
    // Anyone may send a signal to anyone: only the daemon's own are believed.
    if (!this.daemonOwner) this.early = { sender: msg.sender, rows: msg.body[0] };
    else if (msg.sender === this.daemonOwner) this.setItems(msg.body[0]);
  };

  private readonly onSession = (msg: Message): void => {
    if (msg.type !== MessageType.SIGNAL) return;
    const server = ownerChange(msg, NOTIFICATIONS.destination);
    if (server !== undefined) {
      // A new server (or none) knows nothing of our notification: what was not seen is shown again.
      this.serverOwner = server;
      this.forgetNotification();
      if (this.serverOwner) this.queue(() => this.readCapabilities().then(() => this.render()));
      return;
    }
    if (msg.interface !== NOTIFICATIONS.interface || msg.sender !== this.serverOwner) return;
    const [id, arg] = msg.body as [number, unknown];
    if (!id || id !== this.notificationId) return;
    // What the notification showed, taken now: a NotificationClosed may come in the same read.
    if (msg.member === 'ActionInvoked') {
      const shown = new Set(this.shownKeys);
      this.queue(() => this.onAction(String(arg), shown));
    }
    if (msg.member === 'NotificationClosed') {
      if (SEEN.has(Number(arg))) {
        for (const k of this.shownKeys) this.told.add(k);
        this.saveTold();
      }
      this.forgetNotification();
      this.schedule();
    }
  };

  private setItems(rows: unknown): void {
    try {
      this.items = itemsFromRows(rows);
    } catch (err) {
      this.log(4, `Ignoring drift from impermanenced: ${(err as Error).message}`);
      return;
    }
    const now = new Set(this.items.map(itemKey));
    const before = this.told.size;
    for (const k of [...this.told]) if (!now.has(k)) this.told.delete(k); // resolved: forget
    if (this.told.size !== before) this.saveTold();
    this.schedule();
  }

  /** What concerns this user, after its scope and ignore list. */
  private relevant(): Item[] {
    return concerning(this.items, this.config, this.o.home);
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = Math.max(this.o.settleMs ?? 400, this.lastPost + (this.o.minIntervalMs ?? 1500) - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.queue(() => this.render());
    }, wait);
  }

  /** Runs bus work one piece at a time, so two renders never race to post two notifications. */
  private queue(fn: () => Promise<void>): void {
    this.work = this.work.then(fn).catch((err: Error) => this.log(4, err.message));
  }

  private async render(): Promise<void> {
    const pending = this.relevant().filter((i) => !this.told.has(itemKey(i)));
    if (!pending.length) {
      await this.closeNotification();
      return;
    }
    const n = compose(pending, { home: this.o.home, markup: this.markup, persist: this.actions });
    const signature = JSON.stringify(n);
    if (signature === this.posted && this.notificationId) return;
    const hints = { urgency: new Variant('y', n.urgency), 'desktop-entry': new Variant('s', 'impermanence-notify') };
    // Data about to be lost stays until the user dismisses it (0: never expires); the rest
    // expires as the server likes (-1). An expired one counts as seen.
    const timeout = n.urgency >= NORMAL ? 0 : -1;
    const reply = await this.notifications('Notify', 'susssasa{sv}i', ['impermanence', this.notificationId, n.icon, n.summary, n.body, n.actions, hints, timeout]);
    if (!reply) return;
    this.notificationId = Number(reply.body[0]);
    this.serverOwner ||= reply.sender ?? '';
    this.posted = signature;
    this.shownKeys = pending.map(itemKey);
    this.lastPost = Date.now();
  }

  /** Closes our notification, if one is up. */
  private async closeNotification(): Promise<void> {
    if (this.notificationId) await this.notifications('CloseNotification', 'u', [this.notificationId]).catch(() => undefined);
    this.forgetNotification();
  }

  /** No notification of ours is up (closed, or its server is gone). */
  private forgetNotification(): void {
    this.notificationId = 0;
    this.posted = '';
    this.shownKeys = [];
  }

  private async onAction(action: string, shown: Set<string>): Promise<void> {
    const items = this.relevant().filter((i) => shown.has(itemKey(i)));
    if (action === 'ignore') {
      const paths = [...new Set(items.map((i) => i.path))];
      try {
        appendIgnore(this.o.configFile, paths, this.o.home);
      } catch (err) {
        this.log(3, `Cannot ignore ${paths.join(', ')}: ${(err as Error).message}`);
        return;
      }
      this.log(6, `Ignoring ${paths.join(', ')} from now on (${this.o.configFile})`);
      this.reloadConfig();
    } else if (action === 'persist') {
      // Not in the queue: polkit may wait for the user's password while drift goes on.
      const item = persistable(items);
      if (item) void this.persist(item).catch((err: Error) => this.log(4, err.message));
    } else if (action === 'default') {
      this.reportDir ??= this.o.env?.XDG_RUNTIME_DIR?.startsWith('/') ? this.o.env.XDG_RUNTIME_DIR : mkdtempSync(join(tmpdir(), 'impermanence-'));
      const file = join(this.reportDir, 'impermanence-drift.txt');
      try {
        replaceFile(file, report(this.relevant(), this.o.home), { mode: 0o600 });
      } catch (err) {
        this.log(4, `Cannot show the drift report: ${(err as Error).message}`);
        return;
      }
      // Under systemd, the viewer gets a scope of its own: stopping this service must not take
      // an editor with it, nor should it inherit this service's restrictions.
      const argv = [...this.config.details, file];
      const viaSystemd = Boolean(this.o.env?.INVOCATION_ID) && this.o.systemdRun !== undefined;
      const [cmd, ...args] = viaSystemd ? [this.o.systemdRun!, '--user', '--scope', '--collect', '--quiet', '--', ...argv] : argv;
      const child = spawn(cmd!, args, { stdio: 'ignore', detached: true });
      child.on('error', (err) => this.log(4, `Cannot open the drift report with ${cmd}: ${err.message} (it is in ${file})`));
      child.unref();
    }
  }

  /**
   * Persist, from the notification: asks impermanenced (Persist), letting polkit ask the user
   * for a password, and says how it went in a notification of its own.
   */
  private async persist(item: Item): Promise<void> {
    const shown = printablePath(item.path.startsWith(this.o.home + '/') ? `~${item.path.slice(this.o.home.length)}` : item.path);
    let summary: string;
    let body: string;
    try {
      const reply = await this.o.system.call(
        new Message({ ...MANAGER, member: 'Persist', signature: 'ssa{sv}', body: [item.path, '', {}], flags: ALLOW_INTERACTIVE_AUTHORIZATION }),
      );
      if (reply?.type === MessageType.ERROR) throw new BusError(reply.errorName, String(reply.body[0] ?? reply.errorName));
      summary = `${shown} is persisted`;
      body = ((reply?.body[0] ?? []) as string[]).join('\n');
      this.log(5, `Persisted ${item.path}`);
    } catch (err) {
      const name = err instanceof DBusError ? err.type : err instanceof BusError ? err.errorName : '';
      const text = err instanceof DBusError ? err.text : (err as Error).message;
      summary = `Could not persist ${shown}`;
      body = text || name;
      this.log(4, `Cannot persist ${item.path}: ${text || name}`);
    }
    const esc = (t: string) => (this.markup ? t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;') : t);
    const hints = { urgency: new Variant('y', NORMAL), 'desktop-entry': new Variant('s', 'impermanence-notify') };
    await this.notifications('Notify', 'susssasa{sv}i', ['impermanence', 0, 'dialog-information', summary, esc(printable(body)), [], hints, -1]);
  }

  private saveTold(): void {
    if (!this.o.toldFile) return;
    try {
      replaceFile(this.o.toldFile, JSON.stringify({ boot: BOOT_ID, told: [...this.told] }), { mode: 0o600 });
    } catch (err) {
      this.log(4, `Cannot remember what was shown: ${(err as Error).message}`);
    }
  }

  private readonly onConfigFile = (): void => this.reloadConfig();

  private reloadConfig(): void {
    try {
      this.config = readNotifyConfig(this.o.configFile, this.o.home);
    } catch (err) {
      this.log(4, `${(err as Error).message}; keeping the settings in effect`);
      return;
    }
    if (!this.config.enable) {
      this.queue(async () => {
        await this.closeNotification();
        this.stop(0, `disabled in ${this.o.configFile}`);
      });
      return;
    }
    this.schedule();
  }

  private async readCapabilities(): Promise<void> {
    const reply = await this.notifications('GetCapabilities', '', []);
    const caps = (reply?.body[0] ?? []) as string[];
    this.markup = caps.includes('body-markup');
    this.actions = caps.includes('actions');
  }

  /** A call to the notification server; null (logged) if there is none right now. */
  private async notifications(member: string, signature: string, body: unknown[]): Promise<Message | null> {
    try {
      return await this.o.session.call(new Message({ ...NOTIFICATIONS, member, signature, body }));
    } catch (err) {
      const name = err instanceof DBusError ? err.type : (err as Error).message;
      if (NO_OWNER.has(name)) {
        this.serverOwner = '';
        this.log(4, 'No notification server on the session bus; will show drift when one appears');
        return null;
      }
      throw new Error(`${NOTIFICATIONS.interface}.${member} failed: ${name}`);
    }
  }
}

/** This boot: what was told in another one does not count. */
const BOOT_ID = (() => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
})();

/** What was told in this boot, by an earlier run of the agent (nothing if another boot, or none). */
function readTold(file: string | undefined): string[] {
  if (!file) return [];
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as { boot?: unknown; told?: unknown };
    if (data.boot !== BOOT_ID || !Array.isArray(data.told)) return [];
    return data.told.filter((k): k is string => typeof k === 'string');
  } catch {
    return [];
  }
}
