import type { LoadedFile } from './load';
import { parseMode } from './mode';
import { normalizePath } from './paths';
import type { Origin } from './resolve';
import type { WipeDecl } from './schema';

/** How many previous pristines `impermanencectl wipe update` keeps (`<from>.<UTC time>`), the newest first. */
export const KEEP_PREVIOUS = 3;

/** The `[wipe]` table, checked and with its defaults applied. */
export type WipeSettings =
  | {
      method: 'btrfs';
      /** LABEL=…, PARTLABEL=…, UUID=…, PARTUUID=… or an absolute /dev path. */
      device: string;
      /** The root subvolume, as a path from the filesystem's top level (e.g. "@root"). */
      subvolume: string;
      /** "empty", or the read-only pristine snapshot the fresh root is made from. */
      from: string;
      /** The folder, from the top level, where old roots are kept. */
      oldRoots: string;
      /** Old roots older than `days` days, or beyond the `count` newest, are deleted (0: no limit). */
      keep: { days: number; count: number };
      /** Seconds to wait for the device. */
      timeout: number;
      origin: Origin;
    }
  | { method: 'zfs'; dataset: string; snapshot: string; origin: Origin }
  | { method: 'tmpfs'; size: string; mode: number; origin: Origin };

const DEVICE = /^(?:(?:LABEL|PARTLABEL|UUID|PARTUUID)=[^\s'"\\$`]+|\/dev\/[^\s'"\\$`]+)$/;
/** A subvolume path from the top level: plain names only, since the initrd shell script uses it. */
const SUBVOLUME = /^[A-Za-z0-9@._+-]+(?:\/[A-Za-z0-9@._+-]+)*$/;
const DATASET = /^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/;

const BTRFS_ONLY = ['device', 'subvolume', 'from', 'oldRoots', 'keep', 'timeout'] as const;
const ZFS_ONLY = ['dataset', 'snapshot'] as const;
const TMPFS_ONLY = ['size', 'mode'] as const;

/**
 * Checks the `[wipe]` tables of every loaded file: at most one file may declare it (the initrd
 * does one wipe). Problems go to `fail` with the file and the option's key path.
 */
export function resolveWipe(loaded: readonly LoadedFile[], fail: (origin: Origin, problem: string) => void): WipeSettings | undefined {
  const withWipe = loaded.filter((l) => l.config.wipe);
  const first = withWipe[0];
  if (!first) return undefined;
  if (withWipe.length > 1) {
    for (const l of withWipe.slice(1)) fail({ file: l.file, entry: 'wipe' }, `[wipe] is already declared in ${first.file}; declare it in one file`);
    return undefined;
  }
  const { file, config } = first;
  const decl = config.wipe as WipeDecl;
  const origin = { file, entry: 'wipe' };
  let ok = true;
  const bad = (key: string, problem: string) => {
    ok = false;
    fail({ file, entry: `wipe.${key}` }, problem);
  };
  const others = { btrfs: [...ZFS_ONLY, ...TMPFS_ONLY], zfs: [...BTRFS_ONLY, ...TMPFS_ONLY], tmpfs: [...BTRFS_ONLY, ...ZFS_ONLY] }[decl.method];
  for (const key of others) if (decl[key] !== undefined) bad(key, `is not an option of method = "${decl.method}"`);

  if (decl.method === 'btrfs') {
    const need = (key: 'device' | 'subvolume', value: string | undefined) => {
      if (value === undefined) bad(key, 'is required for method = "btrfs"');
      return value ?? '';
    };
    const device = need('device', decl.device);
    if (decl.device !== undefined && !DEVICE.test(device)) bad('device', `${JSON.stringify(device)}: expected LABEL=…, PARTLABEL=…, UUID=…, PARTUUID=… or /dev/…, without spaces or quotes`);
    const subvolume = subvolumePath('subvolume', need('subvolume', decl.subvolume), bad);
    const from = decl.from === undefined || decl.from === 'empty' ? 'empty' : subvolumePath('from', decl.from, bad);
    const oldRoots = subvolumePath('oldRoots', decl.oldRoots ?? 'old_roots', bad);
    for (const [key, other] of [['from', from], ['oldRoots', oldRoots]] as const) {
      if (!subvolume || !other || other === 'empty') continue;
      if (other === subvolume || other.startsWith(`${subvolume}/`)) bad(key, `${JSON.stringify(other)} is inside the root subvolume ${JSON.stringify(subvolume)}, which is wiped`);
      else if (subvolume.startsWith(`${other}/`)) bad(key, `the root subvolume ${JSON.stringify(subvolume)} is inside ${JSON.stringify(other)}`);
    }
    const count = (key: string, value: number | undefined, fallback: number) => {
      if (value === undefined) return fallback;
      if (!Number.isInteger(value) || value < 0) bad(key, `${value}: expected a whole number ≥ 0 (0: no limit)`);
      return value;
    };
    const keep = { days: count('keep.days', decl.keep?.days, 30), count: count('keep.count', decl.keep?.count, 0) };
    const timeout = count('timeout', decl.timeout, 30);
    if (decl.timeout !== undefined && timeout === 0) bad('timeout', 'must be at least 1 second');
    return ok ? { method: 'btrfs', device, subvolume: subvolume!, from: from!, oldRoots: oldRoots!, keep, timeout, origin } : undefined;
  }
  if (decl.method === 'zfs') {
    if (decl.dataset === undefined) bad('dataset', 'is required for method = "zfs"');
    else if (!DATASET.test(decl.dataset) || decl.dataset.includes('@')) bad('dataset', `${JSON.stringify(decl.dataset)}: expected a dataset name such as "rpool/local/root"`);
    const snapshot = decl.snapshot ?? 'blank';
    if (!/^[A-Za-z0-9_.:-]+$/.test(snapshot)) bad('snapshot', `${JSON.stringify(snapshot)}: expected a snapshot name such as "blank" (without the dataset and @)`);
    return ok ? { method: 'zfs', dataset: decl.dataset!, snapshot, origin } : undefined;
  }
  const size = decl.size ?? '25%';
  if (!/^\d+(?:[kmgKMG%])?$/.test(size)) bad('size', `${JSON.stringify(size)}: expected a size such as "2G", "512M" or "50%"`);
  let mode = 0o755;
  if (decl.mode !== undefined) {
    try {
      mode = parseMode(decl.mode);
    } catch (err) {
      bad('mode', (err as Error).message);
    }
  }
  return ok ? { method: 'tmpfs', size, mode, origin } : undefined;
}

function subvolumePath(key: string, raw: string, bad: (key: string, problem: string) => void): string | undefined {
  if (raw === '') return undefined;
  const value = raw.replace(/^\/+|\/+$/g, '');
  if (!SUBVOLUME.test(value) || value.split('/').some((part) => part === '.' || part === '..')) {
    bad(key, `${JSON.stringify(raw)}: expected a subvolume path from the top level of the filesystem, such as "@root" (letters, digits, @ . _ + - and /)`);
    return undefined;
  }
  return value;
}

/** Quotes a value for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The file baked into the initrd (/etc/impermanence/wipe.conf): shell variable assignments the
 * wipe script sources. `storages` are the declared storage roots, which must not have content on
 * the root subvolume (it would be wiped).
 */
export function wipeConfText(wipe: WipeSettings, storages: readonly string[]): string {
  const lines = [`# Generated by impermanencectl wipe config from ${wipe.origin.file}; sourced by impermanence-wipe in the initrd.`, `WIPE_METHOD=${wipe.method}`];
  if (wipe.method === 'btrfs') {
    lines.push(
      `WIPE_DEVICE=${shellQuote(wipe.device)}`,
      `WIPE_SUBVOLUME=${shellQuote(wipe.subvolume)}`,
      `WIPE_FROM=${shellQuote(wipe.from)}`,
      `WIPE_OLD_ROOTS=${shellQuote(wipe.oldRoots)}`,
      `WIPE_KEEP_DAYS=${wipe.keep.days}`,
      `WIPE_KEEP_COUNT=${wipe.keep.count}`,
      `WIPE_TIMEOUT=${wipe.timeout}`,
    );
  } else if (wipe.method === 'zfs') {
    lines.push(`WIPE_DATASET=${shellQuote(wipe.dataset)}`, `WIPE_SNAPSHOT=${shellQuote(wipe.snapshot)}`);
  } else {
    lines.push(`WIPE_SIZE=${shellQuote(wipe.size)}`, `WIPE_MODE=${wipe.mode.toString(8).padStart(4, '0')}`);
  }
  // Newline-separated: storage roots are absolute paths without newlines (normalizePath refuses them).
  lines.push(`WIPE_STORAGES=${shellQuote(storages.map((s) => normalizePath(s, { relative: false })).join('\n'))}`);
  return `${lines.join('\n')}\n`;
}
