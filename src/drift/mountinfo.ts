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
