import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fchmodSync, fchownSync, fsyncSync, lstatSync, openSync, readdirSync, readlinkSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * Replaces `file` with `text`, whole or not at all: written to a temporary file in the same
 * folder, flushed to disk (fsync), then renamed over the file. Writing in place truncates first:
 * on a full disk that left the user's notify.toml cut and unparsable (issue 13.14), and a crash
 * mid-write does the same. If anything fails the old file stays as it was, the temporary file is
 * removed, and the error names the file.
 *
 * A symlink stays a symlink (dotfile managers link config files): its target is replaced. The
 * old file's mode is kept (and its owner, where we may set it); a new file gets `mode`. A hard
 * link to the old file keeps the old content: rename makes a new inode.
 */
export function replaceFile(file: string, text: string, opts: { mode?: number } = {}): void {
  let temp: string | undefined;
  let fd: number | undefined;
  try {
    const target = linkTarget(file);
    const old = statSync(target, { throwIfNoEntry: false });
    const mode = old ? old.mode & 0o7777 : (opts.mode ?? 0o644);
    temp = join(dirname(target), tempName(target));
    fd = openSync(temp, 'wx', mode);
    fchmodSync(fd, mode); // past the umask, as the old file had it
    if (old && old.uid !== process.getuid?.()) keepOwner(fd, old.uid, old.gid);
    writeFileSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(temp, target);
    temp = undefined;
    syncFolder(dirname(target));
  } catch (err) {
    if (fd !== undefined) quietly(() => closeSync(fd!));
    if (temp !== undefined) quietly(() => unlinkSync(temp!));
    throw new Error(`cannot write ${file} (${(err as Error).message}); it is unchanged`);
  }
}

/** `.NAME.PID-RANDOM.tmp`: the writer's PID in the name, so that a later run can tell a leftover (see removeStaleTemps). */
function tempName(target: string): string {
  return `.${basename(target)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
}

/**
 * Removes what replaceFile left beside `file` when its process was killed between writing the
 * temporary file and renaming it (kill -9, a power cut): temporary files of a PID that no longer
 * runs. Those of a running process are its own business; the file itself is never touched.
 * Returns the names removed.
 */
export function removeStaleTemps(file: string): string[] {
  const target = linkTarget(file);
  const dir = dirname(target);
  const prefix = `.${basename(target)}.`;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = /^(\d+)-[0-9a-f]{12}\.tmp$/.exec(name.slice(prefix.length))?.[1];
    if (!pid || existsSync(`/proc/${pid}`)) continue;
    try {
      if (!lstatSync(join(dir, name)).isFile()) continue;
      unlinkSync(join(dir, name));
      removed.push(name);
    } catch {
      // gone meanwhile
    }
  }
  return removed;
}

/** Clean-up after a failure: its own failure must not hide the first. */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // the first error is the one to report
  }
}

/** The file a path names: the path itself, or where its symlink (even a dangling one) points. */
function linkTarget(file: string): string {
  try {
    return realpathSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink() ? resolve(dirname(file), readlinkSync(file)) : file;
}

/** Gives the new file the old one's owner; one we may not give it (not root) stays ours. */
function keepOwner(fd: number, uid: number, gid: number): void {
  try {
    fchownSync(fd, uid, gid);
  } catch {
    // EPERM: a user replacing a file of another owner in a folder of their own.
  }
}

/** The rename reaches the disk with the folder's entry; best effort (some filesystems refuse). */
function syncFolder(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // EINVAL on some filesystems: the data itself is on disk already.
  }
}
