import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Message, sessionBus, systemBus, type MessageBus } from '@jellybrick/dbus-next';
import { Agent, type Log } from './agent';
import { configPath, readNotifyConfig, userHome } from './config';
import { compose, concerning, itemsFromRows } from './message';
import { exitWhenFlushed } from '../shared/exit';
import { stderrIsJournal } from '../shared/journal-stream';

declare const VERSION: string;

const HELP = `Usage: impermanence-notify [--bus ADDRESS] [--config FILE] [--print]

Shows desktop notifications when something you may see drifts: files written where they will be
lost at reboot, persisted paths not in place or replaced, storage nothing declares. Follows the
daemon (impermanenced) on the system bus; posts through org.freedesktop.Notifications on the
session bus. One per session (it owns org.impermanence.Notify there).

  --bus ADDRESS   the system bus (default: DBUS_SYSTEM_BUS_ADDRESS, or the standard one)
  --config FILE   its settings (default: $XDG_CONFIG_HOME/impermanence/notify.toml)
  --print         print the notification it would show now (from the daemon's current drift)
                  and exit, without a session bus
  -h, --help      show this help and exit
  --version       show the version and exit

Turn it off or on with: impermanencectl notify off|on
`;

function main(argv: string[]): Promise<number> | number {
  let address: string | undefined;
  let config: string | undefined;
  let print = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    }
    if (a === '--version') {
      process.stdout.write(`impermanence-notify ${VERSION}\n`);
      return 0;
    }
    if (a === '--print') {
      print = true;
      continue;
    }
    if ((a === '--bus' || a === '--config') && argv[i + 1] !== undefined) {
      if (a === '--bus') address = argv[++i];
      else config = argv[++i];
      continue;
    }
    const what = a === '--bus' || a === '--config' ? `${a} needs a value` : `unknown ${a.startsWith('-') ? 'option' : 'argument'} ${JSON.stringify(a)}`;
    process.stderr.write(`impermanence-notify: ${what}; see 'impermanence-notify --help'\n`);
    return 2;
  }
  // Under systemd, stderr goes to the journal: "<N>" sets each line's priority (not on a terminal).
  const prefixed = stderrIsJournal();
  const log: Log = (level, message) => process.stderr.write(prefixed ? `<${level}>${message}\n` : `impermanence-notify: ${message}\n`);
  const home = userHome(process.env);
  if (print) return printNow(address, config ?? configPath(process.env, home), home);
  return run({ address, configFile: config ?? configPath(process.env, home), home, log });
}

async function run(o: { address?: string; configFile: string; home: string; log: Log }): Promise<number> {
  let system: MessageBus | undefined;
  let session: MessageBus | undefined;
  try {
    system = await connected(o.address ? sessionBus({ busAddress: o.address }) : systemBus(), 'system');
    session = await connected(sessionBus(), 'session');
    const runtime = process.env.XDG_RUNTIME_DIR?.startsWith('/') ? process.env.XDG_RUNTIME_DIR : undefined;
    const agent = new Agent({
      system,
      session,
      home: o.home,
      configFile: o.configFile,
      log: o.log,
      env: process.env,
      systemdRun: findInPath('systemd-run'),
      toldFile: runtime && join(runtime, 'impermanence-notify.json'),
    });
    if (!(await agent.start())) return 0;
    for (const [bus, which] of [[system, 'system'], [session, 'session']] as const) {
      // The library does not forward the connection's end; without its bus the agent is done.
      (bus as unknown as { _connection: NodeJS.EventEmitter })._connection.on('end', () => agent.stop(1, `the ${which} bus went away`));
    }
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => agent.stop(0));
    return await agent.done;
  } catch (err) {
    o.log(3, (err as Error).message);
    return 1;
  } finally {
    system?.disconnect();
    session?.disconnect();
  }
}

/** --print: the notification the user would get for the drift the daemon knows now, as text. */
async function printNow(address: string | undefined, configFile: string, home: string): Promise<number> {
  let system: MessageBus | undefined;
  try {
    system = await connected(address ? sessionBus({ busAddress: address }) : systemBus(), 'system');
    const reply = await system.call(
      new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member: 'GetDrift', signature: 'a{sv}', body: [{}] }),
    );
    const items = concerning(itemsFromRows(reply?.body[0]), readNotifyConfig(configFile, home), home);
    if (!items.length) {
      process.stdout.write('No notification: no drift concerns you now.\n');
      return 0;
    }
    const n = compose(items, { home, markup: false });
    const urgency = ['low', 'normal', 'critical'][n.urgency];
    process.stdout.write(`Summary: ${n.summary}\nUrgency: ${urgency}\nBody:\n${n.body.replace(/^/gm, '  ')}\nActions: ${n.actions.filter((_, i) => i % 2).join(', ')}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`impermanence-notify: ${(err as Error).message}\n`);
    return 1;
  } finally {
    system?.disconnect();
  }
}

function findInPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(dir, name);
    if (dir.startsWith('/') && existsSync(p)) return p;
  }
  return undefined;
}

function connected(bus: MessageBus, which: string): Promise<MessageBus> {
  return new Promise((resolve, reject) => {
    (bus as unknown as NodeJS.EventEmitter).once('error', (err: Error) => reject(new Error(`cannot connect to the ${which} bus: ${err.message}`)));
    bus.once('connect', () => resolve(bus));
  });
}

// Ends once the last log line and --help went out: process.exit() alone drops what a pipe (the
// journal's stream, a pager) has not taken yet.
Promise.resolve(main(process.argv.slice(2))).then(exitWhenFlushed, (err: Error) => {
  process.stderr.write(`impermanence-notify: ${err.message}\n`);
  exitWhenFlushed(1);
});
