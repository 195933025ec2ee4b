import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';

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
    const child = spawn(this.binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stdin!.on('error', () => undefined); // it may be gone: its exit says why
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    return new Promise((resolve) => {
      let ready = false;
      child.once('error', (err) => {
        this.emit('stopped', -1, err.message);
        resolve(false);
      });
      child.once('exit', (code) => {
        this.child = undefined;
        this.emit('stopped', code ?? -1, stderr.trim());
        if (!ready) resolve(false);
      });
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const [what, a, b, c] = line.split('\t');
        if (what === 'ready') {
          ready = true;
          resolve(true);
        } else if (what === 'mounts') this.emit('mounts');
        else if (what === 'change' && a !== undefined) this.emit('change', unescape(a));
        else if (what === 'overflow') this.emit('overflow');
        else if (what === 'limit' && a !== undefined) this.limit = unescape(a);
        else if (what === 'watching') {
          this.emit('watching', Number(a), Number(b) + Number(c), this.limit);
          this.limit = undefined;
        }
      });
    });
  }

  /** Replaces what is watched: folders (host paths) whose children, or which themselves, change. */
  watch(dirs: Iterable<string>): void {
    const lines = [...[...dirs].map((p) => `dir\t${escape(p)}`), 'end'];
    this.child?.stdin!.write(lines.join('\n') + '\n');
  }

  stop(): void {
    this.child?.kill('SIGTERM');
  }
}

function escape(text: string): string {
  return text.replace(/[\n\t\\]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : '\\\\'));
}

function unescape(text: string): string {
  return text.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
}
