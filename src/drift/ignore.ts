/**
 * Paths whose contents are never reported as about to be lost: they are meant to be thrown away
 * (or are not files at all). `[drift] ignore` in the config adds to them.
 * "*" stands for one whole path component: "/home/*\/.cache" is every user's cache.
 */
export const DEFAULT_IGNORE = [
  '/tmp',
  '/var/tmp',
  '/run',
  '/proc',
  '/sys',
  '/dev',
  '/var/cache',
  '/var/lib/apt/lists',
  '/root/.cache',
  '/home/*/.cache',
  '/var/lib/systemd/random-seed',
  '/var/lib/systemd/timers',
  '/lost+found',
];

/** A test for "is this path, or a path above it, ignored?" */
export function ignoreMatcher(patterns: readonly string[]): (path: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const globs = patterns.filter((p) => p.includes('*'));
  if (globs.length === 0) return (path) => exact.has(path);
  // One regular expression for every glob: called for each file of a scan, it must be cheap.
  const escape = (c: string) => (c === '*' ? '[^/]+' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`^(?:${globs.map((g) => g.split('/').map(escape).join('/')).join('|')})$`);
  return (path) => exact.has(path) || re.test(path);
}
