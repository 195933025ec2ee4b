import { readFileSync } from 'node:fs';

/**
 * When this system (or container) last booted, in seconds since the epoch: PID 1's start. On a
 * root wiped at boot, what changed since then was written since the wipe. /proc/1/stat gives the
 * start in clock ticks after the kernel's boot (USER_HZ is 100 on Linux); /proc/stat gives that boot.
 */
export function bootTime(): number {
  const btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
  const stat = readFileSync('/proc/1/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(fields[19]); // field 22 of proc(5); fields[0] is field 3
  return btime + startTicks / 100;
}
