import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { configPath, readNotifyConfig, setEnabled, userHome } from '../config/notify';
import { InvalidConfig, type ConfigError } from '../config/errors';
import { closest, configFolders } from '../config/load';
import { readConfig } from '../config/read';
import type { ResolvedConfig } from '../config/resolve';
import { collect, planUnits, type GeneratorOutput } from '../generator/plan';
import { sourceStatter, statOnRoot, writeOutput } from '../generator/write';
import { exitWhenFlushed } from '../shared/exit';
import { printable, printablePath } from '../shared/printable';
import { helpHint, parse, UsageError, type Parsed } from './args';
import { diffOffline, parseSince, printReport } from './diff';
import { commandHelp, globalHelp } from './help';
import { emit, type OutputOptions } from './output';
import { command, COMMANDS } from './spec';

declare const VERSION: string;

/** Exit codes (spec.ts EXIT_CODES): 0 success, 1 invalid config or failed call, 2 usage error, 3 degraded or drift, 4 daemon not reachable. */
export async function run(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  // For the shell completions (not in help): entry paths or storage roots from the daemon, one a line.
  if (argv[0] === '__complete') return complete(argv[1], out);
  let parsed: Parsed;
  try {
    parsed = parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    const cmd = argv.find((a) => command(a));
    err(`impermanencectl${cmd ? ' ' + cmd : ''}: ${e.message}; ${helpHint(cmd)}\n`);
    return 2;
  }
  const { command: spec, args: rest, json } = parsed;
  const values = parsed.values as {
    config?: string[]; root?: string; out?: string; since?: string; storage?: string; user?: string; bus?: string;
    offline?: true; rescan?: true; 'no-scan'?: true; 'previous-boot'?: true; yes?: true; boot?: string; to?: string; quiet?: true; 'no-legend'?: true; 'no-ask-password'?: true; help?: true; version?: true;
  };
  if (values.version) {
    out(`impermanencectl ${VERSION}\n`);
    return 0;
  }
  if (values.help || !spec || spec.name === 'help') {
    const about = spec?.name === 'help' ? rest[0] : values.help ? spec?.name : undefined;
    const target = about === undefined ? undefined : command(about);
    if (about !== undefined && !target) {
      const near = closest(about, COMMANDS.map((c) => c.name));
      err(`impermanencectl help: no command ${JSON.stringify(printable(about))}${near ? ` (did you mean ${near}?)` : ''}; ${helpHint(undefined)}\n`);
      return 2;
    }
    out(target ? commandHelp(target) : globalHelp(VERSION));
    return 0;
  }
  const o: OutputOptions = { json, quiet: Boolean(values.quiet), legend: !values['no-legend'] };
  if (spec.name === 'notify') return notify(rest[0]!, o, out, err);
  if (spec.name === 'persist' || spec.name === 'unpersist') return persistCommand(spec.name, rest, values, o, out, err);
  if (spec.name === 'restore' || spec.name === 'wipe' || (spec.name === 'diff' && values['previous-boot'])) {
    const bad = missingFolder(values.root, values.config);
    if (bad) {
      err(`impermanencectl: ${bad}\n`);
      return 2;
    }
    if (spec.name === 'wipe') {
      const { dirs, required } = configFolders(values.config, values.root ?? '/');
      return wipeCommand(rest, dirs, required, values.root ?? '/', values.yes === true, o, out, err);
    }
    return previousBootCommand(spec.name === 'restore' ? 'restore' : 'diff', rest, values, o, out, err);
  }
  if (spec.name === 'import') return (await import('./import')).importCommand(rest, values, out, err);
  const missing = missingFolder(values.root, values.config);
  if (missing) {
    err(`impermanencectl: ${missing}\n`);
    return 2;
  }
  const root = values.root ?? '/';
  const { dirs, required } = configFolders(values.config, root);
  const bus = { json, quiet: o.quiet, legend: o.legend, interactive: !values['no-ask-password'], bus: values.bus ?? process.env.DBUS_SYSTEM_BUS_ADDRESS };

  switch (spec.name) {
    case 'check':
      return check(dirs, required, root, o, out, err);
    case 'generate':
      if (!values.out) {
        err(`impermanencectl generate: --out DIR is required ("-" prints to standard output); ${helpHint('generate')}\n`);
        return 2;
      }
      return generate(dirs, required, root, values.out, o, out, err);
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
          printReport(report, o, out);
          return report.items.length ? 3 : 0;
        } catch (e) {
          return reportInvalid(e, o, out, err);
        }
      }
      return onBus('diff', { ...bus, since: values.since, rescan: values.rescan === true }, out, err);
    case 'metrics':
      return (await import('./metrics')).metricsCommand({ out: values.out, scan: !values['no-scan'], bus: bus.bus, dirs, required, root }, out, err);
    default:
      return onBus(spec.name, bus, out, err);
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

/**
 * `__complete entries|storages`: what the daemon has, one name a line (names holding a newline are
 * left out), for the shell completions; nothing, and exit 0, when it cannot be asked within a second.
 */
async function complete(what: string | undefined, out: (s: string) => void): Promise<number> {
  if (what !== 'entries' && what !== 'storages') return 2;
  const { listNames } = await import('./bus-commands');
  const names = await Promise.race([listNames(what, process.env.DBUS_SYSTEM_BUS_ADDRESS).catch(() => []), new Promise<string[]>((r) => setTimeout(() => r([]), 1000).unref())]);
  for (const n of names) if (!n.includes('\n')) out(`${n}\n`);
  return 0;
}

/** persist and unpersist: loaded on first use, like the bus commands. */
async function persistCommand(
  name: 'persist' | 'unpersist',
  args: string[],
  values: { storage?: string; user?: string; bus?: string; 'no-ask-password'?: true },
  o: OutputOptions,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  // Not root: impermanenced does it, if polkit agrees (root does it here, daemon or not).
  if (process.getuid?.() !== 0) {
    const { persistOnBus } = await import('./bus-commands');
    const bus = values.bus ?? process.env.DBUS_SYSTEM_BUS_ADDRESS;
    return persistOnBus(name, args[0]!, { json: o.json, quiet: o.quiet, legend: o.legend, interactive: !values['no-ask-password'], bus, storage: values.storage, user: values.user }, out, err);
  }
  const { persist, unpersist, PersistError } = await import('../activate/persist');
  const say = (line: string) => (o.quiet ? undefined : out(`${printable(line)}\n`));
  try {
    if (name === 'persist') persist({ path: args[0]!, storage: values.storage, user: values.user }, say);
    else unpersist(args[0]!, say);
    return 0;
  } catch (e) {
    if (!(e instanceof PersistError)) throw e;
    err(`impermanencectl ${name}: ${printable(e.message)}\n`);
    return 1;
  }
}

/** diff --previous-boot and restore: from the kept old roots of the btrfs wipe (src/cli/previous-boot.ts). */
async function previousBootCommand(
  command: 'diff' | 'restore',
  args: string[],
  values: { config?: string[]; boot?: string; to?: string },
  o: OutputOptions,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
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
    return reportInvalid(e, o, out, err);
  }
  if (!config.wipe) {
    err(`impermanencectl ${command}: no [wipe] table in the config: there are no old roots\n`);
    return 1;
  }
  const { diffPreviousBoot, restore, PreviousBootError } = await import('./previous-boot');
  try {
    if (command === 'diff') return await diffPreviousBoot(config.wipe, dirs, required, boot, o, out, err);
    return await restore(config.wipe, args[0]!, boot, values.to, o.quiet ? () => undefined : out);
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
async function wipeCommand(args: string[], dirs: string[], required: string[], root: string, yes: boolean, o: OutputOptions, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [what, ...more] = args;
  const json = o.json !== 'off';
  if (what !== 'config' && what !== 'status' && what !== 'init' && what !== 'update') {
    err(`impermanencectl wipe: expected config, status, init or update, not ${JSON.stringify(printable(what ?? ''))}; ${helpHint('wipe')}\n`);
    return 2;
  }
  if (what === 'update' ? more.length === 0 : more.length > 0) {
    err(`impermanencectl wipe ${what}: ${what === 'update' ? 'give the command to run in the pristine: wipe update -- COMMAND...' : `unexpected argument ${JSON.stringify(printable(more[0]!))}`}; ${helpHint('wipe')}\n`);
    return 2;
  }
  if (yes && what !== 'init') {
    err(`impermanencectl wipe ${what}: --yes is an option of wipe init only; ${helpHint('wipe')}\n`);
    return 2;
  }
  let config: ResolvedConfig;
  try {
    config = readConfig(dirs, root, required);
  } catch (e) {
    return reportInvalid(e, o, out, err);
  }
  if (!config.wipe) {
    if (json) out('null\n');
    else err(`impermanencectl wipe ${what}: no [wipe] table in ${config.files.length ? config.files.map(printablePath).join(', ') : dirs.map(printablePath).join(', ')}: nothing to wipe\n`);
    return 3;
  }
  if (what === 'init' || what === 'update') {
    const { wipeInit, wipeUpdate } = await import('./pristine');
    const { PreviousBootError } = await import('./previous-boot');
    try {
      if (what === 'init') return await wipeInit(config.wipe, { root, dirs, required, yes }, o, out, err);
      return await wipeUpdate(config.wipe, more, o, out, err);
    } catch (e) {
      if (!(e instanceof PreviousBootError)) throw e;
      err(`impermanencectl wipe ${what}: ${printable(e.message)}\n`);
      return 1;
    }
  }
  if (what === 'status') return (await import('./wipe-status')).wipeStatus(config.wipe, json, out);
  const { wipeConfText } = await import('../config/wipe');
  const storages = config.storages.map((s) => s.path);
  if (json) out(JSON.stringify({ ...config.wipe, storages }, null, 2) + '\n');
  else out(wipeConfText(config.wipe, storages));
  return 0;
}

/** notify on|off|status; the notify document: `enabled`, `file`. */
function notify(what: string, o: OutputOptions, out: (s: string) => void, err: (s: string) => void): number {
  const home = userHome(process.env);
  const file = configPath(process.env, home);
  if (!['on', 'off', 'status'].includes(what)) {
    err(`impermanencectl notify: expected on, off or status, not ${JSON.stringify(printable(what))}; ${helpHint('notify')}\n`);
    return 2;
  }
  try {
    if (what !== 'status') setEnabled(file, what === 'on');
    const { enable } = readNotifyConfig(file, home);
    if (o.json !== 'off') emit({ enabled: enable, file }, o.json, out);
    else if (!o.quiet) {
      out(`drift notifications are ${enable ? 'on' : 'off'} for you (${printablePath(file)})\n`);
      if (what === 'on') out('impermanence-notify starts with your next session, or now: systemctl --user start impermanence-notify\n');
    }
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

/** An invalid config: one line per problem on stderr, or the check document with `valid: false`. */
function reportInvalid(e: unknown, o: OutputOptions, out: (s: string) => void, err: (s: string) => void): number {
  if (!(e instanceof InvalidConfig)) throw e;
  if (o.json !== 'off') {
    emit({ valid: false, problems: e.problems.map(({ file, entry, problem, line, column }) => ({ file, line: line ?? null, column: column ?? null, entry: entry ?? null, problem })) }, o.json, out);
  } else {
    for (const p of e.problems) err(`${printablePath(p.message)}\n`);
  }
  return 1;
}

/** The check document: `valid`, `files`, `storages`, `entries`, `mounts` (or `problems`). */
function check(dirs: string[], required: string[], root: string, o: OutputOptions, out: (s: string) => void, err: (s: string) => void): number {
  try {
    const { config, output, notActivated } = plan(dirs, required, root, '/run/systemd/generator');
    if (notActivated.length) throw new InvalidConfig(notActivated);
    const mounts = [...output.files.keys()].filter((f) => f.endsWith('.mount')).length;
    if (o.json !== 'off') {
      emit({ valid: true, files: config.files, storages: config.storages.map((s) => s.path), entries: config.entries.length, mounts }, o.json, out);
    } else if (o.quiet) {
      // the exit code tells
    } else if (config.files.length === 0) {
      out(`no config files in ${dirs.map(printablePath).join(', ')}: nothing is persisted\n`);
    } else {
      out(`valid: ${config.entries.length} entries (${mounts} bind mounts) in ${config.files.length} file(s):\n${config.files.map((f) => `  ${printablePath(f)}\n`).join('')}`);
    }
    return 0;
  } catch (e) {
    return reportInvalid(e, o, out, err);
  }
}

/**
 * The generate document: `out` (DIR or "-"), `files` (names), `links` (name → target),
 * `problems` (entries not activated), and with --out - `contents` (name → text).
 */
function generate(dirs: string[], required: string[], root: string, target: string, o: OutputOptions, out: (s: string) => void, err: (s: string) => void): number {
  let output: GeneratorOutput;
  let notActivated: ConfigError[];
  try {
    ({ output, notActivated } = plan(dirs, required, root, target === '-' ? '/run/systemd/generator' : target));
  } catch (e) {
    return reportInvalid(e, o, out, err);
  }
  // As the generator: the rest is written, with the error unit; the problems are printed, exit 1.
  const status = notActivated.length ? 1 : 0;
  const json = o.json !== 'off';
  const doc = () => ({ out: target, files: [...output.files.keys()], links: Object.fromEntries(output.links), problems: notActivated.map((p) => p.message) });
  if (!json) for (const p of notActivated) err(`${p.message}\n`);
  if (target === '-') {
    if (json) emit({ ...doc(), contents: Object.fromEntries(output.files) }, o.json, out);
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
  if (json) emit(doc(), o.json, out);
  else if (!o.quiet) out(`wrote ${output.files.size} files and ${output.links.size} links to ${printablePath(target)}\n`);
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
