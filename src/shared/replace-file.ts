import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fchownSync, fsyncSync, lstatSync, openSync, readlinkSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
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
    temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
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
