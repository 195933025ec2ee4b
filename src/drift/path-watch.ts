import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { escapeLine, startHelper, unescapeLine } from './helper';

export interface PathWatchEvents {
  /** The mount table changed. */
  mounts: [];
  /** Something changed at a watched host path (a folder, or a child of one). */
  change: [path: string];
  /** Events were lost (the inotify queue overflowed): only a scan knows now. */
  overflow: [];
  /** A set is in place: how many watches, and how many paths could not be watched (limit: the kernel's watch limit was reached at that path). */
  watching: [watches: number, failed: number, limit: string | undefined];
  stopped: [code: number, why: string];
}

/**
 * impermanence-pathwatch (src/drift/native/path-watch.c): the mount table polled for POLLPRI
 * (no wake-up while nothing mounts), and inotify on the folders named by watch(). Node cannot
 * poll a file for POLLPRI, so a small helper does it and reports over its pipe.
 */
export class PathWatch extends EventEmitter<PathWatchEvents> {
  private child: ChildProcess | undefined;
  private limit: string | undefined;

  constructor(private readonly binary: string) {
    super();
  }

  /** Resolves true once the mount table is watched, false if the helper could not start. */
  start(): Promise<boolean> {
    const { child, ready } = startHelper(this.binary, [], (line) => this.onLine(line), (code, why) => {
      this.child = undefined;
      this.emit('stopped', code, why);
    });
    this.child = child;
    return ready;
  }

  private onLine(line: string): void {
    const [what, a, b, c] = line.split('\t');
    if (what === 'mounts') this.emit('mounts');
    else if (what === 'change' && a !== undefined) this.emit('change', unescapeLine(a));
    else if (what === 'overflow') this.emit('overflow');
    else if (what === 'limit' && a !== undefined) this.limit = unescapeLine(a);
    else if (what === 'watching') {
      this.emit('watching', Number(a), Number(b) + Number(c), this.limit);
      this.limit = undefined;
    }
  }

  /** Replaces what is watched: folders (host paths) whose children, or which themselves, change. */
  watch(dirs: Iterable<string>): void {
    const lines = [...[...dirs].map((p) => `dir\t${escapeLine(p)}`), 'end'];
    this.child?.stdin!.write(lines.join('\n') + '\n');
  }

  stop(): void {
    this.child?.kill('SIGTERM');
  }
}
