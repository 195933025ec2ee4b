import 'reflect-metadata';
import { dirname, join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { configFolders } from '../config/load';
import { LOG_ERR, LOG_INFO } from '../shared/journal';
import { exitWhenFlushed } from '../shared/exit';
import { collectWhenQuiet } from './idle';
import { stderrIsJournal } from '../shared/journal-stream';
import { compose, TOKENS } from './compose';

declare const VERSION: string;

const HELP = `Usage: impermanenced [--root DIR] [--config DIR]... [--bus ADDRESS] [--no-watch] [--ctl PROGRAM]

The impermanence daemon: serves the config and the state of every persisted path, and the drift
(what a reboot would lose), as org.impermanence.Manager on the system bus. Started by systemd
(impermanence.service) or D-Bus activation; see impermanenced(8).

  --root DIR      the root it looks at (default /)
  --config DIR    read the config from DIR instead of the system folders (repeatable)
  --bus ADDRESS   the bus to serve on (default: the system bus, or $DBUS_SYSTEM_BUS_ADDRESS)
  --no-watch      no live drift (fanotify, mounts, inotify); drift is known from scans only
  --ctl PROGRAM   the impermanencectl that Persist and Unpersist run (default: beside the daemon,
                  else /usr/bin/impermanencectl)
  -h, --help      show this help and exit
  --version       show the version and exit
`;

/** "<3>" for the journal's stream, "impermanenced: " for a terminal or a file. */
const lead = (priority: number) => (stderrIsJournal() ? `<${priority}>` : '');

/** node:util parseArgs' error as a short phrase of ours. */
function usageProblem(err: Error & { code?: string }): string {
  const quoted = /'([^' ]*)/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quoted}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /does not take/.test(err.message) ? `${quoted} takes no value` : `${quoted} needs a value`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${quoted}`;
    default:
      return err.message.split('\n')[0]!;
  }
}

async function main(argv: string[]): Promise<number> {
  // A daemon serving untrusted callers logs what it did not expect and goes on serving.
  process.on('unhandledRejection', (err) => process.stderr.write(`${lead(3)}impermanenced: unhandled: ${(err as Error)?.stack ?? String(err)}\n`));
  process.on('SIGHUP', () => undefined); // until the reload handler is installed
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        root: { type: 'string', default: '/' },
        config: { type: 'string', multiple: true },
        bus: { type: 'string' },
        'no-watch': { type: 'boolean', default: false },
        ctl: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    // Node's parser text names the option in quotes of its own: one line of ours instead.
    process.stderr.write(`impermanenced: ${usageProblem(err as Error & { code?: string })}; see 'impermanenced --help'\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`impermanenced ${VERSION}\n`);
    return 0;
  }
  const root = values.root!;
  const { dirs: configDirs, required: requiredConfigDirs } = configFolders(values.config, root);
  // The native helpers are installed beside the daemon.
  const watcher = join(dirname(process.argv[1]!), 'impermanence-fanotify');
  const walker = join(dirname(process.argv[1]!), 'impermanence-walk');
  const pathWatcher = join(dirname(process.argv[1]!), 'impermanence-pathwatch');
  const c = compose(
    {
      configDirs, requiredConfigDirs, root, version: VERSION,
      watcher: values['no-watch'] || !existsSync(watcher) ? undefined : watcher,
      pathWatcher: values['no-watch'] || !existsSync(pathWatcher) ? undefined : pathWatcher,
      walker: existsSync(walker) ? walker : undefined,
    },
    values.bus ?? process.env.DBUS_SYSTEM_BUS_ADDRESS,
    // Persist and Unpersist run impermanencectl (beside the daemon in a build, else installed)
    // through systemd, with its output in the RuntimeDirectory of impermanence.service.
    {
      ctl: [process.execPath, values.ctl ?? (existsSync(join(dirname(process.argv[1]!), 'impermanencectl.js')) ? join(dirname(process.argv[1]!), 'impermanencectl.js') : '/usr/bin/impermanencectl')],
      outputDir: process.env.RUNTIME_DIRECTORY?.split(':')[0] ?? '/run/impermanenced',
    },
  );
  const log = c.resolve(TOKENS.logger);
  const manager = c.resolve(TOKENS.manager);
  const bus = c.resolve(TOKENS.bus);
  const lost = new Promise<number>((resolve) =>
    (bus as unknown as NodeJS.EventEmitter).on('error', (err: Error) => {
      log.log(LOG_ERR, `Lost the bus: ${err.message}`);
      resolve(1);
    }),
  );
  const frontEnd = c.resolve(TOKENS.frontEnd);

  const worked = collectWhenQuiet();
  manager.on('drift', worked);
  manager.reload();
  // Watching and the first look start before the name is ours: a subscriber that comes as soon
  // as it appears gets a complete first view. The first look runs without live watching too
  // (--no-watch, or a root fanotify cannot mark: overlayfs), or the
  // daemon would know no drift until root scans. No test relies on --no-watch for a quiet start.
  await manager.startLive();
  manager.lookFirst();
  const started = await Promise.race([frontEnd.start().then(() => undefined), lost]);
  if (started !== undefined) return started;
  log.log(LOG_INFO, `Serving ${manager.configFiles.length ? manager.entries().length + ' entries' : 'no config'} as org.impermanence.Manager`);

  const stopped = new Promise<number>((resolve) => {
    // Type=dbus: systemd knows we are ready when the name is ours; no sd_notify needed.
    process.on('SIGHUP', () => {
      try {
        manager.reload();
      } catch (err) {
        log.log(LOG_ERR, `Reload failed: ${(err as Error).message}`);
      }
    });
    const stop = () => {
      frontEnd.stop();
      c.resolve(TOKENS.persistRunner).stop();
      manager.stopLive();
      bus.disconnect();
      log.log(LOG_INFO, 'Stopped');
      log.close();
      resolve(0);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return Promise.race([stopped, lost]);
}

// Ends once the last log lines went out: process.exit() alone drops what the journal's stream
// has not taken yet.
main(process.argv.slice(2)).then(exitWhenFlushed, (err: Error) => {
  process.stderr.write(`${lead(3)}impermanenced: ${err.message}\n`);
  exitWhenFlushed(1);
});
