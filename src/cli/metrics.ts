import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { InvalidConfig } from '../config/errors';
import { findConfigFiles } from '../config/load';
import { readConfig } from '../config/read';
import { collect, planUnits } from '../generator/plan';
import { sourceStatter, statOnRoot } from '../generator/write';
import { renderMetrics, type MetricsSnapshot } from '../metrics/prometheus';
import { printablePath } from '../shared/printable';
import { call, connect, plain, Unreachable, CallFailed } from './bus';

declare const VERSION: string;
type Print = (s: string) => void;

export const METRICS_USAGE = 'usage: impermanencectl metrics [--out FILE.prom|-] [--no-scan] [--config DIR]... [--root DIR] [--bus ADDRESS]\n';

export interface MetricsOptions {
  out: string | undefined;
  scan: boolean;
  bus: string | undefined;
  dirs: string[];
  required: string[];
  root: string;
}

/**
 * `impermanencectl metrics`: the daemon's state and drift, and the validity of the config on
 * disk, in Prometheus's text format, for node_exporter's textfile collector (run by
 * impermanence-metrics.timer). Asks impermanenced for a full scan first (the daemon joins one
 * already running) unless --no-scan, then for its entries and drift. When the daemon cannot be
 * reached the file still says so (impermanence_up 0) with the config's validity. The file is
 * replaced whole (written beside it, flushed, renamed), so the collector never reads half.
 */
export async function metricsCommand(opts: MetricsOptions, out: Print, err: Print): Promise<number> {
  const snapshot: MetricsSnapshot = { version: typeof VERSION === 'string' ? VERSION : 'dev', config: checkConfig(opts) };
  let bus;
  try {
    bus = await connect(opts.bus);
    if (opts.scan) {
      const started = Date.now();
      try {
        await call(bus, { iface: 'org.impermanence.Manager', member: 'Scan', signature: 'a{sv}', body: [{}] });
        const finished = Date.now();
        snapshot.scan = { finished: finished / 1000, duration: (finished - started) / 1000 };
      } catch (e) {
        if (!(e instanceof CallFailed)) throw e;
        // Cancelled by someone, say: the daemon is up; its last drift is still worth writing.
        err(`impermanencectl metrics: the scan failed (${e.message}); writing the drift the daemon has\n`);
      }
    }
    const [props] = await call(bus, { iface: 'org.freedesktop.DBus.Properties', member: 'GetAll', signature: 's', body: ['org.impermanence.Manager'] });
    const p = plain(props) as { Version: string; State: string; StorageRoots: string[]; LastScanSinceUSec: number };
    const [rows] = (await call(bus, { iface: 'org.impermanence.Manager', member: 'ListEntries', signature: 'a{sv}', body: [{}] })) as [Array<[string, string, string, string, string]>];
    const [drift] = (await call(bus, { iface: 'org.impermanence.Manager', member: 'GetDrift', signature: 'a{sv}', body: [{}] })) as [Array<[string, string, string, number, bigint, string]>];
    snapshot.daemon = {
      version: p.Version,
      state: p.State,
      storageRoots: p.StorageRoots,
      entries: rows.map(([, path, kind, storage, state]) => ({ path, kind, storage, state })),
      drift: drift.map(([kind, , , files, bytes]) => ({ kind, files: Number(files), bytes: Number(bytes) })),
      driftSince: Number(p.LastScanSinceUSec) / 1e6,
    };
  } catch (e) {
    if (!(e instanceof Unreachable) && !(e instanceof CallFailed)) throw e;
    err(`impermanencectl metrics: ${e.message}; writing impermanence_up 0\n`);
    delete snapshot.scan;
  } finally {
    bus?.disconnect();
  }
  const text = renderMetrics(snapshot);
  if (opts.out === undefined || opts.out === '-') {
    out(text);
    return 0;
  }
  try {
    writeWhole(opts.out, text);
  } catch (e) {
    err(`impermanencectl metrics: cannot write ${printablePath(opts.out)}: ${(e as Error).message}\n`);
    return 1;
  }
  return 0;
}

/** The config on disk, judged as `check` judges it (entries the generator would refuse count as problems). */
function checkConfig(opts: MetricsOptions): MetricsSnapshot['config'] {
  try {
    const config = readConfig(opts.dirs, opts.root, opts.required);
    const statSource = sourceStatter();
    const refused = planUnits(
      config,
      {
        outputDir: '/run/systemd/generator',
        statSource: (source, storage) => statSource(join(opts.root, source), join(opts.root, storage)),
        statRoot: (path) => statOnRoot(join(opts.root, path)),
      },
      collect(),
    );
    return { valid: refused.length === 0, problems: refused.length, files: config.files.length };
  } catch (e) {
    if (!(e instanceof InvalidConfig)) throw e;
    let files = 0;
    try {
      files = findConfigFiles(opts.dirs, opts.required).length;
    } catch {
      // a required folder that is missing: one of the problems already
    }
    return { valid: false, problems: e.problems.length, files };
  }
}

/**
 * Replaces `file` whole: a temporary file beside it (a name the collector skips: it reads only
 * *.prom), flushed, renamed over it. Never through a symlink: the temporary file is created
 * exclusively, and the rename replaces a symlink at `file` rather than writing where it points.
 * Mode 0644: the exporter runs as another user.
 */
function writeWhole(file: string, text: string): void {
  const temp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, 'wx', 0o644);
  try {
    fchmodSync(fd, 0o644); // past the umask
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(temp);
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(temp, file);
  } catch (e) {
    unlinkSync(temp);
    throw e;
  }
}
