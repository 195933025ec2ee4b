/**
 * Keeping the pristine current (README "Wiping the root"): `wipe init` makes the read-only
 * pristine from the running root, `wipe update -- COMMAND` runs COMMAND chrooted into a new
 * snapshot of it and swaps that in as the new pristine (openSUSE's transactional-update, for the
 * btrfs wipe). Both work on a private mount of the top level (previous-boot.ts's withTopLevel).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { basename, dirname, join } from 'node:path';
import { KEEP_PREVIOUS, type WipeSettings } from '../config/wipe';
import { bootTime } from '../drift/boot';
import { parseMountInfo } from '../drift/mountinfo';
import { printable, printablePath } from '../shared/printable';
import { diffOffline, printReport } from './diff';
import type { OutputOptions } from './output';
import { PreviousBootError, withTopLevel, type BtrfsWipe } from './previous-boot';

type Print = (s: string) => void;

/** Set in COMMAND's environment by `wipe update`: the package-manager hooks stay silent there. */
export const UPDATE_ENV = 'IMPERMANENCE_WIPE_UPDATE';

const STAMP = /^\d{4}-\d\d-\d\d_\d{6}(?:\.\d+)?$/;

/** `2026-11-26_061500`: the time in UTC, as the wipe names old roots. */
export function utcStamp(date = new Date()): string {
  return date.toISOString().replace('T', '_').replace(/:/g, '').slice(0, 17);
}

/** The previous pristines among subvolume paths (`@pristine.<UTC time>[.N]`), newest first. */
export function previousPristines(paths: readonly string[], from: string): string[] {
  const prefix = `${from}.`;
  const key = (p: string) => {
    const [stamp, n] = p.slice(prefix.length).split('.');
    return `${stamp}.${(n ?? '').padStart(6, '0')}`;
  };
  return paths.filter((p) => p.startsWith(prefix) && STAMP.test(p.slice(prefix.length))).sort((a, b) => (key(a) < key(b) ? 1 : -1));
}

/** The temporary name a new pristine is made under before it is renamed into place. */
const temporary = (from: string) => `${from}.new`;

function btrfs(...args: string[]): string {
  const r = spawnSync('btrfs', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new PreviousBootError(`btrfs ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  return r.stdout;
}

/** A subvolume's root is inode 256 on btrfs (lstat: a symlink never counts). */
function isSubvolume(path: string): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return !!st && st.isDirectory() && st.ino === 256;
}

function exists(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

function isReadOnly(path: string): boolean {
  return /ro=true/.test(btrfs('property', 'get', '-ts', path, 'ro'));
}

/**
 * Renames `from` to `to` on the top level, refusing when `to` exists. rename(2) itself never
 * replaces a non-empty folder or a subvolume, so a name made in between by someone else loses nothing.
 */
function renameNew(top: string, from: string, to: string): void {
  if (exists(join(top, to))) throw new PreviousBootError(`${to} exists: not replacing it`);
  renameSync(join(top, from), join(top, to));
}

/** Makes what was written durable (a btrfs transaction commit). */
function sync(top: string): void {
  btrfs('filesystem', 'sync', top);
}

/**
 * Deletes the subvolume `path` (relative to the top level `top`) with the subvolumes nested in it
 * (a package's postinst running systemd-tmpfiles makes /var/lib/machines one), the deepest first,
 * making read-only ones writable first (as the wipe's delete_tree does).
 */
export function deleteTree(top: string, path: string): void {
  const nested = btrfs('subvolume', 'list', top)
    .split('\n')
    .map((line) => /^ID \d+ gen \d+ top level \d+ path (.*)$/.exec(line)?.[1])
    .filter((p): p is string => p !== undefined && p.startsWith(`${path}/`))
    .sort((a, b) => b.split('/').length - a.split('/').length);
  // A subvolume's entry is in its parent: every one of them must be writable to delete the ones below.
  for (const p of [path, ...nested]) if (isSubvolume(join(top, p)) && isReadOnly(join(top, p))) btrfs('property', 'set', '-ts', join(top, p), 'ro', 'false');
  for (const p of nested) if (isSubvolume(join(top, p))) btrfs('subvolume', 'delete', join(top, p));
  btrfs('subvolume', 'delete', join(top, path));
}

/**
 * Finishes a `wipe init` or `wipe update` cut before its last rename (the new pristine, already
 * read-only and complete, not yet in place): the pristine is missing and a read-only temporary is
 * there; returns true then. Deletes a writable temporary (a command or an init that did not finish).
 */
function recover(top: string, wipe: BtrfsWipe, say: Print): boolean {
  const tmp = temporary(wipe.from);
  if (!isSubvolume(join(top, tmp))) return false;
  if (!exists(join(top, wipe.from)) && isReadOnly(join(top, tmp))) {
    renameNew(top, tmp, wipe.from);
    sync(top);
    say(`found ${tmp} read-only and complete and no ${wipe.from} (a wipe init or update cut before its last step): it is now ${wipe.from}\n`);
    return true;
  }
  deleteTree(top, tmp);
  say(`deleted ${tmp}, left by an interrupted wipe init or update\n`);
  return false;
}

/** The PID in a lock file's text; undefined when there is none (being written, or damaged): then it counts as held. */
function lockPid(text: string): number | undefined {
  const m = /^(\d+)\n$/.exec(text);
  const pid = m ? Number(m[1]) : 0;
  return pid > 0 ? pid : undefined;
}

function running(pid: number): boolean {
  try {
    return process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

const readOrUndefined = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
};

/**
 * One wipe init or update at a time (the second would find the first's temporary snapshot and
 * take it for a leftover): a lock file in /run holding the PID, linked into place whole (never
 * seen empty). One whose process is gone is renamed aside (one taker wins) and taken over.
 */
export async function locked<T>(work: () => Promise<T>, lockFile = '/run/impermanence/pristine.lock'): Promise<T> {
  mkdirSync(dirname(lockFile), { recursive: true, mode: 0o755 });
  const mine = `${process.pid}\n`;
  const unique = () => `${lockFile}.${process.pid}.${randomBytes(6).toString('hex')}`;
  const fail = (why: string) => new PreviousBootError(`cannot take ${lockFile}: ${why}`);
  const tmp = unique();
  writeFileSync(tmp, mine, { mode: 0o644, flag: 'wx' });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, lockFile);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fail((e as Error).message);
      }
      if (attempt >= 5) throw fail('it keeps changing');
      const text = readOrUndefined(lockFile);
      if (text === undefined) continue; // released in between
      const pid = lockPid(text);
      if (pid === undefined || running(pid)) throw new PreviousBootError(`another wipe init or update is running (${pid === undefined ? 'no PID in it: remove it if none runs' : `PID ${pid}`}, ${lockFile})`);
      // Stale: rename it aside; if what was renamed is not what was read, another run took it
      // over in between: put it back and stop.
      const aside = unique();
      try {
        renameSync(lockFile, aside);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw fail((e as Error).message);
      }
      const moved = readFileSync(aside, 'utf8');
      if (moved !== text) {
        try {
          linkSync(aside, lockFile);
        } catch {
          // another run holds it now
        }
        unlinkSync(aside);
        throw new PreviousBootError(`another wipe init or update is running (${lockPid(moved) ? `PID ${lockPid(moved)}` : 'no PID in it: remove it if none runs'}, ${lockFile})`);
      }
      unlinkSync(aside);
    }
  } finally {
    unlinkSync(tmp);
  }
  try {
    return await work();
  } finally {
    if (readOrUndefined(lockFile) === mine) unlinkSync(lockFile);
  }
}

/** The mount at `path` (the last one, which is what is seen there). */
function mountAt(path: string) {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountPoint === path).pop();
}

/** The running root (or --root) must be the [wipe] subvolume of the [wipe] device: what init snapshots. */
function checkBootedRoot(wipe: BtrfsWipe, root: string, device: string): void {
  const at = realpathSync(root);
  const m = mountAt(at);
  const shown = printablePath(at);
  if (!m || m.fstype !== 'btrfs') throw new PreviousBootError(`${shown} is not a btrfs mount (${m ? m.fstype : 'not a mount point'}): it is not the root subvolume ${wipe.subvolume} the wipe makes`);
  if (m.root !== `/${wipe.subvolume}`) throw new PreviousBootError(`${shown} is the subvolume ${printablePath(m.root.slice(1) || '(top level)')}, not ${wipe.subvolume} ([wipe] subvolume): boot with rootflags=subvol=${wipe.subvolume}`);
  let same = false;
  try {
    same = realpathSync(m.source) === realpathSync(device);
  } catch {
    // not a device path
  }
  if (!same) throw new PreviousBootError(`${shown} is mounted from ${printablePath(m.source)}, not from ${wipe.device} ([wipe] device)`);
}

async function ask(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await new Promise<string>((resolve) => {
    rl.question(question, resolve);
    rl.once('close', () => resolve(''));
  });
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

function btrfsWipe(wipe: WipeSettings, command: string): BtrfsWipe {
  if (wipe.method !== 'btrfs') throw new PreviousBootError(`[wipe] method = "${wipe.method}": wipe ${command} is for the btrfs wipe with a pristine`);
  if (wipe.from === 'empty') throw new PreviousBootError(`[wipe] from = "empty": the root is made from an empty subvolume, there is no pristine (set from = "@pristine" to make one)`);
  return wipe;
}

/**
 * `wipe init [--yes]`: shows what was written outside persisted paths since boot (it would be
 * baked into the pristine), asks, then snapshots the running root subvolume read-only under a
 * temporary name and renames it to the pristine. Never replaces an existing pristine.
 */
export async function wipeInit(settings: WipeSettings, opts: { root: string; dirs: string[]; required: string[]; yes: boolean }, o: OutputOptions, out: Print, err: Print): Promise<number> {
  const wipe = btrfsWipe(settings, 'init');
  const say = o.quiet ? () => undefined : out;
  return locked(() => withTopLevel(wipe, true, async (top, device) => {
    // Checks, report and question first: nothing is changed before the answer.
    checkBootedRoot(wipe, opts.root, device);
    if (!isSubvolume(join(top, wipe.subvolume))) throw new PreviousBootError(`no subvolume ${wipe.subvolume} on ${wipe.device}`);
    if (exists(join(top, wipe.from))) {
      throw new PreviousBootError(`the pristine ${wipe.from} exists already on ${wipe.device}: to change it, run impermanencectl wipe update -- COMMAND (the current one is kept as ${wipe.from}.<UTC time>)`);
    }
    const report = await diffOffline(opts.dirs, opts.required, opts.root, bootTime(), err);
    report.items = report.items.filter((i) => i.kind === 'ephemeral');
    if (!o.quiet) {
      out(`The pristine ${wipe.from} will be the running root (${wipe.subvolume}) as it is now. `);
      out(report.items.length ? 'It bakes in what was written outside persisted paths since boot:\n\n' : 'Nothing was written outside persisted paths since boot.\n');
      if (report.items.length) printReport(report, { ...o, json: 'off' }, out);
    }
    if (!opts.yes) {
      if (!process.stdin.isTTY) throw new PreviousBootError('not asking without a terminal: give --yes to make the pristine');
      if (!(await ask(`\nMake ${wipe.from} (read-only) from ${wipe.subvolume} on ${wipe.device}? [y/N] `))) {
        err('impermanencectl wipe init: nothing done\n');
        return 1;
      }
    }
    // A read-only temporary left by a run cut before its last step becomes the pristine.
    if (recover(top, wipe, say)) {
      say(`${wipe.from} is that snapshot, not a new one of ${wipe.subvolume}: change it with impermanencectl wipe update -- COMMAND\n`);
      return 0;
    }
    const tmp = temporary(wipe.from);
    btrfs('subvolume', 'snapshot', '-r', join(top, wipe.subvolume), join(top, tmp));
    sync(top);
    renameNew(top, tmp, wipe.from);
    sync(top);
    say(`made ${wipe.from} (read-only) from ${wipe.subvolume} on ${wipe.device}: the next boots start from it.\n`);
    say(`Nested subvolumes inside ${wipe.subvolume} are not in it (btrfs snapshots stop at them). Change it with: impermanencectl wipe update -- COMMAND\n`);
    return 0;
  }));
}

/**
 * Runs argv chrooted into `dir` in a private mount namespace (its mounts end with it): /proc, /sys,
 * /dev, a fresh /run, and this system's resolv.conf; UPDATE_ENV set. Returns the exit code
 * (128 + the signal's number when killed).
 */
function runChrooted(dir: string, argv: string[]): number {
  const script = `set -e
r=$1; shift
[ ! -d "$r/proc" ] || mount -t proc proc "$r/proc"
[ ! -d "$r/sys" ] || mount --rbind /sys "$r/sys"
[ ! -d "$r/dev" ] || mount --rbind /dev "$r/dev"
[ ! -d "$r/run" ] || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$r/run"
if [ -L "$r/etc/resolv.conf" ]; then
  t=$(readlink "$r/etc/resolv.conf"); case $t in /*) ;; *) t=/etc/$t ;; esac
  t=$(realpath -m -s "$t")
  case $t in /run/*) [ ! -f /etc/resolv.conf ] || { mkdir -p "$r\${t%/*}"; cat /etc/resolv.conf > "$r$t"; } ;; esac
elif [ -f "$r/etc/resolv.conf" ] && [ -f /etc/resolv.conf ]; then
  mount --bind -o ro /etc/resolv.conf "$r/etc/resolv.conf"
fi
exec chroot "$r" "$@"`;
  // Ctrl-C reaches COMMAND (same process group); this process stays to clean up after it.
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  try {
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', dir, ...argv], { stdio: 'inherit', env: { ...process.env, [UPDATE_ENV]: '1' } });
    if (r.error) throw new PreviousBootError(`cannot run unshare: ${r.error.message}`);
    if (r.signal) return 128 + (constants.signals[r.signal] ?? 0);
    return r.status ?? 1;
  } finally {
    process.off('SIGINT', ignore);
  }
}

/**
 * `wipe update -- COMMAND…`: a writable snapshot of the pristine under a temporary name, COMMAND
 * chrooted into it; on success it is made read-only and renamed into place, the current pristine
 * kept as `<from>.<UTC time>` (the KEEP_PREVIOUS newest are kept); on failure it is deleted and the
 * pristine is untouched. Returns COMMAND's exit code.
 */
export async function wipeUpdate(settings: WipeSettings, argv: string[], o: OutputOptions, out: Print, err: Print): Promise<number> {
  const wipe = btrfsWipe(settings, 'update');
  const say = o.quiet ? () => undefined : out;
  return locked(() => withTopLevel(wipe, true, async (top) => {
    recover(top, wipe, say);
    if (!isSubvolume(join(top, wipe.from))) throw new PreviousBootError(`no pristine ${wipe.from} on ${wipe.device}: make it first with impermanencectl wipe init`);
    const tmp = temporary(wipe.from);
    btrfs('subvolume', 'snapshot', join(top, wipe.from), join(top, tmp));
    say(`running ${printable(argv.join(' '))} in a new snapshot of ${wipe.from} (${tmp})\n`);
    const code = runChrooted(join(top, tmp), argv);
    if (code !== 0) {
      let deleted = true;
      try {
        deleteTree(top, tmp);
      } catch (e) {
        deleted = false;
        err(`impermanencectl wipe update: ${printable((e as Error).message)}\n`);
      }
      err(`impermanencectl wipe update: the command failed (exit ${code}): ${wipe.from} is unchanged${deleted ? '' : ` (${tmp} could not be deleted; the next wipe update deletes it)`}\n`);
      return code;
    }
    btrfs('property', 'set', '-ts', join(top, tmp), 'ro', 'true');
    sync(top);
    let previous = `${wipe.from}.${utcStamp()}`;
    for (let n = 1; exists(join(top, previous)); n++) previous = `${wipe.from}.${utcStamp()}.${n}`;
    // Two renames: a power cut between them leaves no pristine and a complete read-only temporary,
    // which the wipe refuses to use (it boots without wiping and says so) and the next
    // wipe init or update renames into place (recover).
    renameNew(top, wipe.from, previous);
    renameNew(top, tmp, wipe.from);
    sync(top);
    say(`${wipe.from} is the new pristine (the previous one is kept as ${previous}): the next boot starts from it.\n`);
    say('The running root is not changed by it: the command ran in the pristine only.\n');
    // Retention: the KEEP_PREVIOUS newest previous pristines.
    const parent = dirname(wipe.from);
    const siblings = readdirSync(join(top, parent)).map((n) => (parent === '.' ? n : `${parent}/${n}`));
    for (const old of previousPristines(siblings, wipe.from).slice(KEEP_PREVIOUS)) {
      if (!isSubvolume(join(top, old))) continue;
      try {
        deleteTree(top, old);
        say(`deleted ${old} (only the ${KEEP_PREVIOUS} newest previous pristines are kept)\n`);
      } catch (e) {
        err(`impermanencectl wipe update: could not delete ${basename(old)}: ${printable((e as Error).message)}\n`);
      }
    }
    return 0;
  }));
}
