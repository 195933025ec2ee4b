import { readFileSync } from 'node:fs';

/** Undoes the octal escapes the kernel uses in mountinfo for space, tab, newline and backslash. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export interface MountInfo {
  /** The folder of the filesystem mounted (a btrfs subvolume's path, `/@root`). */
  root: string;
  mountPoint: string;
  fstype: string;
  source: string;
}

/** The lines of /proc/self/mountinfo (proc(5)), in order, unescaped. */
export function parseMountInfo(mountinfo: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    const f = (left ?? '').split(' ');
    if (f[4] === undefined) continue;
    const [fstype, source] = (right ?? '').split(' ');
    mounts.push({ root: unescape(f[3]!), mountPoint: unescape(f[4]), fstype: fstype ?? '', source: unescape(source ?? '') });
  }
  return mounts;
}

/** The mount points in /proc/self/mountinfo: the fifth field, unescaped. */
export function parseMountPoints(mountinfo: string): Set<string> {
  return new Set(parseMountInfo(mountinfo).map((m) => m.mountPoint));
}

export function readMountPoints(file = '/proc/self/mountinfo'): Set<string> {
  return parseMountPoints(readFileSync(file, 'utf8'));
}

/** The mount that holds `path` (absolute, normalized): the deepest mount point at or above it. */
export function mountOf(path: string, mountPoints: Set<string>): string {
  for (let p = path; ; p = p.slice(0, p.lastIndexOf('/')) || '/') {
    if (mountPoints.has(p)) return p;
    if (p === '/') return '/';
  }
}

/**
 * Whether a storage root is on a mounted filesystem of its own, rather than a folder on the
 * root filesystem, which is wiped at every boot: bind mounts from such a folder would keep
 * everything on the wiped root and lose it silently. `root`: "/" on a real system, a folder
 * for a sandbox (where the storage must be mounted below it).
 */
export function storageIsMounted(storage: string, root: string, mountPoints: Set<string>): boolean {
  return mountOf(root === '/' ? storage : root + storage, mountPoints) !== mountOf(root, mountPoints);
}
