import { spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, fstatSync, fsyncSync, linkSync, lstatSync, mkdtempSync, openSync, readdirSync, readlinkSync, renameSync, rmdirSync, unlinkSync } from 'node:fs';
import { basename, dirname } from 'node:path';

/**
 * What root does in folders that users may write (homes, their storage folders): every name is
 * looked up in a folder held open by descriptor (through /proc/self/fd/N/NAME, the kernel's
 * openat), never through a symlink, and whatever is written is written first into a folder of
 * root's own (mode 0700, made with mkdtemp: O_EXCL, never through a symlink), then renamed or
 * linked into place.
 *
 * What a user can still do is harmless: she cannot enter or create anything in root's folder, nor
 * move it to another folder (that needs write access to it); she may rename it within her folder,
 * or swap the name for a symlink, but root reaches it by descriptor, not by name. She may rename
 * her own folder, or put a symlink where it was, between our look and our rename: root holds the
 * folder itself, so the rename lands in that folder wherever it now is, which is one she may
 * write anyway: only her own data (the entry root puts back where it was) goes where she moved it,
 * and nothing is written through a link or outside the folders she could write herself.
 */

/** The path of `name` in the folder held by `fd` (no name: the folder itself), for this process. */
export function at(fd: number, name?: string): string {
  return name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`;
}

// (Node opens every descriptor close-on-exec; runWith hands some to a child on purpose.)
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** The folder `name` in the folder held by `dir`, opened without following a symlink. */
export function openChild(dir: number, name: string): number {
  return openSync(at(dir, name), DIR_FLAGS);
}

/**
 * The folder `path` opened below `top`, one name at a time, none of them a symlink (as
 * mount.impermanence opens what it mounts: RESOLVE_NO_SYMLINKS below the storage root, and from
 * "/" for the mount point). `top` itself is the admin's (a storage root, or "/"): followed.
 */
export function openBeneath(top: string, path: string): number {
  const rest = path === top ? '' : top === '/' ? path.slice(1) : path.startsWith(`${top}/`) ? path.slice(top.length + 1) : undefined;
  if (rest === undefined) throw new Error(`${path} is not below ${top}`);
  let fd = openSync(top, constants.O_RDONLY | constants.O_DIRECTORY);
  let reached = top === '/' ? '' : top;
  try {
    for (const name of rest.split('/').filter(Boolean)) {
      if (name === '.' || name === '..') throw new Error(`${path}: "${name}" in a path`);
      reached += `/${name}`;
      let next: number;
      try {
        next = openChild(fd, name);
      } catch (err) {
        const st = lstatSync(at(fd, name), { throwIfNoEntry: false });
        if (st?.isSymbolicLink()) throw new Error(`${reached} is a symlink (made by uid ${st.uid}): nothing is done through it`);
        throw new Error(`cannot open the folder ${reached}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      closeSync(fd);
      fd = next;
    }
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** A folder of root's own (0700) made in the folder held by `parent`: held by `fd`, named `name` there (for now). */
export interface TempDir { parent: number; fd: number; name: string }

export function makeTempDir(parent: number, prefix: string): TempDir {
  const name = basename(mkdtempSync(at(parent, prefix))); // mkdir: never through a symlink
  const fd = openChild(parent, name);
  const st = fstatSync(fd);
  if (st.uid !== 0 || (st.mode & 0o077) !== 0) {
    // Swapped for someone else's between the mkdir and the open: not ours, left alone.
    closeSync(fd);
    throw new Error(`the temporary folder ${name} was replaced while it was made: nothing was copied`);
  }
  return { parent, fd, name };
}

/** Whether `name` in the folder held by `parent` is one of root's temporary folders (0700, root's). */
export function isOwnTempDir(parent: number, name: string): boolean {
  const st = lstatSync(at(parent, name), { throwIfNoEntry: false });
  return !!st && st.isDirectory() && st.uid === 0 && (st.mode & 0o077) === 0;
}

/**
 * Removes root's temporary folder with what is in it: its content through its descriptor
 * (coreutils rm, which never follows a symlink below what it is given), then the folder by the
 * name it has now (a user may have renamed it), if that name is still this folder.
 */
export function removeTempDir(temp: TempDir): void {
  try {
    for (const name of readdirSync(at(temp.fd))) removeTree(temp.fd, name);
    const now = readlinkSync(at(temp.fd));
    if (now.endsWith(' (deleted)')) return;
    const name = basename(now);
    const there = lstatSync(at(temp.parent, name), { throwIfNoEntry: false });
    const self = fstatSync(temp.fd);
    if (dirname(now) === readlinkSync(at(temp.parent)) && there?.isDirectory() && there.ino === self.ino && there.dev === self.dev) rmdirSync(at(temp.parent, name));
  } finally {
    closeSync(temp.fd);
  }
}

/** `name` in the folder held by `dir`, and all below it, deleted without following a symlink (coreutils rm). */
export function removeTree(dir: number, name: string): void {
  succeeded('rm', runWith(['rm', '-rf', '--one-file-system', '--', `/proc/self/fd/3/${name}`], [dir]));
}

/**
 * Runs argv with `fds` given to it as descriptors 3, 4, …, which dies with us (setpriv
 * --pdeathsig): a copy cut short by kill -9 must not go on writing beside what the next run makes.
 */
export function runWith(argv: string[], fds: number[] = []): ReturnType<typeof spawnSync> & { stderr: string } {
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  return spawnSync(setpriv ?? argv[0]!, setpriv ? ['--pdeathsig', 'KILL', '--', ...argv] : argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe', ...fds] });
}

/** Throws what `tool` said, run by runWith, when it failed. */
export function succeeded(tool: string, r: ReturnType<typeof runWith>): void {
  if (r.status !== 0) throw new Error(`${tool}: ${(r.stderr || `exit ${r.status}`).trim()}`);
}

/**
 * `cp -a SOURCE TARGET` (owner, mode, ACLs, xattrs, times, hard links, symlinks as such, special
 * files), with `fds` as descriptors 3, 4, … (SOURCE and TARGET name them as /proc/self/fd/3/…).
 * `follow`: SOURCE is itself a magic link to an opened file (/proc/self/fd/3), which -H follows to
 * the file; below it, -a copies symlinks as such.
 */
export function copyTree(source: string, target: string, fds: number[] = [], follow = false): ReturnType<typeof spawnSync> & { stderr: string } {
  return runWith(['cp', '-a', ...(follow ? ['-H'] : []), '--no-target-directory', '--', source, target], fds);
}

/** Flushes the filesystem of the folder held by `fd` to disk (syncfs). */
export function syncFileSystem(fd: number): void {
  succeeded('sync', runWith(['sync', '--file-system', '/proc/self/fd/3'], [fd]));
}

/** fsync of the folder held by `fd`: the names renamed or linked into it are on disk. */
export function syncDir(fd: number): void {
  fsyncSync(fd);
}

/**
 * Puts `from` (in root's temporary folder) at `name` in the folder held by `into`, never over
 * anything: a folder by rename (which replaces an empty folder only), anything else by link (which
 * fails if the name is taken), then unlinked from the temporary folder. Returns false when the
 * name is taken (what is there stays, and so does our copy, for the caller).
 */
export function placeInto(temp: TempDir, from: string, into: number, name: string): boolean {
  try {
    if (lstatSync(at(temp.fd, from)).isDirectory()) renameSync(at(temp.fd, from), at(into, name));
    else {
      linkSync(at(temp.fd, from), at(into, name));
      unlinkSync(at(temp.fd, from));
    }
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'ENOTDIR' || code === 'EISDIR') return false;
    throw err;
  }
}
