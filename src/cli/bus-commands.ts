import { resolve } from 'node:path';
import { Variant, type Message } from '@jellybrick/dbus-next';
import { call, connect, plain, subscribe } from '../bus/client';
import { itemsFromRows } from '../bus/codec';
import { BusError, DBUS_ERRORS, ERRORS, Unreachable } from '../bus/errors';
import { MANAGER_IFACE, PROPERTIES_IFACE } from '../bus/names';
import { printable, printablePath } from '../shared/printable';
import { parseSince, printReport } from './diff';
import { printEvent, printList, printReload, printStatus, type OutputOptions, type Status } from './output';

interface BusOptions extends OutputOptions { interactive: boolean; bus: string | undefined; since?: string; rescan?: boolean }
type Print = (s: string) => void;

/** status, list, reload, monitor and diff: impermanencectl's calls to impermanenced (loaded on first use by ./main). */
export async function onBus(command: string, opts: BusOptions, out: Print, err: Print): Promise<number> {
  let bus;
  try {
    bus = await connect(opts.bus);
    switch (command) {
      case 'status':
        return await status(bus, opts, out);
      case 'list':
        return await list(bus, opts, out);
      case 'reload': {
        await call(bus, { iface: MANAGER_IFACE, member: 'Reload', signature: 'a{sv}', body: [{}], interactive: opts.interactive });
        const p = await managerProperties(bus);
        printReload(p, opts, out, err);
        return p.State === 'invalid-config' ? 1 : 0;
      }
      case 'monitor':
        return await monitor(bus, opts, out);
      case 'diff': {
        // Long scans: show the daemon's progress on a terminal.
        const tty = process.stderr.isTTY;
        if (tty) await subscribe(bus, (m) => m.member === 'ScanProgress' && err(`\rscanned ${Number(m.body[0]).toLocaleString('en')} files…`));
        const options: Record<string, Variant> = {};
        if (opts.since !== undefined) options.since = new Variant('t', BigInt(Math.floor(parseSince(opts.since))));
        if (opts.rescan) options.rescan = new Variant('b', true);
        const [rows] = await call(bus, { iface: MANAGER_IFACE, member: 'Scan', signature: 'a{sv}', body: [options] });
        const [props] = await call(bus, { iface: PROPERTIES_IFACE, member: 'Get', signature: 'ss', body: [MANAGER_IFACE, 'LastScanSinceUSec'] });
        if (tty) err('\r\x1b[K');
        const items = itemsFromRows(rows);
        printReport({ items, scanned: 0, since: Number(plain(props)) / 1e6 }, opts, out);
        return items.length ? 3 : 0;
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
  } catch (e) {
    return failed(e, command, err, (why) => `impermanencectl: ${why}`);
  } finally {
    if (command !== 'monitor') bus?.disconnect();
  }
}

/**
 * persist and unpersist by a user who is not root: asked of impermanenced (Persist/Unpersist),
 * which asks polkit (a password, unless --no-ask-password) and has systemd run the same command
 * as root. Root runs it directly (see ../activate/persist).
 */
export async function persistOnBus(
  command: 'persist' | 'unpersist',
  path: string,
  opts: BusOptions & { storage?: string; user?: string },
  out: Print,
  err: Print,
): Promise<number> {
  let bus;
  try {
    bus = await connect(opts.bus);
    const absolute = resolve(process.cwd(), path);
    const options: Record<string, Variant> = {};
    if (opts.user !== undefined) options.user = new Variant('s', opts.user);
    const [lines] =
      command === 'persist'
        ? await call(bus, { iface: MANAGER_IFACE, member: 'Persist', signature: 'ssa{sv}', body: [absolute, opts.storage ?? '', options], interactive: opts.interactive })
        : await call(bus, { iface: MANAGER_IFACE, member: 'Unpersist', signature: 'sa{sv}', body: [absolute, options], interactive: opts.interactive });
    for (const line of (lines ?? []) as string[]) out(`${printable(line)}\n`);
    return 0;
  } catch (e) {
    return failed(e, command, err, (why) => `impermanencectl ${command}: ${why}; or run it as root`);
  } finally {
    bus?.disconnect();
  }
}

/**
 * A call that failed, as one line and an exit code: 4 when impermanenced is not there (the line
 * `unreachable` makes of why), 1 for a D-Bus error (with what to do about a refusal). Anything
 * else is a bug: thrown on.
 */
function failed(e: unknown, command: string, err: Print, unreachable: (why: string) => string): number {
  if (e instanceof Unreachable) {
    err(`${unreachable(e.message)}\n`);
    return 4;
  }
  if (e instanceof BusError) {
    err(`impermanencectl ${command}: ${printable(e.message)}${hint(e.errorName)}\n`);
    return 1;
  }
  throw e;
}

function hint(errorName: string): string {
  if (errorName === ERRORS.NotAuthorizedCanObtain) return ' (run it as root, or without --no-ask-password with a polkit agent)';
  if (errorName === ERRORS.NotAuthorized || errorName === DBUS_ERRORS.AccessDenied) return ' (run it as root)';
  return '';
}

async function managerProperties(bus: Awaited<ReturnType<typeof connect>>): Promise<Status> {
  const [props] = await call(bus, { iface: PROPERTIES_IFACE, member: 'GetAll', signature: 's', body: [MANAGER_IFACE] });
  return plain(props) as Status;
}

async function status(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  const p = await managerProperties(bus);
  printStatus(p, opts, out);
  return p.State === 'ok' ? 0 : p.State === 'degraded' ? 3 : 1;
}

async function list(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  const [rows] = (await call(bus, { iface: MANAGER_IFACE, member: 'ListEntries', signature: 'a{sv}', body: [{}] })) as [
    Array<[string, string, string, string, string]>,
  ];
  printList(rows.map(([object, path, kind, storage, state]) => ({ path, kind, state, storage, object })), opts, out);
  return 0;
}

/** One line per signal (or one JSON object per line with --json), until SIGINT/SIGTERM. */
async function monitor(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  await subscribe(bus, (msg: Message) => printEvent({ path: msg.path, interface: msg.interface, member: msg.member, body: plain(msg.body) as unknown[] }, opts, out));
  if (opts.json === 'off' && !opts.quiet) out('Monitoring impermanenced (org.impermanence.Manager); interrupt to stop.\n');
  return new Promise<number>((resolve) => {
    const stop = () => {
      bus.disconnect();
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    (bus as unknown as NodeJS.EventEmitter).on('error', () => resolve(4));
  });
}

/** Entry paths or storage roots, for the shell completions (main.ts __complete). */
export async function listNames(what: 'entries' | 'storages', address: string | undefined): Promise<string[]> {
  const bus = await connect(address);
  try {
    if (what === 'storages') return (await managerProperties(bus)).StorageRoots;
    const [rows] = (await call(bus, { iface: MANAGER_IFACE, member: 'ListEntries', signature: 'a{sv}', body: [{}] })) as [Array<[string, string]>];
    return rows.map(([, path]) => path);
  } finally {
    bus.disconnect();
  }
}
