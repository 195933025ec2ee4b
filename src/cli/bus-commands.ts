import { resolve } from 'node:path';
import { Variant, type Message } from '@jellybrick/dbus-next';
import { call, connect, plain, subscribe } from '../bus/client';
import { itemsFromRows } from '../bus/codec';
import { BusError, DBUS_ERRORS, ERRORS, Unreachable } from '../bus/errors';
import { MANAGER_IFACE, PROPERTIES_IFACE } from '../bus/names';
import { printable, printablePath } from '../shared/printable';
import { parseSince, printReport } from './diff';

interface BusOptions { json: boolean; interactive: boolean; bus: string | undefined; since?: string }
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
      case 'reload':
        await call(bus, { iface: MANAGER_IFACE, member: 'Reload', signature: 'a{sv}', body: [{}], interactive: opts.interactive });
        if (opts.json) out('{"reloaded":true}\n');
        return 0;
      case 'monitor':
        return await monitor(bus, opts, out);
      case 'diff': {
        // Long scans: show the daemon's progress on a terminal.
        const tty = process.stderr.isTTY;
        if (tty) await subscribe(bus, (m) => m.member === 'ScanProgress' && err(`\rscanned ${Number(m.body[0]).toLocaleString('en')} files…`));
        const options: Record<string, Variant> = {};
        if (opts.since !== undefined) options.since = new Variant('t', BigInt(Math.floor(parseSince(opts.since))));
        const [rows] = await call(bus, { iface: MANAGER_IFACE, member: 'Scan', signature: 'a{sv}', body: [options] });
        const [props] = await call(bus, { iface: PROPERTIES_IFACE, member: 'Get', signature: 'ss', body: [MANAGER_IFACE, 'LastScanSinceUSec'] });
        if (tty) err('\r\x1b[K');
        const items = itemsFromRows(rows);
        printReport({ items, scanned: 0, since: Number(plain(props)) / 1e6 }, opts.json, out);
        return items.length ? 3 : 0;
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
  } catch (e) {
    if (e instanceof Unreachable) {
      err(`impermanencectl: ${e.message}\n`);
      return 4;
    }
    if (e instanceof BusError) {
      err(`impermanencectl ${command}: ${printable(e.message)}${hint(e.errorName)}\n`);
      return 1;
    }
    throw e;
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
    if (e instanceof Unreachable) {
      err(`impermanencectl ${command}: ${e.message}; or run it as root\n`);
      return 4;
    }
    if (e instanceof BusError) {
      err(`impermanencectl ${command}: ${printable(e.message)}${hint(e.errorName)}\n`);
      return 1;
    }
    throw e;
  } finally {
    bus?.disconnect();
  }
}

function hint(errorName: string): string {
  if (errorName === ERRORS.NotAuthorizedCanObtain) return ' (run it as root, or without --no-ask-password with a polkit agent)';
  if (errorName === ERRORS.NotAuthorized || errorName === DBUS_ERRORS.AccessDenied) return ' (run it as root)';
  return '';
}

async function status(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  const [props] = await call(bus, { iface: PROPERTIES_IFACE, member: 'GetAll', signature: 's', body: [MANAGER_IFACE] });
  const p = plain(props) as {
    Version: string; State: string; ConfigFiles: string[]; ConfigProblems: string[]; StorageRoots: string[]; EntryCount: number; ActiveCount: number;
  };
  if (opts.json) out(JSON.stringify(p, null, 2) + '\n');
  else {
    const shown = (paths: string[]) => paths.map(printablePath);
    out(`State: ${printablePath(p.State)}\n`);
    out(`Version: ${printablePath(p.Version)}\n`);
    out(`Entries: ${p.EntryCount} (${p.ActiveCount} in place)\n`);
    out(`Storage: ${shown(p.StorageRoots).join(', ') || '-'}\n`);
    out(`Config: ${p.ConfigFiles.length ? shown(p.ConfigFiles).join('\n        ') : '-'}\n`);
    for (const problem of shown(p.ConfigProblems)) out(`Problem: ${problem}\n`);
  }
  return p.State === 'ok' ? 0 : p.State === 'degraded' ? 3 : 1;
}

async function list(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  const [rows] = (await call(bus, { iface: MANAGER_IFACE, member: 'ListEntries', signature: 'a{sv}', body: [{}] })) as [
    Array<[string, string, string, string, string]>,
  ];
  const entries = rows.map(([object, path, kind, storage, state]) => ({ path, kind, state, storage, object }));
  if (opts.json) {
    out(JSON.stringify(entries, null, 2) + '\n');
    return 0;
  }
  const cells = entries.map((e) => [e.path, e.kind, e.state, e.storage].map(printablePath));
  const widths = [4, 4, 5].map((w, i) => Math.max(w, ...cells.map((c) => c[i]!.length)));
  const row = (cols: string[]) => cols.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd() + '\n';
  out(row(['PATH', 'KIND', 'STATE', 'STORAGE']));
  for (const c of cells) out(row(c));
  out(`\n${entries.length} entries listed.\n`);
  return 0;
}

/** One line per signal (or one JSON object per line with --json), until SIGINT/SIGTERM. */
async function monitor(bus: Awaited<ReturnType<typeof connect>>, opts: BusOptions, out: Print): Promise<number> {
  await subscribe(bus, (msg: Message) => {
    const event = { time: new Date().toISOString(), path: msg.path, interface: msg.interface, member: msg.member, body: plain(msg.body) };
    // JSON.stringify leaves C1 controls and bidi overrides in names as they are: text is escaped.
    out(opts.json ? JSON.stringify(event) + '\n' : printablePath(`${event.time} ${msg.path} ${msg.interface}.${msg.member} ${JSON.stringify(event.body)}`) + '\n');
  });
  if (!opts.json) out('Monitoring org.impermanence.Manager; interrupt to stop.\n');
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
