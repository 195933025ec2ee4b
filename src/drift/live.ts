import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { startHelper, unescapeLine } from './helper';

/** What changed on the root since the last 'change': the groups written to, and whether an entry's path was touched. */
export interface LiveChange { groups: Set<string>; entries: boolean; overflow: boolean }

export interface LiveOptions {
  /** impermanence-fanotify (src/drift/native/fanotify-watch.c). */
  binary: string;
  /** The root watched: "/" or a sandbox's mount point. */
  root: string;
  /** The group of a path on the root, or undefined when it is persisted, mounted, stored or ignored. */
  groupOf: (path: string) => string | undefined;
  isEntry: (path: string) => boolean;
  /** Bursts are coalesced into one 'change' at most this often. */
  delayMs?: number;
}

/**
 * Live drift: the fanotify watcher sees every write on the root's filesystem (one mark for the
 * whole filesystem), and each one is turned into the group it belongs to. Writes after a quiet
 * spell are reported at once (the first few 'change's: a mkdir, then the file written in it, come
 * in separate reads of the queue); a burst of writes becomes one 'change' per `delayMs`, never
 * one per file. Emits 'change'
 * (LiveChange) and 'stopped' (exit code) when the watcher ends (2: the filesystem does not
 * support it; 3: not permitted).
 */
export interface LiveWatcherEvents {
  change: [change: LiveChange];
  /** The watcher ended: its exit code and what it said. */
  stopped: [code: number, why: string];
}

/** How many 'change's go out at once after a quiet spell (see schedule). */
const QUICK = 3;

export class LiveWatcher extends EventEmitter<LiveWatcherEvents> {
  private child: ChildProcess | undefined;
  private pending: LiveChange | undefined;
  /** The next 'change' is due (see schedule): cancels it. */
  private timer: (() => void) | undefined;
  /** Waiting for their "sync" line, oldest first (see sync). */
  private readonly syncs: Array<(done: boolean) => void> = [];

  constructor(private readonly opts: LiveOptions) {
    super();
  }

  /** Resolves true once the mark is in place, false if the watcher could not start. */
  start(): Promise<boolean> {
    const { child, ready } = startHelper(this.opts.binary, [this.opts.root], (line) => this.onLine(line), (code, why) => {
      this.child = undefined;
      for (const done of this.syncs.splice(0)) done(false);
      this.emit('stopped', code, why);
    });
    this.child = child;
    return ready;
  }

  stop(): void {
    this.timer?.();
    this.child?.kill('SIGTERM');
  }

  /**
   * A barrier: resolves true once every write whose system call returned before this call has
   * been emitted as a 'change' (the watcher drains the kernel's queue, which holds them in order,
   * before it answers "sync"); false if the watcher is gone or did not answer within `timeoutMs`.
   */
  sync(timeoutMs: number): Promise<boolean> {
    const stdin = this.child?.stdin;
    if (!stdin?.writable) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.syncs.push((done) => {
        clearTimeout(timer);
        resolve(done);
      });
      stdin.write('\n');
    });
  }

  private onLine(line: string): void {
    if (line === 'sync') {
      // What was read before it goes out now, not at the next tick of the rate limit.
      this.timer?.();
      this.timer = undefined;
      this.emitPending();
      this.syncs.shift()?.(true);
      return;
    }
    const [event, , rawPath] = line.split('\t');
    if (!event || rawPath === undefined) return;
    let entries = false;
    let group: string | undefined;
    if (event !== 'overflow') {
      const path = this.rootPath(unescapeLine(rawPath));
      if (path === undefined) return;
      entries = this.opts.isEntry(path);
      group = this.opts.groupOf(path);
      // Writes that are no drift (outside the root, persisted, ignored) neither wait nor make wait.
      if (!entries && !group) return;
    }
    const now = Date.now();
    if (now - this.lastLine >= this.delay) this.tokens = QUICK; // after a quiet spell
    this.lastLine = now;
    const change = (this.pending ??= { groups: new Set(), entries: false, overflow: false });
    if (event === 'overflow') change.overflow = true;
    change.entries ||= entries;
    if (group) change.groups.add(group);
    this.schedule();
  }

  /**
   * A token bucket: up to QUICK 'change's go out at once (after the lines already read are in),
   * all of them back after a quiet spell of `delayMs` and one every `delayMs` meanwhile; while
   * writes go on, one 'change' per `delayMs`. A single leading edge would hold the second of two
   * writes a moment apart (a folder, then the file in it: the folder alone is no drift yet) for
   * the whole window: measured, 100 ms of the p99 of bench/live.mjs.
   */
  private tokens = QUICK;
  private refilled = Date.now();
  private lastLine = 0;
  private get delay(): number {
    return this.opts.delayMs ?? 100;
  }
  /** One token back per `delayMs` since the last refill, up to QUICK. */
  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(QUICK, this.tokens + (now - this.refilled) / this.delay);
    this.refilled = now;
  }
  private schedule(): void {
    if (this.timer) return;
    this.refill();
    const due = () => {
      this.timer = undefined;
      this.emitPending();
    };
    if (this.tokens >= 1) {
      // At once, yet after the lines of this read are handled (one read, one change). Not a
      // timer of 0: that is 1 ms of sleep, and on a busy machine a sleep is a wait for the CPU.
      const t = setImmediate(due);
      this.timer = () => clearImmediate(t);
    } else {
      const t = setTimeout(due, (1 - this.tokens) * this.delay);
      this.timer = () => clearTimeout(t);
    }
  }

  private emitPending(): void {
    const c = this.pending;
    this.pending = undefined;
    if (!c) return;
    this.refill();
    // A "sync" emits out of turn: it does not push the next one further out.
    this.tokens = Math.max(0, this.tokens - 1);
    if (c.groups.size || c.entries || c.overflow) this.emit('change', c);
  }

  /** The path as seen on the root; undefined outside it or for a folder already gone ("?/name"). */
  private rootPath(path: string): string | undefined {
    if (!path.startsWith('/')) return undefined;
    const root = this.opts.root;
    if (root === '/') return path;
    if (path === root) return '/';
    return path.startsWith(root + '/') ? path.slice(root.length) : undefined;
  }
}
