import { readFileSync } from 'node:fs';

/**
 * The mount points in /proc/self/mountinfo (proc(5)): the fifth field, with the octal escapes
 * the kernel uses for space, tab, newline and backslash undone.
 */
export function parseMountPoints(mountinfo: string): Set<string> {
  const points = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return points;
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
