import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { Message, MessageType, Variant, type MessageBus } from '@jellybrick/dbus-next';
import { addMatch, nameOwner } from '../bus/freedesktop';
import { SYSTEMD } from '../bus/names';

/**
 * Runs `impermanencectl persist|unpersist` for the daemon, outside its sandbox.
 *
 * Why a transient unit (systemd's StartTransientUnit), not the work done in the daemon: the
 * daemon runs with PrivateMounts=yes, ProtectSystem=strict and a capability set that cannot
 * mount, so a mount it made would stay in its own namespace and storage is read-only to it;
 * loosening all that for one rare method would unsandbox the part that faces every user on the
 * bus. Why transient rather than a static template unit started with StartUnit: a template
 * instance can carry one string (the path) but Persist also takes a storage root and a user,
 * and a transient unit gets the exact argv over D-Bus (no escaping, no shell, no file to ship),
 * is collected when it ends (CollectMode=inactive-or-failed) and shows in the journal under its
 * own name. The command is the same code that `impermanencectl persist` runs as root, so the two
 * ways cannot differ. Its output goes to a file in the daemon's RuntimeDirectory (opened by
 * systemd, truncated), which the daemon reads back for the reply and removes.
 */
export interface PersistRun {
  ok: boolean;
  /** What the command said (its stdout and stderr), trimmed. */
  output: string;
  /** systemd's job result: done, failed, canceled, timeout, dependency, skipped. */
  result: string;
}

export interface PersistRunnerOptions {
  /** impermanencectl, as installed (run by systemd, as root, outside the sandbox). */
  ctl: string[];
  /** A folder the daemon may write and systemd may open files in (RuntimeDirectory=). */
  outputDir: string;
}

const JOB_REMOVED = `type='signal',sender='${SYSTEMD.destination}',path='${SYSTEMD.path}',interface='${SYSTEMD.interface}',member='JobRemoved'`;

export class PersistRunner {
  private watching: Promise<void> | undefined;
  /** systemd's unique name: only its JobRemoved are believed (anyone may send a signal). */
  private systemd = '';
  /**
   * Job results seen while a StartTransientUnit reply is awaited (its job's signal may beat the
   * reply), by job path: the newest 64, as every job of systemd's is seen here.
   */
  private readonly results = new Map<string, string>();
  private starting = 0;
  private readonly waiters = new Map<string, (result: string) => void>();

  constructor(
    private readonly bus: MessageBus,
    private readonly o: PersistRunnerOptions,
  ) {}

  async run(args: string[]): Promise<PersistRun> {
    await this.watch();
    const name = `impermanence-persist-${randomBytes(6).toString('hex')}.service`;
    const output = `${this.o.outputDir}/${name}.log`;
    const argv = [...this.o.ctl, ...args];
    const properties: Array<[string, Variant]> = [
      ['Description', new Variant('s', `impermanencectl ${args.map((a) => JSON.stringify(a)).join(' ')}`)],
      ['Type', new Variant('s', 'oneshot')],
      ['ExecStart', new Variant('a(sasb)', [[argv[0], argv, false]])],
      ['StandardOutputFileToTruncate', new Variant('s', output)],
      ['StandardError', new Variant('s', 'inherit')],
      ['CollectMode', new Variant('s', 'inactive-or-failed')],
    ];
    this.starting++;
    let reply;
    try {
      reply = await this.bus.call(
        new Message({ ...SYSTEMD, member: 'StartTransientUnit', signature: 'ssa(sv)a(sa(sv))', body: [name, 'fail', properties, []] }),
      );
    } finally {
      this.starting--;
    }
    if (reply?.type === MessageType.ERROR) throw new Error(`systemd refused to start ${name}: ${String(reply.body[0] ?? reply.errorName)}`);
    const job = String(reply?.body[0] ?? '');
    if (reply?.sender && reply.sender !== this.systemd) this.systemd = reply.sender; // systemd restarted (daemon-reexec)
    const result = await this.resultOf(job);
    // Kept for a run whose reply is awaited; none is now: the other jobs' results are of no use.
    if (!this.starting) this.results.clear();
    let said = '';
    try {
      said = readFileSync(output, 'utf8').trim();
    } catch {
      // never started: nothing was said
    }
    rmSync(output, { force: true });
    return { ok: result === 'done', output: said, result };
  }

  /** JobRemoved signals are sent to subscribers of systemd only: subscribe once, match once. */
  private watch(): Promise<void> {
    this.watching ??= (async () => {
      this.bus.on('message', this.onMessage);
      await addMatch(this.bus, JOB_REMOVED);
      await this.bus.call(new Message({ ...SYSTEMD, member: 'Subscribe' }));
      this.systemd = await nameOwner(this.bus, SYSTEMD.destination);
    })().catch((err: unknown) => {
      this.watching = undefined;
      this.bus.off('message', this.onMessage);
      throw err;
    });
    return this.watching;
  }

  private resultOf(job: string): Promise<string> {
    const known = this.results.get(job);
    if (known !== undefined) {
      this.results.delete(job);
      return Promise.resolve(known);
    }
    return new Promise((resolve) => this.waiters.set(job, resolve));
  }

  private readonly onMessage = (msg: Message): void => {
    if (msg.type !== MessageType.SIGNAL || msg.interface !== SYSTEMD.interface || msg.member !== 'JobRemoved' || msg.path !== SYSTEMD.path) return;
    if (!this.systemd || msg.sender !== this.systemd) return;
    const [, job, , result] = msg.body as [number, string, string, string];
    const waiter = this.waiters.get(job);
    if (waiter) {
      this.waiters.delete(job);
      waiter(result);
    } else if (this.starting > 0) {
      // Maybe a job of ours whose StartTransientUnit reply is still coming. Only while a reply is
      // awaited, the oldest dropped first: else other jobs' results would fill it, and a result
      // that came early would be lost, its call never answered.
      if (this.results.size >= 64) this.results.delete(this.results.keys().next().value!);
      this.results.set(job, result);
    }
  };

  stop(): void {
    this.bus.off('message', this.onMessage);
  }
}
