/**
 * impermanencectl's commands and options: the one table that parsing (args.ts), `help`, the man
 * page's COMMANDS and OPTIONS sections and the shell completions (scripts/build-docs.mjs) are
 * made from. Pure data: no I/O.
 */

import { KEEP_PREVIOUS } from '../config/wipe';

/** What a value (or a positional argument) is, for the completions. */
export type Complete = 'dir' | 'file' | 'path' | 'entry' | 'storage' | 'user' | 'command' | 'none' | readonly string[];

export interface OptionSpec {
  name: string;
  short?: string;
  /** The value's name (`DIR`); absent for a flag. */
  value?: string;
  /** Takes `=VALUE` only (`--json[=MODE]`); bare, it means `implied`. */
  optional?: { implied: string };
  complete?: Complete;
  multiple?: boolean;
  help: string;
}

export interface CommandSpec {
  name: string;
  /** The synopsis after the command name (`PATH`, `on|off|status`). */
  args: string;
  minArgs: number;
  maxArgs: number;
  complete?: Complete;
  group: 'offline' | 'bus' | 'root' | 'wipe' | 'user' | 'help';
  summary: string;
  /** Paragraphs for `help COMMAND` and the man page. */
  description: string;
  options: readonly string[];
  /** The JSON document's schema name (see json.ts), if the command has --json. */
  json?: string;
}

export const OPTIONS: readonly OptionSpec[] = [
  { name: 'config', value: 'DIR', multiple: true, complete: 'dir', help: 'read the config from DIR instead of the system folders (repeatable)' },
  { name: 'root', value: 'DIR', complete: 'dir', help: 'resolve users and storage under DIR (an image or a mounted root)' },
  { name: 'out', value: 'DIR', complete: 'dir', help: 'the folder to write into ("-" prints to standard output)' },
  { name: 'since', value: 'WHEN', complete: ['boot', 'all'], help: 'count files changed since "boot" (default), "all", or seconds since the epoch' },
  { name: 'offline', help: 'scan here instead of asking impermanenced' },
  { name: 'previous-boot', help: "diff: what the previous boot wrote outside persisted paths, from its kept old root (the btrfs wipe)" },
  { name: 'boot', value: 'N', complete: 'none', help: 'which kept old root: the Nth boot back (1, the default, is the previous one)' },
  { name: 'to', value: 'DIR', complete: 'dir', help: 'restore: put the copy under DIR instead of its own place' },
  { name: 'rescan', help: 'diff: have impermanenced walk the root again instead of answering from its live watch' },
  { name: 'no-scan', help: 'metrics: write the drift the daemon has, without asking it to scan first' },
  { name: 'storage', value: 'ROOT', complete: 'storage', help: 'the storage root to persist into (when there are several)' },
  { name: 'user', value: 'NAME', complete: 'user', help: 'persist PATH inside the home of user NAME' },
  { name: 'json', value: 'MODE', optional: { implied: 'pretty' }, complete: ['pretty', 'short', 'off'], help: 'print data as JSON: "pretty" (the default for a bare --json), "short" (one line) or "off"' },
  { name: 'no-legend', help: 'leave out column headings and the closing summary' },
  { name: 'yes', help: 'wipe init: make the pristine without asking' },
  { name: 'quiet', short: 'q', help: 'print nothing but errors (the exit code tells)' },
  { name: 'no-ask-password', help: 'do not let polkit ask for a password (fail instead)' },
  { name: 'bus', value: 'ADDRESS', complete: 'none', help: 'the bus to use (default: the system bus, or $DBUS_SYSTEM_BUS_ADDRESS)' },
  { name: 'no-pager', help: 'accepted for systemd compatibility; impermanencectl never pages its output' },
  { name: 'help', short: 'h', help: 'show this help (or the command\'s, after a command) and exit' },
  { name: 'version', help: 'show the version and exit' },
];

/** Accepted by every command. */
export const COMMON = ['help', 'version', 'no-pager'] as const;

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'check', args: '', minArgs: 0, maxArgs: 0, group: 'offline', json: 'check',
    summary: 'check the config; exit 0 if valid, 1 if not',
    description: 'Reads the config folders (or those given with --config) as the generator does at boot and prints one line per problem, naming the file, the entry and what is wrong. Entries the generator would refuse on this machine (a symlinked storage source) are problems too. Exit 0 if the config is valid, 1 if not.',
    options: ['config', 'root', 'json', 'quiet'],
  },
  {
    name: 'generate', args: '--out DIR', minArgs: 0, maxArgs: 0, group: 'offline', json: 'generate',
    summary: 'write what impermanence-generator would write into DIR ("-" prints it)',
    description: 'Writes the units and tmpfiles.d rules the generator would write at boot into DIR, all or nothing (DIR must be empty or new), or prints them with --out -. Entries the generator would refuse are reported as by check, and the rest is written; exit 1 then.',
    options: ['out', 'config', 'root', 'json', 'quiet'],
  },
  {
    name: 'diff', args: '', minArgs: 0, maxArgs: 0, group: 'offline', json: 'diff',
    summary: 'drift: what will be lost at reboot, what is not in place, orphans in storage',
    description: 'Lists what was written outside persisted paths since boot (grouped, sized, ranked, with the config line that would keep it), declared paths that are not in place, persisted symlinks replaced by another file, content in storage no entry declares, and owner or mode drift in storage. Asks impermanenced (Scan), which answers from its live watch when that is complete (a full walk otherwise, or with --rescan), or scans right here with --offline, --root or --config. Exit 3 when there is drift. With --previous-boot [--boot N], the same report for what that boot wrote, read from its kept old root (the btrfs wipe keeps them; see wipe).',
    options: ['config', 'root', 'since', 'offline', 'rescan', 'previous-boot', 'boot', 'json', 'no-legend', 'quiet', 'no-ask-password', 'bus'],
  },
  {
    name: 'status', args: '', minArgs: 0, maxArgs: 0, group: 'bus', json: 'status',
    summary: "the daemon's state, config and counts; exit 3 if degraded",
    description: "Shows impermanenced's state (ok, degraded, invalid-config), its version, how many entries are in place, the storage roots, the config files in effect and their problems. Exit 0 if ok, 3 if degraded, 1 if the config is invalid.",
    options: ['json', 'quiet', 'bus'],
  },
  {
    name: 'list', args: '', minArgs: 0, maxArgs: 0, group: 'bus', json: 'list',
    summary: 'every persisted entry and whether it is in place',
    description: 'One line per persisted entry you may see: its path, kind (directory or file), state (mounted, unmounted, linked, unlinked, replaced) and storage root.',
    options: ['json', 'no-legend', 'quiet', 'bus'],
  },
  {
    name: 'reload', args: '', minArgs: 0, maxArgs: 0, group: 'bus', json: 'reload',
    summary: 'make the daemon re-read the config (polkit: org.impermanence.reload)',
    description: 'Asks impermanenced to re-read the config (as systemctl reload impermanence does) and says what it has now. A bad config changes nothing but the state: the last good config stays in effect, and reload exits 1 with its problems.',
    options: ['json', 'quiet', 'no-ask-password', 'bus'],
  },
  {
    name: 'monitor', args: '', minArgs: 0, maxArgs: 0, group: 'bus', json: 'monitor',
    summary: "print the daemon's events as they come, until interrupted",
    description: 'Prints one line per event of impermanenced as it happens: an entry going in or out of place, drift appearing or resolved, a reload, scan progress. With --json, one JSON object per line. Runs until interrupted.',
    options: ['json', 'bus'],
  },
  {
    name: 'metrics', args: '', minArgs: 0, maxArgs: 0, group: 'bus',
    summary: "state, drift and config validity in Prometheus's text format, for node_exporter",
    description: "Asks impermanenced for the drift now (Scan: from its live watch when that is complete, else a full scan; not with --no-scan), its entries and its drift, checks the config on disk as check does, and writes them in Prometheus's text format for node_exporter's textfile collector: to /var/lib/prometheus/node-exporter/impermanence.prom, replaced whole, or to --out FILE.prom (- prints them). When the daemon cannot be reached the file still says impermanence_up 0. impermanence-metrics.timer runs it every 5 minutes.",
    options: ['out', 'no-scan', 'config', 'root', 'bus'],
  },
  {
    name: 'import', args: 'nix FILE.json|-', minArgs: 2, maxArgs: 2, complete: 'file', group: 'offline',
    summary: "NixOS's environment.persistence (nix eval --json) as our TOML",
    description: "Turns what `nix eval --json` prints of a NixOS host's environment.persistence (see the README for the --apply expression) into our TOML, on standard output or into a new file with --out FILE.toml (never overwritten). What cannot be carried over is named on standard error and in comments at the top. Exit 0 when the result passes check, 1 when it does not.",
    options: ['out', 'root'],
  },
  {
    name: 'persist', args: 'PATH', minArgs: 1, maxArgs: 1, complete: 'path', group: 'root',
    summary: 'copy PATH into storage, declare it in 50-local.toml and mount it now',
    description: 'As root, without a reboot: copies what PATH holds into storage, adds it to 50-local.toml (in the first impermanence.config= folder, else /etc/impermanence/persist.d) and mounts it now. --storage ROOT when there are several storage roots; --user NAME for a path inside a home. Run by another user, it asks impermanenced (Persist, polkit: org.impermanence.persist), which runs the same command as root in a transient systemd unit.',
    options: ['storage', 'user', 'quiet', 'no-ask-password', 'bus'],
  },
  {
    name: 'unpersist', args: 'PATH', minArgs: 1, maxArgs: 1, complete: 'entry', group: 'root',
    summary: 'copy PATH back onto the root, stop its mount, take it out of 50-local.toml',
    description: 'As root, without a reboot: copies what PATH holds back onto the root, stops the mount and takes the entry out of 50-local.toml. The copy in storage stays (an orphan): nothing is deleted. Run by another user, it asks impermanenced (Unpersist), if polkit agrees.',
    options: ['quiet', 'no-ask-password', 'bus'],
  },
  {
    name: 'wipe', args: 'config|status|init|update -- COMMAND...', minArgs: 1, maxArgs: Infinity, complete: ['config', 'status', 'init', 'update'], group: 'wipe',
    summary: 'the wipe at boot: its settings for the initrd, how it went, and the pristine it starts from',
    description: `wipe config prints the [wipe] settings as the initrd reads them (the dracut, initramfs-tools and mkinitcpio hooks bake them into /etc/impermanence/wipe.conf); exit 3 when no file declares [wipe]. wipe status shows this boot's wipe (done, skipped, or refused: exit 3), the pristine and the previous ones, the kept old roots and which the next wipe deletes. wipe init makes the read-only pristine ([wipe] from) from the running root: it first shows what was written outside persisted paths since boot (the drift it would bake in) and asks (--yes does not); it never replaces a pristine. wipe update -- COMMAND... runs COMMAND (e.g. apt-get upgrade) chrooted into a new snapshot of the pristine; on success that becomes the pristine and the previous one is kept as FROM.<UTC time> (the ${KEEP_PREVIOUS} newest are kept), on failure it is deleted and the pristine is unchanged; the exit code is COMMAND's. The running root is not changed: the next boot starts from the new pristine.`,
    options: ['config', 'root', 'yes', 'quiet'],
  },
  {
    name: 'restore', args: 'PATH', minArgs: 1, maxArgs: 1, complete: 'path', group: 'wipe',
    summary: "copy PATH back from the previous boot's kept old root; never overwrites",
    description: 'Copies a file or folder back from the kept old root of the previous boot (--boot N for an older one), to its own place or under --to DIR. It never overwrites anything and never follows a symlink out of the old root.',
    options: ['boot', 'to', 'config', 'quiet'],
  },
  {
    name: 'notify', args: 'on|off|status', minArgs: 1, maxArgs: 1, complete: ['on', 'off', 'status'], group: 'user', json: 'notify',
    summary: 'turn your desktop drift notifications on or off, or say which they are',
    description: 'Turns drift notifications by impermanence-notify on or off for you (enable = in $XDG_CONFIG_HOME/impermanence/notify.toml), or says whether they are on.',
    options: ['json', 'quiet'],
  },
  {
    name: 'help', args: '[COMMAND]', minArgs: 0, maxArgs: 1, complete: 'command', group: 'help',
    summary: 'show this help, or a command\'s',
    description: "Shows the list of commands, or a command's own help.",
    options: [],
  },
];

export const GROUPS: Record<CommandSpec['group'], string> = {
  offline: 'Commands on config files (no daemon needed)',
  bus: 'Commands asking impermanenced on the system bus',
  root: 'Commands as root, on this system, without a reboot',
  wipe: 'The wipe at boot (README "Wiping the root")',
  user: 'Your own desktop notifications (impermanence-notify)',
  help: 'Help',
};

export const EXIT_CODES: ReadonlyArray<[number, string]> = [
  [0, 'success'],
  [1, 'failure: invalid config, a refused or failed call'],
  [2, 'usage error: an unknown command or option, a missing argument'],
  [3, 'degraded (status) or drift found (diff)'],
  [4, 'impermanenced not reachable'],
];

export function command(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function option(name: string): OptionSpec | undefined {
  return OPTIONS.find((o) => o.name === name);
}

/** The options a command takes, its own first, then the common ones. */
export function optionsOf(cmd: CommandSpec | undefined): OptionSpec[] {
  const names = cmd ? [...cmd.options, ...COMMON] : [...COMMON];
  return names.map((n) => option(n)!);
}
