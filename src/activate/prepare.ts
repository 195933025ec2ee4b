import { closeSync, constants, fstatSync, opendirSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parentsOf } from '../config/paths';
import { readMountPoints, storageIsMounted } from '../drift/mountinfo';
import type { PreparePlan } from '../generator/plan';
import { replaceFile } from '../shared/replace-file';
import { copyTree, makeTempDir, openBeneath, placeInto, removeTempDir, syncDir, syncFileSystem } from './as-root';

/**
 * What impermanence-prepare does for one storage root at boot, before anything is mounted from
 * it (see generator/plan.ts): refuse a storage root that is not there, create what tmpfiles
 * creates, and adopt into storage what the root holds and storage lacks. Nothing in storage is
 * ever deleted or overwritten here.
 */

/** Where the content found hidden under our mounts is recorded for the daemon (drift kind *shadowed*). */
export const SHADOWED_DIR = '/run/impermanence/shadowed';

/** Content on the root that a mount hides and that storage does not hold. */
export interface Shadowed { path: string; source: string; files: number; bytes: number }

export interface PrepareResult { adopted: string[]; shadowed: Shadowed[]; problems: string[] }

/** Why a storage root cannot be used, or undefined when it is a mounted filesystem of its own. */
export function storageProblem(storage: string, mountPoints = readMountPoints()): string | undefined {
  const st = lstatSync(storage, { throwIfNoEntry: false });
  if (!st) return `the storage ${storage} does not exist`;
  if (st.isSymbolicLink()) return `the storage ${storage} is a symlink; name the real folder`;
  if (!st.isDirectory()) return `the storage ${storage} is not a folder`;
  if (!storageIsMounted(storage, '/', mountPoints)) {
    return `the storage ${storage} is not mounted: it is a folder on the root filesystem, which is wiped at every boot`;
  }
  return undefined;
}

/** What a user is told when a storage root is refused: how to have it mounted in time. */
export const MOUNT_EARLY_HINT =
  'nothing is persisted from it. Mount it before local-fs.target (an /etc/fstab line); if the config or /etc/machine-id is on it, ' +
  'the initrd must mount it: add x-initrd.mount to its options in /etc/fstab, or rd.systemd.mount-extra=WHAT:WHERE[:TYPE[:OPTIONS]] ' +
  'to the kernel command line';

/**
 * Adopts, for every bind-mounted entry of a storage root, what the root holds and storage does
 * not: a directory whose source is missing or empty, a file whose source is missing. The copy is
 * made by `cp -a` (owner, mode, ACLs, xattrs, timestamps, hard links, symlinks and special
 * files) into a root-only temporary folder beside the source, synced, then renamed into place: a
 * crash leaves either nothing or a whole copy at the source, and at worst a partial copy in the
 * temporary folder, which drift reports as an orphan (never deleted: it may be all that is left).
 * A directory only replaces an empty one; a file is linked into place, which fails rather than
 * overwrite. When storage already holds the entry, storage wins: what only the root holds is
 * recorded as shadowed.
 */
export function adoptAll(plan: PreparePlan, root = ''): PrepareResult {
  const result: PrepareResult = { adopted: [], shadowed: [], problems: [] };
  for (const m of plan.mounts) {
    try {
      const outcome = adopt(m.kind, root + m.path, root + m.source, root + plan.storage);
      if (outcome === 'adopted') result.adopted.push(m.path);
      else if (outcome) result.shadowed.push({ path: m.path, source: m.source, ...outcome });
    } catch (err) {
      result.problems.push(`${m.path}: not adopted into ${m.source}: ${(err as Error).message}`);
    }
  }
  return result;
}

function adopt(kind: 'directory' | 'file', path: string, source: string, storage: string): 'adopted' | { files: number; bytes: number } | undefined {
  const here = lstatSync(path, { throwIfNoEntry: false });
  if (!here) return undefined;
  const want = kind === 'directory' ? here.isDirectory() : here.isFile();
  if (!want) return undefined; // a symlink or the wrong type: the mount fails on its own, and says so
  // Nothing we copy from or into may sit below a symlink: we act as root.
  refuseSymlinkedParents(path, '');
  refuseSymlinkedParents(source, storage);
  const there = lstatSync(source, { throwIfNoEntry: false });
  if (kind === 'directory') {
    const empty = !holdsAnything(path);
    if (there && !there.isDirectory()) return undefined;
    if (there && holdsAnything(source)) return empty ? undefined : shadowedBy(path, source, here.dev);
    if (empty) return undefined;
  } else if (there) {
    return undefined; // the root's older copy of a file storage holds is not news
  }
  copyAside(path, source, storage, kind, here);
  return 'adopted';
}

/** Whether a folder holds anything, reading one name only (a storage folder may hold millions). */
function holdsAnything(dir: string): boolean {
  const d = opendirSync(dir);
  try {
    return d.readSync() !== null;
  } finally {
    d.closeSync();
  }
}

/** The temporary name beside `path` under which a copy of ours is made (adopt: into storage; unpersist: back onto the root), before mkdtemp's suffix. */
export function tempBeside(path: string, what: 'adopt' | 'unpersist'): string {
  return `${dirname(path)}/.${basename(path)}.impermanence-${what}`;
}

/**
 * A full copy of `path` put at `source`, never over anything there. We act as root on paths
 * users may write: what is copied is what was opened, not what the name points at a moment later.
 * `path` is opened without following a symlink (O_NOFOLLOW), checked through the descriptor
 * (fstat: the type and inode seen before; /proc/self/fd: no symlinked parent on the way), and cp
 * reads the descriptor (/proc/self/fd/3), so a swap after the check changes nothing. The copy is
 * written into a folder of root's own (0700, mkdtemp) beside the source, which the folder of the
 * source is held open for (reached from the storage root without a symlink): nothing a user makes
 * in her storage folder can redirect it (see as-root.ts). Synced, then renamed into place (a
 * folder: over an empty one only) or linked (a file: fails rather than overwrite). A crash leaves
 * at worst a partial copy in that root-only folder (`.NAME.impermanence-adopt.XXXXXX`).
 */
function copyAside(path: string, source: string, storage: string, kind: 'directory' | 'file', seen: Stats): void {
  const into = openBeneath(storage, dirname(source));
  try {
    const fd = openChecked(path, kind, seen);
    try {
      const temp = makeTempDir(into, `${basename(tempBeside(source, 'adopt'))}.`);
      let placed = false;
      try {
        const cp = copyTree('/proc/self/fd/3', '/proc/self/fd/4/x', [fd, temp.fd], true);
        if (cp.status !== 0) throw new Error(`cp: ${(cp.stderr || cp.error?.message || `exit ${cp.status}`).trim()} (a partial copy may be left in ${dirname(source)}/${temp.name})`);
        syncFileSystem(temp.fd);
        if (!placeInto(temp, 'x', into, basename(source))) throw new Error(`${source} appeared while ${path} was being copied: it is kept, and the copy is left in ${dirname(source)}/${temp.name}`);
        placed = true;
      } finally {
        if (placed) removeTempDir(temp);
        else closeSync(temp.fd);
      }
    } finally {
      closeSync(fd);
    }
    syncDir(into);
  } finally {
    closeSync(into);
  }
}

/** `path` opened without following symlinks, and checked through the descriptor to be what `seen` was. */
export function openChecked(path: string, kind: 'directory' | 'file', seen: Stats): number {
  // O_NONBLOCK: a FIFO swapped in must not hang us; O_NOFOLLOW: a symlink swapped in fails (ELOOP).
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | (kind === 'directory' ? constants.O_DIRECTORY : 0));
  try {
    const st = fstatSync(fd);
    if ((kind === 'directory' ? !st.isDirectory() : !st.isFile()) || st.ino !== seen.ino || st.dev !== seen.dev) {
      throw new Error(`${path} changed while it was being adopted (replaced by something else): nothing was copied; run it again`);
    }
    const reached = readlinkSync(`/proc/self/fd/${fd}`);
    if (reached !== path) throw new Error(`${path} is reached through a symlink (${reached}): nothing was copied`);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** A symlink root did not make (say a user, in a folder they own) could send our copy elsewhere. */
function refuseSymlinkedParents(path: string, below: string): void {
  for (const dir of parentsOf(path)) {
    if (below && dir.length <= below.length) continue;
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (st?.isSymbolicLink() && st.uid !== 0) throw new Error(`${dir} is a symlink made by uid ${st.uid}`);
  }
}

/** Files under `path` (not crossing into other filesystems) whose place in `source` is empty. At most 100,000 looked at. */
function shadowedBy(path: string, source: string, dev: number): { files: number; bytes: number } | undefined {
  let files = 0;
  let bytes = 0;
  let budget = 100_000;
  const visit = (rel: string) => {
    let names: string[];
    try {
      names = readdirSync(path + rel);
    } catch {
      return;
    }
    for (const name of names) {
      if (--budget < 0) return;
      const r = `${rel}/${name}`;
      let st: Stats;
      try {
        st = lstatSync(path + r);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (st.dev === dev) visit(r);
      } else if (!lstatSync(source + r, { throwIfNoEntry: false })) {
        files++;
        bytes += st.size;
      }
    }
  };
  visit('');
  return files ? { files, bytes } : undefined;
}

/** Records what is shadowed for the daemon: one file per storage root, replaced whole. */
export function recordShadowed(name: string, shadowed: Shadowed[], dir = SHADOWED_DIR): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  replaceFile(`${dir}/${name}.json`, JSON.stringify(shadowed) + '\n', { mode: 0o600 });
}
