/**
 * Keeping the pristine current (README "Wiping the root"): `wipe init` makes the read-only
 * pristine from the running root, `wipe update -- COMMAND` runs COMMAND chrooted into a new
 * snapshot of it and swaps that in as the new pristine (openSUSE's transactional-update, for the
 * btrfs wipe). Both work on a private mount of the top level (previous-boot.ts's withTopLevel).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { basename, dirname, join } from 'node:path';
import type { WipeSettings } from '../config/wipe';
import { bootTime } from '../drift/boot';
import { printable, printablePath } from '../shared/printable';
import { diffOffline, printReport } from './diff';
import type { OutputOptions } from './output';
import { PreviousBootError, withTopLevel, type BtrfsWipe } from './previous-boot';

type Print = (s: string) => void;

/** How many previous pristines `wipe update` keeps (`@pristine.<UTC time>`), the newest first. */
export const KEEP_PREVIOUS = 3;

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
 * Finishes a `wipe update` cut between its two renames (the old pristine moved aside, the new one,
 * already read-only, not yet in place): the pristine is missing and a read-only temporary is there.
 * Deletes a writable temporary (a command or an init that did not finish).
 */
function recover(top: string, wipe: BtrfsWipe, say: Print): void {
  const tmp = temporary(wipe.from);
  if (!isSubvolume(join(top, tmp))) return;
  if (!exists(join(top, wipe.from)) && isReadOnly(join(top, tmp))) {
    renameNew(top, tmp, wipe.from);
    sync(top);
    say(`finished an interrupted wipe update: ${tmp} (read-only, complete) is now ${wipe.from}\n`);
    return;
  }
  if (isReadOnly(join(top, tmp))) btrfs('property', 'set', '-ts', join(top, tmp), 'ro', 'false');
  btrfs('subvolume', 'delete', join(top, tmp));
  say(`deleted ${tmp}, left by an interrupted wipe init or update\n`);
}

/**
 * One wipe init or update at a time (the second would find the first's temporary snapshot and
 * take it for a leftover): a lock file in /run holding the PID; one whose process is gone is taken over.
 */
async function locked<T>(work: () => Promise<T>, lockFile = '/run/impermanence/pristine.lock'): Promise<T> {
  mkdirSync(dirname(lockFile), { recursive: true, mode: 0o755 });
  let fd: number | undefined;
  for (let attempt = 0; fd === undefined; attempt++) {
    try {
      fd = openSync(lockFile, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw new PreviousBootError(`cannot take ${lockFile}: ${(e as Error).message}`);
      const pid = Number(readFileSync(lockFile, 'utf8').trim());
      let alive = false;
      try {
        alive = pid > 0 && process.kill(pid, 0);
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (alive) throw new PreviousBootError(`another wipe init or update is running (PID ${pid}, ${lockFile})`);
      unlinkSync(lockFile);
    }
  }
  writeSync(fd, `${process.pid}\n`);
  closeSync(fd);
  try {
    return await work();
  } finally {
    unlinkSync(lockFile);
  }
}

/** The mountinfo line of the mount at `path` (the last one, which is what is seen there). */
function mountAt(path: string): { root: string; fstype: string; source: string } | undefined {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  let found;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const f = left.split(' ');
    const [fstype, source] = right.split(' ');
    if (unescape(f[4]!) === path) found = { root: unescape(f[3]!), fstype: fstype!, source: unescape(source!) };
  }
  return found;
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
    recover(top, wipe, say);
    if (exists(join(top, wipe.from))) {
      throw new PreviousBootError(`the pristine ${wipe.from} exists already on ${wipe.device}: to change it, run impermanencectl wipe update -- COMMAND (the current one is kept as ${wipe.from}.<UTC time>)`);
    }
    checkBootedRoot(wipe, opts.root, device);
    if (!isSubvolume(join(top, wipe.subvolume))) throw new PreviousBootError(`no subvolume ${wipe.subvolume} on ${wipe.device}`);
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
    if (r.signal) return 128 + (({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[r.signal] ?? 0);
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
        btrfs('subvolume', 'delete', join(top, tmp));
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
        btrfs('subvolume', 'delete', join(top, old));
        say(`deleted ${old} (only the ${KEEP_PREVIOUS} newest previous pristines are kept)\n`);
      } catch (e) {
        err(`impermanencectl wipe update: could not delete ${basename(old)}: ${printable((e as Error).message)}\n`);
      }
    }
    return 0;
  }));
}
