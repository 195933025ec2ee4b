import { spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, unlinkSync, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';
import { addEntry, removeEntry, type EntryRef } from '../config/edit';
import { InvalidConfig } from '../config/errors';
import { configFolders, loadConfig, parseConfigText, type LoadedFile } from '../config/load';
import { isInside, normalizePath } from '../config/paths';
import { resolveConfig, type Entry, type ResolvedConfig } from '../config/resolve';
import { escapePath, mountUnitName } from '../config/unit-name';
import { UserDb } from '../config/userdb';
import { bootTime } from '../drift/boot';
import { readMountPoints } from '../drift/mountinfo';
import { GENERATOR_DIR } from '../drift/state';
import { collect, planUnits } from '../generator/plan';
import { sourceStatter, statOnRoot } from '../generator/write';
import { removeStaleTemps, replaceFile } from '../shared/replace-file';
import { at, copyTree, isOwnTempDir, makeTempDir, openBeneath, openChild, removeTempDir, runWith, syncFileSystem, type TempDir } from './as-root';
import { clearCovered, openCovered, sameEntry, type Cleared } from './clear-covered';
import { adoptAll, storageProblem, tempBeside } from './prepare';

/**
 * Persisting and unpersisting a path on a running system, without a reboot: the same adoption
 * as at boot, the drop-in edited as text (comments and order kept), then the mount started or
 * stopped through systemd. Every step can be cut short (kill -9, a power cut) and run again:
 * what a step leaves is recognized and finished by the next run, and nothing in storage is
 * overwritten or deleted.
 */

/**
 * The drop-in that persist and unpersist edit: 50-local.toml in the first folder named with
 * impermanence.config= (on the storage, so it outlives the wipe), else in /etc/impermanence/persist.d.
 */
export function localDropIn(folders = configFolders(undefined, '/')): string {
  return `${folders.required[0] ?? '/etc/impermanence/persist.d'}/50-local.toml`;
}

export class PersistError extends Error {}

export interface PersistRequest {
  path: string;
  /** The storage root; needed when the config has several. */
  storage?: string;
  /** Declare it under users.<name> (relative to the home); by default, the owner of the home it is in. */
  user?: string;
}

type Say = (line: string) => void;

interface Context { dropIn: string; folders: ReturnType<typeof configFolders>; loaded: LoadedFile[]; users: UserDb; config: ResolvedConfig }

function context(dropIn: string): Context {
  const folders = configFolders(undefined, '/');
  const users = UserDb.read('/');
  try {
    const loaded = loadConfig(folders.dirs, folders.required);
    return { dropIn, folders, loaded, users, config: resolveConfig(loaded, users) };
  } catch (err) {
    if (err instanceof InvalidConfig) throw new PersistError(`the config is invalid now; fix it first:\n${err.message}`);
    throw err;
  }
}

/** The config with `file` holding `text` (in its place in the lexical order), resolved; throws with what is wrong. */
function resolveWith(ctx: Context, file: string, text: string): ResolvedConfig {
  const others = ctx.loaded.filter((l) => l.file !== file);
  try {
    const mine: LoadedFile = { file, config: parseConfigText(file, text) };
    const all = [...others, mine].sort((a, b) => (basename(a.file) < basename(b.file) ? -1 : basename(a.file) > basename(b.file) ? 1 : 0));
    return resolveConfig(all, ctx.users);
  } catch (err) {
    if (err instanceof InvalidConfig) throw new PersistError(`the config would be invalid:\n${err.message}`);
    throw err;
  }
}

/** How an entry is written in the drop-in: under users.<name> when it is inside that user's home. */
function refFor(ctx: Context, path: string, kind: EntryRef['kind'], storage: string, user: string | undefined): EntryRef {
  const record = user !== undefined ? ctx.users.user(user) : ctx.users.all().find((u) => u.home !== '/' && isInside(path, u.home) && u.uid >= 1000);
  if (user !== undefined && !record) throw new PersistError(`unknown user ${JSON.stringify(user)}`);
  if (record && !isInside(path, record.home)) throw new PersistError(`${path} is not inside ${record.name}'s home ${record.home}`);
  return record ? { storage, user: record.name, kind, path: path.slice(record.home.length + 1) } : { storage, kind, path };
}

export function persist(req: PersistRequest, say: Say, dropIn = localDropIn()): Entry {
  const path = checkedPath(req.path);
  return oneAtATime(say, () => persistNow(path, req, say, dropIn));
}

function persistNow(path: string, req: PersistRequest, say: Say, dropIn: string): Entry {
  removeStaleTemps(dropIn); // what a run killed while writing the drop-in left beside it
  const ctx = context(dropIn);
  const declared = ctx.config.entries.find((e) => e.path === path);
  const storage = declared?.storage ?? chooseStorage(ctx.config, req.storage);
  const problem = storageProblem(storage);
  if (problem) throw new PersistError(`${problem}: nothing is persisted there`);
  const here = lstatSync(path, { throwIfNoEntry: false });
  if (here?.isSymbolicLink() && !declared) throw new PersistError(`${path} is a symlink: persist what it points to, or the folder that holds it`);
  if (here && !here.isDirectory() && !here.isFile() && !here.isSymbolicLink()) throw new PersistError(`${path} is neither a folder nor a file`);
  const kind: Entry['kind'] = declared?.kind ?? (here?.isFile() ? 'file' : 'directory');

  // 1. The config it will have, checked before anything is touched.
  let text: string | undefined;
  if (declared) {
    if (declared.storage !== storage) throw new PersistError(`${path} is already persisted in ${declared.storage} (${declared.origin.file}: ${declared.origin.entry})`);
  } else {
    const ref = refFor(ctx, path, kind, storage, req.user);
    text = addEntry(existsSync(dropIn) ? readFileSync(dropIn, 'utf8') : '', ref);
  }
  const config = text === undefined ? ctx.config : resolveWith(ctx, dropIn, text);
  const entry = config.entries.find((e) => e.path === path)!;

  // 2. What is there now, into storage (its parents first, as the boot makes them); 3. the drop-in;
  // 4. the mount; 5. the root's copy, now hidden under the mount, cleared: it was moved, not copied
  // (what was written there after the copy goes into storage, or aside: clear-covered.ts).
  const mounted = readMountPoints().has(path);
  let covered: number | undefined;
  if (!mounted) {
    refuseWriters(path);
    createParents(config, entry);
    adoptNow(entry, say);
    covered = openCovered(path, kind);
  } else {
    removeAdoptLeftovers(entry); // of a run cut short after the mount, while it cleared the root's copy
  }
  if (text !== undefined) {
    mkdirSync(dirname(dropIn), { recursive: true });
    replaceFile(dropIn, text);
    say(`added ${path} to ${dropIn}`);
    if (!config.entries.some((e) => e.path === dirname(dropIn) || isInside(dropIn, e.path)) && !config.storages.some((s) => isInside(dropIn, s.path))) {
      say(`note: ${dropIn} is on the root, which is wiped at every boot: persist /etc/impermanence, or keep the config on the storage (impermanence.config=), or this entry is forgotten at reboot`);
    }
  }
  try {
    if (!mounted) activate(entry, say);
    // Only what this run mounted over: what an earlier mount covers may be anyone's (shadowed).
    if (covered !== undefined && readMountPoints().has(path)) clear(covered, entry, say);
  } finally {
    if (covered !== undefined) closeSync(covered);
  }
  tellDaemon();
  return entry;
}

/**
 * The root's copy, now under the mount, cleared (see clear-covered.ts), and the user told what was
 * written there while this ran: moved into storage, set aside, or left hidden.
 * (A run cut short before this leaves the copy covered; unpersist recognizes it as a copy, see copyBack.)
 */
function clear(covered: number, entry: Entry, say: Say): void {
  const storageDir = held(() => openBeneath(entry.storage, dirname(entry.source)));
  let out: Cleared;
  try {
    out = clearCovered(covered, entry.path, entry.source, storageDir, entry.kind);
  } finally {
    closeSync(storageDir);
  }
  const list = (names: string[]) => (names.length > 10 ? `${names.slice(0, 10).join(', ')} and ${names.length - 10} more` : names.join(', '));
  const count = (names: string[], what: string) => `${names.length === 1 ? '1 file or folder' : `${names.length} files or folders`} ${what}`;
  if (out.moved.length) say(`${count(out.moved, `written to ${entry.path} while it was being persisted (after the copy)`)}: moved into ${entry.source}: ${list(out.moved)}`);
  if (out.aside.length) {
    say(
      `${count(out.aside, `changed in ${entry.path} while it was being persisted, different from the copy in storage`)}: set aside in ${out.asideDir}: ${list(out.aside)} ` +
        `(that folder is root's only: compare with ${entry.path}, keep what you need, then remove it)`,
    );
  }
  if (out.kept.length) {
    say(
      `${count(out.kept, `in ${entry.path}`)} could not be moved into storage (${out.problem}): left on the root, hidden under the mount, lost at the next reboot ` +
        `(\`impermanencectl unpersist ${entry.path}\` shows them again): ${list(out.kept)}`,
    );
  }
}

export function unpersist(rawPath: string, say: Say, dropIn = localDropIn()): Entry {
  const path = checkedPath(rawPath);
  return oneAtATime(say, () => unpersistNow(path, say, dropIn));
}

function unpersistNow(path: string, say: Say, dropIn: string): Entry {
  removeStaleTemps(dropIn);
  const ctx = context(dropIn);
  const entry = ctx.config.entries.find((e) => e.path === path);
  if (!entry) {
    if (copyBackLeftovers(path).length === 0) throw new PersistError(`${path} is not persisted`);
    throw new PersistError(`${path} is not persisted (a copy left by an earlier unpersist is beside it)`);
  }
  if (entry.origin.file !== dropIn) throw new PersistError(`${path} is declared in ${entry.origin.file} (${entry.origin.entry}): remove it there`);
  const ref = refFor(ctx, path, entry.kind, entry.storage, entry.home?.name);
  const original = readFileSync(dropIn, 'utf8');
  const text = removeEntry(original, ref) ?? removeEntry(original, { ...ref, user: undefined, path });
  if (text === undefined) throw new PersistError(`${path} is declared in ${dropIn} (${entry.origin.entry}) in a form this command does not edit: remove it there`);
  resolveWith(ctx, dropIn, text);

  // 1. A copy of the storage's content beside the path; 2. the mount stopped; 3. the copy in its place.
  const back = copyBack(entry, say);
  // 4. The drop-in, and systemd told.
  replaceFile(dropIn, text);
  say(`removed ${path} from ${dropIn}; ${entry.source} stays in storage (an orphan now: remove it yourself when you no longer need it)`);
  systemctl('daemon-reload');
  tellDaemon();
  if (back) say(`${path} is a plain ${entry.kind} on the root again: it is lost at the next reboot`);
  return entry;
}

/** Held while a persist or unpersist runs (see oneAtATime). */
const LOCK = '/run/impermanence/persist.lock';

/**
 * One persist or unpersist at a time, whoever runs it (impermanencectl as root, or the daemon's
 * transient units, which may run side by side): each reads the drop-in, writes it back edited and
 * reloads systemd, and two at once lost an entry (two Persist calls at once left one in the
 * drop-in). A flock(2) on LOCK, taken by flock(1) on this process's own open file (a lock belongs
 * to the open file, not to the process that took it): released when this process ends, however.
 */
function oneAtATime<T>(say: Say, run: () => T): T {
  mkdirSync(dirname(LOCK), { recursive: true });
  const fd = openSync(LOCK, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  try {
    if (runWith(['flock', '--nonblock', '--exclusive', '3'], [fd]).status !== 0) {
      say('waiting for another persist or unpersist to finish…');
      const r = runWith(['flock', '--exclusive', '3'], [fd]);
      if (r.status !== 0) throw new PersistError(`cannot lock ${LOCK}: ${r.stderr.trim() || `flock exited with ${r.status}`}`);
    }
    return run();
  } finally {
    closeSync(fd);
  }
}

function checkedPath(raw: string): string {
  if (process.getuid?.() !== 0) throw new PersistError('persist and unpersist need root (sudo)');
  try {
    return normalizePath(raw.startsWith('/') ? raw : `${process.cwd()}/${raw}`, { relative: false });
  } catch (err) {
    throw new PersistError((err as Error).message);
  }
}

function chooseStorage(config: ResolvedConfig, wanted: string | undefined): string {
  const roots = config.storages.map((s) => s.path);
  if (wanted !== undefined) {
    const storage = normalizePath(wanted, { relative: false });
    if (!roots.includes(storage)) throw new PersistError(`${storage} is not a storage root of the config (${roots.join(', ') || 'none is declared'}); declare it first`);
    return storage;
  }
  if (roots.length === 1) return roots[0]!;
  if (roots.length === 0) throw new PersistError('no storage root is declared: declare one ([persistence."/persistent"] on a mounted filesystem), or give --storage');
  throw new PersistError(`several storage roots are declared (${roots.join(', ')}): choose one with --storage`);
}

/**
 * Copies what the root holds into storage (see adoptAll). Run again after a cut, it finds its
 * own finished copy (the same tree in storage) and goes on; a different one is never replaced.
 */
function adoptNow(entry: Entry, say: Say): void {
  const there = lstatSync(entry.source, { throwIfNoEntry: false });
  const here = lstatSync(entry.path, { throwIfNoEntry: false });
  const holds = (st: Stats | undefined, p: string) => !!st && (st.isDirectory() ? readdirSync(p).length > 0 : st.isFile());
  if (holds(there, entry.source) && holds(here, entry.path) && !here!.isSymbolicLink()) {
    if (!sameTree(entry.path, entry.source)) {
      throw new PersistError(`both ${entry.path} and its storage copy ${entry.source} hold something, and they differ: storage would win and hide what is on the root. Move one of them away first`);
    }
  } else {
    const result = adoptAll({ storage: entry.storage, tmpfiles: '', mounts: [{ kind: entry.kind, path: entry.path, source: entry.source }] });
    if (result.problems.length) throw new PersistError(result.problems.join('\n'));
    for (const p of result.adopted) say(`copied ${p} into ${entry.source}`);
  }
  removeAdoptLeftovers(entry);
}

/** Our temporary folders beside the entry's source in storage, left by a run cut short this boot (see removeOwnLeftovers). */
function removeAdoptLeftovers(entry: Entry): void {
  let dir: number;
  try {
    dir = openBeneath(entry.storage, dirname(entry.source));
  } catch {
    return; // not reached without a symlink: nothing of ours is there
  }
  try {
    removeOwnLeftovers(dir, entry.source, 'adopt');
  } finally {
    closeSync(dir);
  }
}

/**
 * What systemd-tmpfiles creates at boot for the entry's storage root, as the generator plans it
 * for `config`: the entry's parents in storage and on the root, with the declared owner and
 * mode, only where missing, its source folder (empty: adoption fills it), and its mount point
 * or symlink.
 */
function createParents(config: ResolvedConfig, entry: Entry): void {
  const output = collect();
  planUnits(config, { outputDir: GENERATOR_DIR, statSource: sourceStatter(), statRoot: statOnRoot }, output);
  const name = escapePath(entry.storage);
  const rules = output.files.get(`impermanence/${name}.conf`);
  if (!rules) return;
  const file = `/run/impermanence/persist-${name}.conf`;
  mkdirSync(dirname(file), { recursive: true });
  replaceFile(file, rules);
  const tmpfiles = spawnSync('systemd-tmpfiles', ['--create', file], { encoding: 'utf8' });
  if (tmpfiles.status !== 0) throw new PersistError(`systemd-tmpfiles --create ${file}: ${tmpfiles.stderr.trim() || `exit ${tmpfiles.status}`}`);
}

/**
 * Starts the mount (or checks the symlink) through systemd, as the generator now plans it; the
 * mount point or symlink was made with the parents (createParents: the same config, the same rules).
 */
function activate(entry: Entry, say: Say): void {
  systemctl('daemon-reload');
  const unit = mountUnitName(entry.path);
  if (existsSync(`${GENERATOR_DIR}/${unit}`)) {
    systemctl('start', unit);
    say(`${entry.path} is mounted from ${entry.source} (${unit})`);
  } else {
    const target = lstatSync(entry.path, { throwIfNoEntry: false })?.isSymbolicLink() ? readlinkSync(entry.path) : undefined;
    if (target !== entry.source) throw new PersistError(`${entry.path} is not a symlink to ${entry.source}: something stands there`);
    say(`${entry.path} is a symlink to ${entry.source}`);
  }
}

/**
 * Puts a copy of the storage's content back on the root in place of the mount (or symlink):
 * copied beside it first, into a folder of root's own (`.NAME.impermanence-unpersist.XXXXXX`,
 * 0700), then the mount stopped, then moved in. The folder the path is in may be a user's (a
 * home): it is held open, reached from "/" without a symlink, and every name in it is looked up
 * through it (see as-root.ts), so nothing a user makes there is written through.
 * Returns false when there was nothing left to do (a run cut short after the copy was in place).
 */
function copyBack(entry: Entry, say: Say): boolean {
  const mounted = readMountPoints().has(entry.path);
  const parent = held(() => openBeneath('/', dirname(entry.path)));
  try {
    const name = basename(entry.path);
    /** Whether the path, as `st` found it, holds something of its own (not a symlink, not empty). */
    const holding = (st: Stats | undefined) => !!st && !st.isSymbolicLink() && (st.isDirectory() ? readdirSync(at(parent, name)).length > 0 : st.size > 0);
    const here = lstatSync(at(parent, name), { throwIfNoEntry: false });
    const linked = here?.isSymbolicLink() && readlinkSync(at(parent, name)) === entry.source;
    if (!mounted && !linked && holding(here)) {
      // Cut short after the copy was moved in: the root holds it.
      removeOwnLeftovers(parent, entry.path, 'unpersist');
      return false;
    }
    // Mounted or linked; or cut short after the mount was stopped, before the copy was moved in:
    // the path is empty, and storage still holds everything, so the copy is made again.
    if (!existsSync(entry.source)) throw new PersistError(`${entry.source} does not exist: nothing to copy back`);
    removeOwnLeftovers(parent, entry.path, 'unpersist');
    const from = held(() => openBeneath(entry.storage, dirname(entry.source)));
    let temp: TempDir;
    try {
      temp = held(() => makeTempDir(parent, `${basename(tempBeside(entry.path, 'unpersist'))}.`));
      const cp = copyTree(`/proc/self/fd/3/${basename(entry.source)}`, '/proc/self/fd/4/x', [from, temp.fd]);
      if (cp.status !== 0) {
        removeTempDir(temp);
        throw new PersistError(`cannot copy ${entry.source} back: ${cp.stderr.trim()}`);
      }
    } finally {
      closeSync(from);
    }
    let done = false;
    try {
      syncFileSystem(temp.fd);
      refuseWriters(entry.path);
      if (mounted) {
        systemctl('stop', mountUnitName(entry.path));
        if (readMountPoints().has(entry.path)) throw new PersistError(`${entry.path} is still mounted`);
      }
      // What the mount hid goes aside, not away, unless it is only an older copy of what storage
      // holds (a persist cut short before it cleared it): it may be someone's data.
      const under = lstatSync(at(parent, name), { throwIfNoEntry: false });
      const hidden = holding(under);
      if (hidden && withinTree(at(parent, name), at(temp.fd, 'x'))) {
        renameSync(at(parent, name), at(temp.fd, 'old')); // deleted with the temporary folder
      } else if (hidden) {
        const aside = `${name}.impermanence-hidden-${Date.now()}`;
        renameSync(at(parent, name), at(parent, aside));
        say(`what the mount hid on the root is in ${dirname(entry.path)}/${aside}`);
      } else if (under?.isSymbolicLink() || under?.isFile()) {
        unlinkSync(at(parent, name)); // the symlink, or the empty mount point file
      }
      renameSync(at(temp.fd, 'x'), at(parent, name)); // over the empty mount point folder, or into the free name
      done = true;
    } finally {
      // Our copy, if it was not moved in (storage still holds all of it), and what was moved aside into it.
      try {
        removeTempDir(temp);
      } catch (err) {
        if (done) throw err;
      }
    }
    say(`copied ${entry.source} back to ${entry.path}`);
    return true;
  } finally {
    closeSync(parent);
  }
}

/** What `open` opens, or a PersistError saying why not. */
function held<T>(open: () => T): T {
  try {
    return open();
  } catch (err) {
    if (err instanceof PersistError) throw err;
    throw new PersistError((err as Error).message);
  }
}

function copyBackLeftovers(path: string): string[] {
  const dir = dirname(path);
  const name = basename(tempBeside(path, 'unpersist'));
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith(name)) : [];
}

/**
 * Our own temporary folders beside `path` (in the folder held by `dir`) left by a run cut short
 * this boot: redundant now, since what they were copied from is still there. Only folders of
 * root's (0700): anything else of that name is a user's, and stays. Older ones stay (after a
 * reboot a partial copy in storage may be all that is left of a wiped root; drift shows it as an
 * orphan).
 */
function removeOwnLeftovers(dir: number, path: string, what: 'adopt' | 'unpersist'): void {
  const prefix = `${basename(tempBeside(path, what))}.`;
  const boot = bootTime();
  for (const name of readdirSync(at(dir))) {
    if (!name.startsWith(prefix) || !isOwnTempDir(dir, name)) continue;
    try {
      const fd = openChild(dir, name);
      if (fstatSync(fd).ctimeMs / 1000 < boot) closeSync(fd);
      else removeTempDir({ parent: dir, fd, name });
    } catch {
      // still being removed by someone else, or busy: the next run takes it
    }
  }
}

/** Whether everything in tree `a` is in tree `b` the same (see sameTree): `a` holds nothing of its own. */
function withinTree(a: string, b: string): boolean {
  const sa = lstatSync(a);
  const sb = lstatSync(b, { throwIfNoEntry: false });
  if (!sb) return false;
  if (sa.isDirectory()) return sb.isDirectory() && readdirSync(a).every((n) => withinTree(`${a}/${n}`, `${b}/${n}`));
  return sameTree(a, b);
}

/** Whether two trees hold the same names, types, sizes, modes and times (what cp -a keeps). */
function sameTree(a: string, b: string): boolean {
  const sa = lstatSync(a);
  const sb = lstatSync(b);
  if (!sameEntry(sa, sb, a, b)) return false;
  if (!sa.isDirectory()) return true;
  const na = readdirSync(a).sort();
  const nb = readdirSync(b).sort();
  return na.length === nb.length && na.every((n, i) => n === nb[i] && sameTree(`${a}/${n}`, `${b}/${n}`));
}

/** Refuses while a process has a file below `path` open for writing: what it writes after the copy would be lost. */
function refuseWriters(path: string): void {
  const writers: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (target !== path && !isInside(target, path)) continue;
        const flags = parseInt(/^flags:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0', 8);
        if ((flags & 3) === 0) continue; // O_RDONLY
        const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        writers.push(`${comm} (PID ${pid}) writes ${target}`);
        break;
      } catch {
        // gone meanwhile
      }
    }
  }
  if (writers.length) throw new PersistError(`files below ${path} are open for writing; stop these first, or what they write next is lost:\n  ${writers.join('\n  ')}`);
}

/** impermanenced re-reads the config, if it runs (its state and drift follow the change). */
function tellDaemon(): void {
  spawnSync('systemctl', ['try-reload-or-restart', 'impermanence.service']);
}

function systemctl(...args: string[]): void {
  const r = spawnSync('systemctl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new PersistError(`systemctl ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
}
