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
 * whole filesystem), and each one is turned into the group it belongs to. A write after a quiet
 * spell is reported at once; a burst of writes becomes one 'change' per `delayMs`, never one per file. Emits 'change'
 * (LiveChange) and 'stopped' (exit code) when the watcher ends (2: the filesystem does not
 * support it; 3: not permitted).
 */
export interface LiveWatcherEvents {
  change: [change: LiveChange];
  /** The watcher ended: its exit code and what it said. */
  stopped: [code: number, why: string];
}

export class LiveWatcher extends EventEmitter<LiveWatcherEvents> {
  private child: ChildProcess | undefined;
  private pending: LiveChange | undefined;
  private timer: NodeJS.Timeout | undefined;
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
    if (this.timer) clearTimeout(this.timer);
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
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.emitPending();
      this.syncs.shift()?.(true);
      return;
    }
    const [event, , rawPath] = line.split('\t');
    if (!event || rawPath === undefined) return;
    const change = (this.pending ??= { groups: new Set(), entries: false, overflow: false });
    if (event === 'overflow') change.overflow = true;
    else {
      const path = this.rootPath(unescapeLine(rawPath));
      if (path !== undefined) {
        if (this.opts.isEntry(path)) change.entries = true;
        const group = this.opts.groupOf(path);
        if (group) change.groups.add(group);
      }
    }
    this.schedule();
  }

  /**
   * Leading and trailing edge: the first write after a quiet spell is reported at once (after the
   * lines already read are in), then at most one 'change' per `delayMs` while writes go on.
   */
  private lastEmit = 0;
  private schedule(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastEmit + (this.opts.delayMs ?? 100) - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.emitPending();
    }, wait);
  }

  private emitPending(): void {
    const c = this.pending;
    this.pending = undefined;
    if (!c) return;
    this.lastEmit = Date.now();
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
