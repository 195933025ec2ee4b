import { readFileSync } from 'node:fs';

/**
 * When this system (or container) last booted, in seconds since the epoch: PID 1's start. On a
 * root wiped at boot, what changed since then was written since the wipe. PID 1's start (field 22
 * of /proc/1/stat, in USER_HZ = 100 ticks after the kernel's boot) is set against the uptime, both
 * counted from the same boot, to 10 ms; /proc/stat's btime would only give whole seconds.
 */
export function bootTime(): number {
  const stat = readFileSync('/proc/1/stat', 'utf8');
  const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]); // fields[0] is field 3
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Date.now() / 1000 - uptime + startTicks / 100;
}
