import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { configPath, readNotifyConfig, setEnabled, userHome } from '../agent/config';
import { InvalidConfig, type ConfigError } from '../config/errors';
import { configFolders } from '../config/load';
import { readConfig } from '../config/read';
import type { ResolvedConfig } from '../config/resolve';
import { collect, planUnits, type GeneratorOutput } from '../generator/plan';
import { sourceStatter, statOnRoot, writeOutput } from '../generator/write';
import { exitWhenFlushed } from '../shared/exit';
import { printable, printablePath } from '../shared/printable';
import { diffOffline, parseSince, printReport } from './diff';

const USAGE = `usage: impermanencectl COMMAND [OPTIONS]

Commands (offline, on config files):
  check                 check the config; exit 0 if valid, 1 if not
  generate --out DIR    write what impermanence-generator would write into DIR ("-" prints it)
  diff                  drift: what will be lost at reboot, what is not in place, orphans in
                        storage; asks impermanenced, or scans here with --offline, --root or --config

Commands (asking impermanenced on the system bus):
  status                the daemon's state, config and counts; exit 3 if degraded
  list                  every persisted entry and whether it is in place
  reload                make the daemon re-read the config (polkit: org.impermanence.reload)
  monitor               print the daemon's signals as they come, until interrupted

Commands (as root, on this system, without a reboot):
  persist PATH          copy what PATH holds into storage, add it to 50-local.toml (in the
                        first impermanence.config= folder, else /etc/impermanence/persist.d)
                        and mount it now
                        (--storage ROOT when there are several; --user NAME for a home)
  unpersist PATH        copy it back onto the root, stop the mount and take it out of
                        50-local.toml; the storage copy stays (an orphan)

Commands (the wipe at boot, see README "Wiping the root"):
  wipe config           print the [wipe] settings as the initrd reads them (the initrd
                        hooks bake this into /etc/impermanence/wipe.conf); exit 3 if none
  diff --previous-boot  what the previous boot wrote outside persisted paths, from its kept old
                        root (btrfs wipe; --boot N for older ones)
  restore PATH          copy PATH back from the previous boot's old root (--boot N; --to DIR
                        to put it elsewhere); never overwrites
  wipe status           this boot's wipe (done, skipped, or refused: exit 3), the pristine,
                        the old roots and which the next wipe deletes

Commands (your own desktop notifications, impermanence-notify):
  notify on|off|status  turn drift notifications on or off for you (in
                        $XDG_CONFIG_HOME/impermanence/notify.toml), or say which they are

Options:
  --config DIR          read the config from DIR instead of the system folders (repeatable)
  --root DIR            resolve users and storage under DIR (an image or mounted root)
  --json                print data as JSON
  --since WHEN          diff: count files changed since "boot" (default), "all", or epoch seconds
  --offline             diff: scan here instead of asking impermanenced
  --no-ask-password     do not let polkit ask for a password (fail instead)
  --no-pager            accepted for systemd compatibility; output is never paged
  --bus ADDRESS         the bus to use (default: the system bus, or $DBUS_SYSTEM_BUS_ADDRESS)
  -h, --help            show this help

Exit codes: 0 success, 1 failure (invalid config, refused or failed call), 2 usage error,
3 degraded (status) or drift found (diff), 4 impermanenced not reachable.
`;

/** Exit codes: 0 success, 1 invalid config or failed call, 2 usage error, 3 degraded, 4 daemon not reachable. */
export async function run(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', multiple: true },
        root: { type: 'string' },
        out: { type: 'string' },
        json: { type: 'boolean', default: false },
        'no-ask-password': { type: 'boolean', default: false },
        'no-pager': { type: 'boolean', default: false },
        bus: { type: 'string' },
        since: { type: 'string' },
        offline: { type: 'boolean', default: false },
        storage: { type: 'string' },
        'previous-boot': { type: 'boolean', default: false },
        boot: { type: 'string' },
        to: { type: 'string' },
        user: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    err(`impermanencectl: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    (values.help ? out : err)(USAGE);
    return values.help ? 0 : 2;
  }
  if (command === 'notify') return notify(rest, out, err);
  if (command === 'persist' || command === 'unpersist') return persistCommand(command, rest, values, out, err);
  if (command === 'restore' || (command === 'diff' && values['previous-boot'])) {
    const bad = missingFolder(values.root, values.config);
    if (bad) {
      err(`impermanencectl: ${bad}\n`);
      return 2;
    }
    return previousBootCommand(command, rest, values, out, err);
  }
  if (command === 'wipe') {
    const bad = missingFolder(values.root, values.config);
    if (bad) {
      err(`impermanencectl: ${bad}\n`);
      return 2;
    }
    const { dirs, required } = configFolders(values.config, values.root ?? '/');
    return wipeCommand(rest, dirs, required, values.root ?? '/', values.json, out, err);
  }
  if (rest.length) {
    err(`impermanencectl: unexpected argument ${JSON.stringify(rest[0])}\n`);
    return 2;
  }
  const missing = missingFolder(values.root, values.config);
  if (missing) {
    err(`impermanencectl: ${missing}\n`);
    return 2;
  }
  const root = values.root ?? '/';
  const { dirs, required } = configFolders(values.config, root);

  switch (command) {
    case 'check':
      return check(dirs, required, root, values.json, out, err);
    case 'generate':
      if (!values.out) {
        err('impermanencectl generate: --out DIR is required ("-" prints to standard output)\n');
        return 2;
      }
      return generate(dirs, required, root, values.out, values.json, out, err);
    case 'diff':
      if (values.offline || values.root || values.config) {
        let since;
        try {
          since = parseSince(values.since);
        } catch (e) {
          err(`impermanencectl diff: ${(e as Error).message}\n`);
          return 2;
        }
        try {
          const report = await diffOffline(dirs, required, root, since, err);
          printReport(report, values.json, out);
          return report.items.length ? 3 : 0;
        } catch (e) {
          return reportInvalid(e, values.json, out, err);
        }
      }
      return onBus('diff', { json: values.json, interactive: !values['no-ask-password'], bus: values.bus ?? process.env.DBUS_SYSTEM_BUS_ADDRESS, since: values.since }, out, err);
    case 'status':
    case 'list':
    case 'reload':
    case 'monitor':
      return onBus(command, { json: values.json, interactive: !values['no-ask-password'], bus: values.bus ?? process.env.DBUS_SYSTEM_BUS_ADDRESS }, out, err);
    default:
      err(`impermanencectl: unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

/**
 * The first --root or --config that is not a folder, as a message naming it; undefined if all are.
 * A mistyped path must not read as an empty config ("valid", exit 0) or turn `diff --config` into
 * a scan of the host with no entries: config/load.ts treats a missing drop-in folder as empty on
 * purpose (the system folders need not all exist), so the folders a user names are checked here.
 */
function missingFolder(root: string | undefined, configs: string[] | undefined): string | undefined {
  const given = [...(root === undefined ? [] : [{ option: '--root', path: root, holds: 'the root' }]), ...(configs ?? []).map((path) => ({ option: '--config', path, holds: 'the config files' }))];
  for (const { option, path, holds } of given) {
    const shown = `${option} ${printablePath(path)}`;
    let st;
    try {
      st = statSync(path, { throwIfNoEntry: false });
    } catch (e) {
      return `${shown}: ${(e as Error).message}`;
    }
    if (!st) return `${shown}: no such folder`;
    if (!st.isDirectory()) return `${shown}: not a folder (give the folder that holds ${holds})`;
  }
  return undefined;
}

/**
 * status, list, reload, monitor and diff through impermanenced: the D-Bus client is loaded on
 * first use, so that the offline commands (check, generate, diff --offline) start without it.
 */
async function onBus(...args: Parameters<typeof import('./bus-commands').onBus>): Promise<number> {
  return (await import('./bus-commands')).onBus(...args);
}

/** persist and unpersist: loaded on first use, like the bus commands. */
async function persistCommand(
  command: 'persist' | 'unpersist',
  args: string[],
  values: { storage?: string; user?: string },
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  if (args.length !== 1) {
    err(`usage: impermanencectl ${command} PATH${command === 'persist' ? ' [--storage ROOT] [--user NAME]' : ''}\n`);
    return 2;
  }
  const { persist, unpersist, PersistError } = await import('../activate/persist');
  const say = (line: string) => out(`${printable(line)}\n`);
  try {
    if (command === 'persist') persist({ path: args[0]!, storage: values.storage, user: values.user }, say);
    else unpersist(args[0]!, say);
    return 0;
  } catch (e) {
    if (!(e instanceof PersistError)) throw e;
    err(`impermanencectl ${command}: ${printable(e.message)}\n`);
    return 1;
  }
}

/** diff --previous-boot and restore: from the kept old roots of the btrfs wipe (src/cli/previous-boot.ts). */
async function previousBootCommand(
  command: 'diff' | 'restore',
  args: string[],
  values: { config?: string[]; boot?: string; to?: string; json: boolean },
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  const usage = command === 'diff' ? 'usage: impermanencectl diff --previous-boot [--boot N] [--json]\n' : 'usage: impermanencectl restore PATH [--boot N] [--to DIR]\n';
  if ((command === 'diff' && args.length) || (command === 'restore' && args.length !== 1)) {
    err(usage);
    return 2;
  }
  const boot = values.boot === undefined ? 1 : Number(values.boot);
  if (!Number.isInteger(boot) || boot < 1) {
    err(`impermanencectl ${command}: --boot takes 1 (the previous boot), 2, …, not ${JSON.stringify(values.boot)}\n`);
    return 2;
  }
  const { dirs, required } = configFolders(values.config, '/');
  let config: ResolvedConfig;
  try {
    config = readConfig(dirs, '/', required);
  } catch (e) {
    return reportInvalid(e, values.json, out, err);
  }
  if (!config.wipe) {
    err(`impermanencectl ${command}: no [wipe] table in the config: there are no old roots\n`);
    return 1;
  }
  const { diffPreviousBoot, restore, PreviousBootError } = await import('./previous-boot');
  try {
    if (command === 'diff') return await diffPreviousBoot(config.wipe, dirs, required, boot, values.json, out, err);
    return await restore(config.wipe, args[0]!, boot, values.to, out);
  } catch (e) {
    if (!(e instanceof PreviousBootError)) throw e;
    err(`impermanencectl ${command}: ${printable(e.message)}\n`);
    return 1;
  }
}

/**
 * wipe config: the settings the initrd's wipe reads (/etc/impermanence/wipe.conf), printed for the
 * dracut, initramfs-tools and mkinitcpio hooks to bake into the initrd. Exit 0 with the file,
 * 1 for an invalid config, 3 when no file declares [wipe] (the hooks then install no wipe).
 */
async function wipeCommand(args: string[], dirs: string[], required: string[], root: string, json: boolean, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [what, ...extra] = args;
  if ((what !== 'config' && what !== 'status') || extra.length) {
    err('usage: impermanencectl wipe config|status [--config DIR] [--root DIR] [--json]\n');
    return 2;
  }
  let config: ResolvedConfig;
  try {
    config = readConfig(dirs, root, required);
  } catch (e) {
    return reportInvalid(e, json, out, err);
  }
  if (!config.wipe) {
    if (json) out('null\n');
    else err(`impermanencectl wipe config: no [wipe] table in ${config.files.length ? config.files.map(printablePath).join(', ') : dirs.map(printablePath).join(', ')}: nothing to wipe\n`);
    return 3;
  }
  if (what === 'status') return (await import('./wipe-status')).wipeStatus(config.wipe, json, out);
  const { wipeConfText } = await import('../config/wipe');
  const storages = config.storages.map((s) => s.path);
  if (json) out(JSON.stringify({ ...config.wipe, storages }, null, 2) + '\n');
  else out(wipeConfText(config.wipe, storages));
  return 0;
}

function notify(args: string[], out: (s: string) => void, err: (s: string) => void): number {
  const home = userHome(process.env);
  const file = configPath(process.env, home);
  const [what, ...extra] = args;
  if (extra.length || !['on', 'off', 'status'].includes(what ?? '')) {
    err('usage: impermanencectl notify on|off|status\n');
    return 2;
  }
  try {
    if (what !== 'status') setEnabled(file, what === 'on');
    const { enable } = readNotifyConfig(file, home);
    out(`drift notifications are ${enable ? 'on' : 'off'} for you (${printablePath(file)})\n`);
    if (what === 'on') out('impermanence-notify starts with your next session, or now: systemctl --user start impermanence-notify\n');
    return 0;
  } catch (e) {
    err(`impermanencectl notify: ${(e as Error).message}\n`);
    return 1;
  }
}

function plan(dirs: string[], required: string[], root: string, outputDir: string): { config: ResolvedConfig; output: GeneratorOutput; notActivated: ConfigError[] } {
  const config = readConfig(dirs, root, required);
  const output = collect();
  const statSource = sourceStatter();
  // Entries the generator would refuse at boot (a symlinked storage folder, a source it cannot look up).
  const notActivated = planUnits(
    config,
    {
      outputDir,
      statSource: (source, storage) => statSource(join(root, source), join(root, storage)),
      statRoot: (path) => statOnRoot(join(root, path)),
      prepare: process.env.IMPERMANENCE_PREPARE,
    },
    output,
  );
  return { config, output, notActivated };
}

function reportInvalid(e: unknown, json: boolean, out: (s: string) => void, err: (s: string) => void): number {
  if (!(e instanceof InvalidConfig)) throw e;
  if (json) {
    out(JSON.stringify({ valid: false, problems: e.problems.map(({ file, entry, problem, line, column }) => ({ file, line: line ?? null, column: column ?? null, entry: entry ?? null, problem })) }, null, 2) + '\n');
  } else {
    for (const p of e.problems) err(`${printablePath(p.message)}\n`);
  }
  return 1;
}

function check(dirs: string[], required: string[], root: string, json: boolean, out: (s: string) => void, err: (s: string) => void): number {
  try {
    const { config, output, notActivated } = plan(dirs, required, root, '/run/systemd/generator');
    if (notActivated.length) throw new InvalidConfig(notActivated);
    const mounts = [...output.files.keys()].filter((f) => f.endsWith('.mount')).length;
    if (json) {
      out(JSON.stringify({ valid: true, files: config.files, storages: config.storages.map((s) => s.path), entries: config.entries.length, mounts }, null, 2) + '\n');
    } else if (config.files.length === 0) {
      out(`no config files in ${dirs.map(printablePath).join(', ')}: nothing is persisted\n`);
    } else {
      out(`valid: ${config.entries.length} entries (${mounts} bind mounts) in ${config.files.length} file(s): ${config.files.map(printablePath).join(', ')}\n`);
    }
    return 0;
  } catch (e) {
    return reportInvalid(e, json, out, err);
  }
}

function generate(dirs: string[], required: string[], root: string, target: string, json: boolean, out: (s: string) => void, err: (s: string) => void): number {
  let output: GeneratorOutput;
  let notActivated: ConfigError[];
  try {
    ({ output, notActivated } = plan(dirs, required, root, target === '-' ? '/run/systemd/generator' : target));
  } catch (e) {
    return reportInvalid(e, json, out, err);
  }
  // As the generator: the rest is written, with the error unit; the problems are printed, exit 1.
  const status = notActivated.length ? 1 : 0;
  if (!json) for (const p of notActivated) err(`${p.message}\n`);
  if (target === '-') {
    if (json) out(JSON.stringify({ files: Object.fromEntries(output.files), links: Object.fromEntries(output.links), problems: notActivated.map((p) => p.message) }, null, 2) + '\n');
    else {
      for (const [name, content] of output.files) out(`# ${name}\n${content}\n`);
      for (const [name, linkTarget] of output.links) out(`# ${name} -> ${linkTarget}\n`);
    }
    return status;
  }
  let made: string | undefined;
  try {
    made = mkdirSync(target, { recursive: true });
    if (readdirSync(target).length) {
      err(`impermanencectl generate: ${printablePath(target)} is not empty; give an empty or new folder\n`);
      return 2;
    }
    writeOutput(target, output); // all or nothing
  } catch (e) {
    if (made) rmSync(made, { recursive: true, force: true }); // made by us, and empty again
    err(`impermanencectl generate: cannot write into ${printablePath(target)}: ${(e as Error).message}; nothing was written\n`);
    return 1;
  }
  if (json) out(JSON.stringify({ out: target, files: [...output.files.keys()], links: [...output.links.keys()], problems: notActivated.map((p) => p.message) }, null, 2) + '\n');
  else out(`wrote ${output.files.size} files and ${output.links.size} links to ${printablePath(target)}\n`);
  return status;
}

if (require.main === module) {
  // run() resolves to the exit code (monitor: when interrupted) after closing its bus connection;
  // the process ends once its output went out, however slowly a pipe reads it.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0); // the reader left (| head): nothing more to say
    throw e;
  });
  run(process.argv.slice(2), (s) => process.stdout.write(s), (s) => process.stderr.write(s)).then(
    (code) => exitWhenFlushed(code),
    (e: Error) => {
      process.stderr.write(`impermanencectl: ${e.message}\n`);
      exitWhenFlushed(1);
    },
  );
}
