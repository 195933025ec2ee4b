import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readConfig } from '../config/read';
import { UserDb } from '../config/userdb';
import { bootTime } from '../drift/boot';
import { readMountPoints } from '../drift/mountinfo';
import type { DriftItem, DriftKind, DriftReport } from '../drift/report';
import { scanDrift } from '../drift/scan';
import { printable, printablePath } from '../shared/printable';
import { wrap } from './help';
import { emit, publicItems, type OutputOptions } from './output';

type Print = (s: string) => void;

const HEADINGS: Record<DriftKind, string> = {
  unmounted: 'Not in place (writes there are lost at reboot)',
  replaced: 'Replaced behind our back',
  ephemeral: 'Will be lost at reboot',
  shadowed: 'Hidden under a persisted mount (on the root only, lost at reboot)',
  attributes: 'Storage owner or mode differs from the config',
  orphan: 'In storage, declared by no entry',
};

/** A helper program: beside this one (dist/ in a checkout) or where the package puts it. */
export function besideMe(name: string): string | undefined {
  return [join(dirname(process.argv[1] ?? ''), name), join('/usr/lib/impermanence', name)].find((p) => existsSync(p));
}

/**
 * `--since`: "boot" (default: changed since this system booted), "all", or seconds since the
 * epoch no later than now (the walker, like the daemon, takes nothing past the clock).
 */
export function parseSince(text: string | undefined): number {
  if (text === undefined || text === 'boot') return bootTime();
  if (text === 'all') return 0;
  if (!/^\d+(\.\d+)?$/.test(text)) throw new Error(`--since takes "boot", "all" or seconds since the epoch, not ${JSON.stringify(text)}`);
  const since = Number(text);
  if (since > Date.now() / 1000) throw new Error(`--since ${text} is later than now: give seconds since the epoch, "boot" or "all"`);
  return since;
}

/** Scans here, without the daemon: against --root (an image, a mounted root) and --config. */
export async function diffOffline(dirs: string[], required: string[], root: string, since: number, err: Print): Promise<DriftReport> {
  const config = readConfig(dirs, root, required);
  const tty = process.stderr.isTTY;
  const report = await scanDrift({
    root,
    config,
    users: UserDb.read(root),
    mountPoints: readMountPoints(),
    since,
    configDirs: dirs,
    walker: besideMe('impermanence-walk'),
    onProgress: tty ? (n) => err(`\rscanned ${n.toLocaleString('en')} files…`) : undefined,
  });
  if (tty) err('\r\x1b[K');
  return report;
}

/**
 * The report as text (names escaped) or, with --json, as data (names as they are): the diff
 * document, `since` (seconds since the epoch, 0 for everything) and `items`. --no-legend drops the
 * closing count; --quiet prints nothing (the exit code tells).
 */
export function printReport(report: DriftReport, o: OutputOptions, out: Print): void {
  if (o.json !== 'off') return emit({ since: report.since, items: publicItems(report.items) }, o.json, out);
  if (o.quiet) return;
  if (report.items.length === 0) {
    out(`No drift: everything declared is in place and nothing else was written${report.since ? ' since ' + new Date(report.since * 1000).toISOString() : ''}.\n`);
    return;
  }
  let kind: DriftKind | undefined;
  // Names come from whoever wrote the files: escaped, so that none can forge a line or a heading.
  const paths = report.items.map((i) => printablePath(i.path));
  // Columns per heading, within 100 characters: a long detail wraps under itself, and a
  // suggestion too long for one line is shown as the TOML it is.
  const widths = new Map<DriftKind, number>();
  report.items.forEach((i, n) => widths.set(i.kind, Math.min(40, Math.max(widths.get(i.kind) ?? 0, paths[n]!.length))));
  report.items.forEach((item, n) => {
    const width = widths.get(item.kind)!;
    if (item.kind !== kind) {
      kind = item.kind;
      const since = kind === 'ephemeral' && report.since ? ` (written since ${new Date(report.since * 1000).toISOString()})` : '';
      out(`${kind === report.items[0]!.kind ? '' : '\n'}${HEADINGS[kind]}${since}:\n`);
    }
    const indent = ''.padEnd(width + 4);
    out(`  ${paths[n]!.padEnd(width)}  ${wrap(printablePath(item.detail), Math.max(40, 100 - width - 4), width + 4)}\n`);
    if (item.kind !== 'ephemeral') return;
    const lines = printable(item.suggestion).split('\n');
    const oneLine = `${indent}to keep it: ${lines.join(' ')}`;
    if (oneLine.length <= 100 || lines.length === 1) out(`${oneLine}\n`);
    else out(`${indent}to keep it:\n${lines.map((l) => `${indent}  ${l}\n`).join('')}`);
  });
  const lost = report.items.filter((i) => i.kind === 'ephemeral');
  if (o.legend !== false) out(`\n${report.items.length} item(s); ${lost.reduce((n, i) => n + i.files, 0)} file(s) will be lost at reboot.\n`);
}

export function itemsFromBus(rows: Array<[string, string, string, number, bigint | number, string]>): DriftItem[] {
  return rows.map(([kind, path, detail, files, bytes, suggestion]) => ({ kind: kind as DriftKind, path, detail, files, bytes: Number(bytes), suggestion }));
}
