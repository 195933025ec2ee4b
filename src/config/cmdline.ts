import { existsSync, readFileSync } from 'node:fs';

/**
 * Config folders named on the kernel command line with `impermanence.config=DIR` (repeatable).
 * This is how the config is found on a freshly wiped root when it lives on the storage itself,
 * e.g. `impermanence.config=/persist/etc/impermanence/persist.d`. In a container, systemd takes
 * its own arguments as the command line (proc_cmdline()), and so do we: they are only in
 * /proc/1/cmdline there, while /proc/cmdline is the host's.
 */
export function configDirsFromCmdline(): string[] {
  const inContainer =
    (process.env.SYSTEMD_VIRTUALIZATION ?? '').startsWith('container:') || !!process.env.container || existsSync('/run/systemd/container');
  let words: string[];
  try {
    words = inContainer
      ? readFileSync('/proc/1/cmdline', 'utf8').split('\0').slice(1)
      : readFileSync('/proc/cmdline', 'utf8').trim().split(/\s+/);
  } catch {
    return [];
  }
  const prefix = 'impermanence.config=';
  return words.filter((w) => w.startsWith(prefix) && w.length > prefix.length + 1 && w[prefix.length] === '/').map((w) => w.slice(prefix.length));
}
