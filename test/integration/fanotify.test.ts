/**
 * dist/impermanence-fanotify (src/drift/native/fanotify-watch.c), the daemon's whole-filesystem
 * write watcher, driven for real: each watcher runs in its own private mount namespace
 * (`unshare -m --propagation private`) over a fresh tmpfs or ext4 loop image mounted there, so the
 * host's mounts are never touched. This process writes into that mount through the watcher's
 * root, /proc/PID/root/MOUNTPOINT, and reads the watcher's stdout. Needs root.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO, tempDir } from '../helpers';

jest.setTimeout(60_000);

const BIN = join(REPO, 'dist', 'impermanence-fanotify');
const SRC = join(REPO, 'src', 'drift', 'native', 'fanotify-watch.c');
const canRun = process.platform === 'linux' && process.getuid?.() === 0 && existsSync('/usr/bin/unshare');

interface Line {
  event: string;
  pid: number;
  /** As printed: escaped. */
  path: string;
  /** process.hrtime.bigint() when the line was read. */
  at: bigint;
}

/** Undoes the watcher's escaping of \n, \t and \\ in a path. */
function unescapePath(s: string): string {
  return s.replace(/\\([nt\\])/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
}
const escapePath = (s: string) => s.replace(/[\\\n\t]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : '\\\\'));

type Fs = 'tmpfs' | 'ext4';

/** One watcher in its own mount namespace, over its own filesystem mounted at `mnt`. */
class Watcher {
  readonly lines: Line[] = [];
  private readonly byKey = new Map<string, Line[]>();
  private readonly waiters = new Set<() => void>();
  private wakeScheduled = false;
  stderr = '';
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly mnt: string,
  ) {
    this.exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    createInterface({ input: child.stdout! }).on('line', (text) => {
      const at = process.hrtime.bigint();
      const [event = '', pid = '', path = ''] = text.split('\t');
      const line = { event, pid: Number(pid), path, at };
      this.lines.push(line);
      const key = `${event}\t${path}`;
      const list = this.byKey.get(key);
      if (list) list.push(line);
      else this.byKey.set(key, [line]);
      // Wake the waiters once per chunk of lines, not once per line.
      if (!this.wakeScheduled) {
        this.wakeScheduled = true;
        setImmediate(() => {
          this.wakeScheduled = false;
          for (const w of [...this.waiters]) w();
        });
      }
    });
    child.on('exit', () => {
      for (const w of [...this.waiters]) w();
    });
  }

  /** Starts the watcher on a new filesystem; resolves once it printed `ready`. */
  static async start(fs: Fs): Promise<Watcher> {
    const dir = tempDir('impermanence-fanotify-');
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    let mount: string;
    if (fs === 'ext4') {
      const img = join(dir, 'ext4.img');
      const mk = spawnSync('sh', ['-c', 'truncate -s 128M "$1" && mkfs.ext4 -q -F "$1"', 'sh', img], { encoding: 'utf8' });
      if (mk.status !== 0) throw new Error(`mkfs.ext4 failed: ${mk.stderr}`);
      mount = `mount -o loop ${img} "$1"`;
    } else {
      mount = 'mount -t tmpfs -o size=512m tmpfs "$1"';
    }
    return Watcher.spawn(`${mount} && exec "$2" "$1"`, mnt);
  }

  /** Runs `script` (sh, $1 = mnt, $2 = the watcher binary) in a new private mount namespace. */
  static async spawn(script: string, mnt: string): Promise<Watcher> {
    const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', mnt, BIN], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const w = new Watcher(child, mnt);
    running.add(w);
    void w.exit.then(() => running.delete(w));
    await w.until(() => w.lines.length > 0 || w.child.exitCode !== null || w.child.signalCode !== null, 10_000);
    if (w.lines[0]?.event !== 'ready') {
      throw new Error(`watcher did not start: ${JSON.stringify(w.lines[0])} ${w.stderr}`);
    }
    return w;
  }

  /** The mount as this process (in the host's mount namespace) reaches it: through the watcher's root. */
  get here(): string {
    return `/proc/${this.child.pid}/root${this.mnt}`;
  }

  /** The watcher's line for PATH relative to the mount, as printed (escaped). */
  path(rel: string): string {
    return escapePath(join(this.mnt, rel));
  }

  get(event: string, rel: string): Line[] {
    return this.byKey.get(`${event}\t${this.path(rel)}`) ?? [];
  }

  until(cond: () => boolean, timeoutMs = 10_000): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (!cond()) return;
        finish(true);
      };
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      this.waiters.add(check);
    });
  }

  /** Waits until every [event, relative path] has been printed; returns the missing ones. */
  async missing(expected: Array<[string, string]>, timeoutMs = 10_000): Promise<string[]> {
    let absent = expected.map(([e, p]) => ({ key: `${e}\t${this.path(p)}`, e, p }));
    const check = () => (absent = absent.filter((x) => !this.byKey.has(x.key))).length === 0;
    await this.until(check, timeoutMs);
    check();
    return absent.map(({ e, p }) => `${e} ${p}`);
  }

  /** Runs a shell command with the mount as its working directory; returns its stdout. */
  sh(cmd: string): string {
    const r = spawnSync('sh', ['-c', cmd], { cwd: this.here, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`sh -c '${cmd}' failed (${r.status}): ${r.stderr}`);
    return r.stdout;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await this.exit;
  }
}

const running = new Set<Watcher>();
afterAll(async () => {
  await Promise.all([...running].map((w) => w.stop()));
});

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;

(canRun ? describe : describe.skip)('impermanence-fanotify', () => {
  beforeAll(() => {
    // Build the watcher when it is missing or older than its source (npm test builds it first).
    if (!existsSync(BIN) || statSync(BIN).mtimeMs < statSync(SRC).mtimeMs) {
      const r = spawnSync('bash', [join(REPO, 'scripts', 'build-native.sh')], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`scripts/build-native.sh failed:\n${r.stderr}`);
    }
  });

  describe.each<Fs>(['tmpfs', 'ext4'])('on %s', (fs) => {
    let w: Watcher;
    beforeAll(async () => {
      w = await Watcher.start(fs);
    });
    afterAll(async () => {
      await w.stop();
    });

    test('a new file: create and close_write, with the PID of the process that wrote it', async () => {
      const pid = Number(w.sh('echo $$; exec touch created'));
      expect(await w.missing([['create', 'created'], ['close_write', 'created']])).toEqual([]);
      expect(w.get('create', 'created').map((l) => l.pid)).toEqual([pid]);
      expect(w.get('close_write', 'created').map((l) => l.pid)).toEqual([pid]);

      const appender = Number(w.sh('echo $$; exec sh -c "printf more >> created"'));
      await w.until(() => w.get('close_write', 'created').length === 2);
      expect(w.get('close_write', 'created').map((l) => l.pid)).toEqual([pid, appender]);
      expect(w.get('create', 'created')).toHaveLength(1); // appending creates nothing
    });

    test('a newline on stdin is a barrier: each "sync" comes after the lines of every write made before it', async () => {
      w.sh('mkdir barrier && for i in $(seq 1 200); do echo x > barrier/f$i; done');
      const from = w.lines.length;
      w.child.stdin!.write('\n\n');
      expect(await w.until(() => w.lines.slice(from).filter((l) => l.event === 'sync').length === 2)).toBe(true);
      const firstSync = w.lines.findIndex((l, i) => i >= from && l.event === 'sync');
      const before = new Set(w.lines.slice(0, firstSync).filter((l) => l.event === 'close_write').map((l) => l.path));
      const late = Array.from({ length: 200 }, (_, i) => `barrier/f${i + 1}`).filter((rel) => !before.has(w.path(rel)));
      expect(late).toEqual([]);
      expect(w.lines[firstSync]!.path).toBe(''); // "sync" alone on its line
    });

    test('a deep tree made at once with mkdir -p, and a file in it', async () => {
      w.sh('mkdir -p a/b/c/d && touch a/b/c/d/x');
      const expected: Array<[string, string]> = ['a', 'a/b', 'a/b/c', 'a/b/c/d', 'a/b/c/d/x'].map((p) => ['create', p]);
      expect(await w.missing([...expected, ['close_write', 'a/b/c/d/x']])).toEqual([]);

      // 100 more fresh trees, as fast as a shell makes them: a recursive inotify watcher misses these.
      w.sh('i=0; while [ $i -lt 100 ]; do mkdir -p t/$i/b/c/d && : > t/$i/b/c/d/x; i=$((i+1)); done');
      const trees: Array<[string, string]> = [['create', 't']];
      for (let i = 0; i < 100; i++) {
        for (const p of ['', '/b', '/b/c', '/b/c/d', '/b/c/d/x']) trees.push(['create', `t/${i}${p}`]);
        trees.push(['close_write', `t/${i}/b/c/d/x`]);
      }
      expect(await w.missing(trees)).toEqual([]);
    });

    test('an editor-style save: write a temporary file, rename it over the original', async () => {
      w.sh('printf old > config');
      await w.missing([['close_write', 'config']]);
      const mv = Number(w.sh('printf new > .config.tmp && echo $$ && exec mv -f .config.tmp config'));
      expect(
        await w.missing([
          ['create', '.config.tmp'],
          ['close_write', '.config.tmp'],
          ['moved_from', '.config.tmp'],
          ['moved_to', 'config'],
        ]),
      ).toEqual([]);
      expect(w.get('moved_to', 'config').map((l) => l.pid)).toEqual([mv]);
      // The replaced file is not reported as deleted: only the rename is.
      expect(w.get('delete', 'config')).toEqual([]);
    });

    test('delete, a renamed directory, and names with a tab, a backslash and a newline', async () => {
      w.sh('touch doomed && mkdir olddir && touch olddir/f');
      await w.missing([['close_write', 'olddir/f'], ['close_write', 'doomed']]);
      const rm = Number(w.sh('echo $$; exec rm doomed'));
      w.sh('mv olddir newdir');
      expect(await w.missing([['delete', 'doomed'], ['moved_from', 'olddir'], ['moved_to', 'newdir']])).toEqual([]);
      expect(w.get('delete', 'doomed').map((l) => l.pid)).toEqual([rm]);

      const weird = 'we\tird\\na\nme';
      writeFileSync(join(w.here, weird), 'x');
      expect(await w.missing([['close_write', weird]])).toEqual([]);
      const printed = w.get('close_write', weird)[0]!.path;
      expect(printed).toBe(`${w.mnt}/we\\tird\\\\na\\nme`);
      expect(unescapePath(printed)).toBe(join(w.mnt, weird));
    });

    test('a burst of 1,000 short-lived files: every create, close_write and delete', async () => {
      w.sh('mkdir burst');
      const script = `const fs = require('fs');
        for (let i = 0; i < 1000; i++) { fs.writeFileSync('burst/f' + i, 'x'); fs.unlinkSync('burst/f' + i); }
        console.log(process.pid);`;
      const r = spawnSync(process.execPath, ['-e', script], { cwd: w.here, encoding: 'utf8' });
      expect(r.status).toBe(0);
      const pid = Number(r.stdout);
      const expected: Array<[string, string]> = [];
      for (let i = 0; i < 1000; i++) for (const e of ['create', 'close_write', 'delete']) expected.push([e, `burst/f${i}`]);
      expect(await w.missing(expected, 20_000)).toEqual([]);

      const inBurst = w.lines.filter((l) => l.path.startsWith(w.path('burst/')));
      const counts: Record<string, number> = {};
      for (const l of inBurst) counts[l.event] = (counts[l.event] ?? 0) + 1;
      console.log(`fanotify on ${fs}: 1,000 short-lived files -> ${JSON.stringify(counts)}`);
      expect(counts).toEqual({ create: 1000, close_write: 1000, delete: 1000 });
      expect(inBurst.every((l) => l.pid === pid)).toBe(true);
    });

    test('events under a directory deleted before they are read are printed as ?/NAME', async () => {
      // Stop the watcher so that the whole tree is gone when it reads the events.
      process.kill(w.child.pid!, 'SIGSTOP');
      try {
        w.sh('mkdir -p gone/sub && touch gone/sub/f && rm -rf gone');
      } finally {
        process.kill(w.child.pid!, 'SIGCONT');
      }
      expect(await w.missing([['create', 'gone'], ['delete', 'gone']])).toEqual([]);
      const has = (event: string, path: string) => w.lines.some((l) => l.event === event && l.path === path);
      for (const [event, path] of [
        ['create', '?/sub'],
        ['create', '?/f'],
        ['close_write', '?/f'],
        ['delete', '?/f'],
        ['delete', '?/sub'],
      ] as const) {
        expect(`${event} ${path} ${has(event, path)}`).toBe(`${event} ${path} true`);
      }
    });

    test('a live folder really named "x (deleted)" keeps its whole name (not "?/NAME")', async () => {
      const from = w.lines.length;
      w.sh('mkdir "x (deleted)" && echo hi > "x (deleted)/f"');
      expect(await w.missing([['create', 'x (deleted)/f'], ['close_write', 'x (deleted)/f']])).toEqual([]);
      expect(w.lines.slice(from).filter((l) => l.path.startsWith('?'))).toEqual([]);
    });

    test('latency from a write to its line, over 200 writes', async () => {
      const ms: number[] = [];
      for (let i = 0; i < 200; i++) {
        const rel = `lat${i}`;
        writeFileSync(join(w.here, rel), 'x');
        const t0 = process.hrtime.bigint();
        expect(await w.until(() => w.get('close_write', rel).length > 0, 5_000)).toBe(true);
        ms.push(Number(w.get('close_write', rel)[0]!.at - t0) / 1e6);
        unlinkSync(join(w.here, rel));
      }
      ms.sort((a, b) => a - b);
      const p50 = percentile(ms, 0.5);
      const p99 = percentile(ms, 0.99);
      console.log(`fanotify on ${fs}: write -> line latency over 200 writes: p50 ${p50.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms, max ${ms[ms.length - 1]!.toFixed(3)} ms`);
      expect(p99).toBeLessThan(1000); // a sanity bound only: these machines are shared and noisy
    });
  });

  test('a full kernel queue is reported as one overflow line for the mount', async () => {
    const w = await Watcher.start('tmpfs');
    // The queue holds fs.fanotify.max_queued_events (16384 by default); 20,000 distinct mkdirs while
    // the watcher is stopped overflow it.
    process.kill(w.child.pid!, 'SIGSTOP');
    try {
      for (let i = 0; i < 20_000; i++) mkdirSync(join(w.here, `d${i}`));
    } finally {
      process.kill(w.child.pid!, 'SIGCONT');
    }
    expect(await w.until(() => w.lines.some((l) => l.event === 'overflow'), 20_000)).toBe(true);
    const overflow = w.lines.filter((l) => l.event === 'overflow');
    expect(overflow.map((l) => `${l.pid} ${l.path}`)).toEqual([`0 ${w.mnt}`]);
    await w.stop();
  });

  test('read by startHelper (src/drift/helper.ts): a "\\r" or another control byte in a name ends no line and injects none; bytes not UTF-8 stay apart', async () => {
    const { startHelper, unescapeLine } = await import('../../src/drift/helper');
    const mnt = join(tempDir('impermanence-fanotify-'), 'mnt');
    mkdirSync(mnt);
    const lines: string[] = [];
    const { child, ready } = startHelper(
      'unshare',
      ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs "$1" && exec "$2" "$1"', 'sh', mnt, BIN],
      (l) => lines.push(l),
      () => undefined,
    );
    try {
      expect(await ready).toBe(true);
      const here = `/proc/${child.pid}/root${mnt}`;
      const names = ['.ssh\rX', 'x\rsync', 'y\roverflow', 'bell\x07\x1b[0m\x7f'];
      for (const n of names) writeFileSync(join(here, n), 'x');
      // And names that are not UTF-8: each byte comes back as U+DC00 + byte (see helper.ts), apart.
      for (const byte of [0xff, 0xfe]) writeFileSync(Buffer.concat([Buffer.from(`${here}/z`), Buffer.from([byte])]), 'x');
      names.push('z\udcff', 'z\udcfe');
      child.stdin!.write('\n');
      const deadline = Date.now() + 10_000;
      while (!lines.includes('sync') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const events = lines.slice(0, lines.indexOf('sync'));
      // Every line is an event with a PID and a path: none was cut at a "\r", none injected.
      for (const l of events) expect(l).toMatch(/^(create|close_write)\t\d+\t/);
      expect(lines.filter((l) => l === 'sync' || l.startsWith('overflow'))).toEqual(['sync']);
      const closed = events.filter((l) => l.startsWith('close_write\t')).map((l) => unescapeLine(l.split('\t')[2]!));
      expect(closed.sort()).toEqual(names.map((n) => join(mnt, n)).sort());
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('exits 0 when its stdin is closed (the parent died), and on SIGTERM', async () => {
    const a = await Watcher.start('tmpfs');
    a.child.stdin!.end();
    expect(await a.exit).toEqual({ code: 0, signal: null });

    const b = await Watcher.start('tmpfs');
    b.child.kill('SIGTERM');
    expect(await b.exit).toEqual({ code: 0, signal: null });
    expect(a.stderr + b.stderr).toBe('');
  });

  test('overlayfs (no file handles): exit 2 and a one-line message', async () => {
    const dir = tempDir('impermanence-fanotify-');
    const mnt = join(dir, 'merged');
    mkdirSync(mnt);
    const script =
      'mount -t tmpfs tmpfs "$1" && mkdir "$1/l" "$1/u" "$1/w" "$1/o" && ' +
      'mount -t overlay overlay -o "lowerdir=$1/l,upperdir=$1/u,workdir=$1/w" "$1/o" && exec "$2" "$1/o"';
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', mnt, BIN], { encoding: 'utf8', input: '' });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^impermanence-fanotify: .*\/o: cannot watch this filesystem: .*overlayfs.*\n$/);
  });

  test('without root: exit 3; usage errors and a missing directory: exit 1', () => {
    const dir = tempDir('impermanence-fanotify-');
    chmodSync(dir, 0o755);
    const nobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', BIN, dir], { encoding: 'utf8', input: '' });
    expect(nobody.status).toBe(3);
    expect(nobody.stderr).toMatch(/needs root/);

    for (const args of [[], ['a', 'b'], ['--help'], [join(dir, 'missing')]]) {
      const r = spawnSync(BIN, args, { encoding: 'utf8', input: '' });
      expect(`${args.join(' ')} -> ${r.status}`).toBe(`${args.join(' ')} -> 1`);
      expect(r.stderr).toMatch(/^impermanence-fanotify: .*\n$/);
    }
  });
});
