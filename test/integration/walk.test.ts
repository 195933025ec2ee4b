/**
 * dist/impermanence-walk (src/drift/native/walk.c), the drift scan's one-filesystem walker:
 * per-directory counts and bytes of what changed since a time, skipping listed paths and globs,
 * never following symlinks nor entering another filesystem. The mount test runs the walker in its
 * own private mount namespace (`unshare -m --propagation private`) over a tmpfs mounted inside the
 * tree, so the host's mounts are never touched; it needs root. Ends with an informational timing
 * against `find -xdev` on a 200,000-file tree on /dev/shm.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from '../helpers';

jest.setTimeout(180_000);

const BIN = join(REPO, 'dist', 'impermanence-walk');
const SRC = join(REPO, 'src', 'drift', 'native', 'walk.c');
const isRoot = process.platform === 'linux' && process.getuid?.() === 0 && existsSync('/usr/bin/unshare');

const escapePath = (s: string) => s.replace(/[\\\n\t]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : '\\\\'));

interface Result {
  /** Escaped logical path -> "FILES BYTES". */
  dirs: Map<string, string>;
  /** Escaped logical path of a folder not everyone may list -> "MODE UID GID". */
  closed: Map<string, string>;
  scanned: number;
  status: number | null;
  stderr: string;
}

function parse(stdout: string, status: number | null, stderr: string): Result {
  const lines = stdout.split('\n');
  expect(lines.pop()).toBe(''); // ends with a newline
  const last = lines.pop()!.split('\t');
  expect(last[0]).toBe('total');
  expect(last[2]).toBe('-');
  const dirs = new Map<string, string>();
  const closed = new Map<string, string>();
  for (const l of lines) {
    const [files, bytes, path, ...rest] = l.split('\t');
    expect(rest).toEqual([]);
    if (files === 'closed') {
      // Said before any line for it or below it.
      for (const d of dirs.keys()) expect(d === path || d.startsWith(path === '/' ? '/' : path + '/')).toBe(false);
      expect(closed.has(path!)).toBe(false);
      closed.set(path!, bytes!);
      continue;
    }
    expect(dirs.has(path!)).toBe(false);
    dirs.set(path!, `${files} ${bytes}`);
  }
  return { dirs, closed, scanned: Number(last[1]), status, stderr };
}

function walk(root: string, since: string, skips: string[] = [], threads?: number): Result {
  const env = threads === undefined ? process.env : { ...process.env, IMPERMANENCE_WALK_THREADS: String(threads) };
  const r = spawnSync(BIN, [root, since], { input: skips.map((s) => s + '\n').join(''), encoding: 'utf8', maxBuffer: 1 << 28, env });
  return parse(r.stdout, r.status, r.stderr);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('impermanence-walk', () => {
  beforeAll(() => {
    // Build the walker when it is missing or older than its source (npm test builds it first).
    if (!existsSync(BIN) || statSync(BIN).mtimeMs < statSync(SRC).mtimeMs) {
      const r = spawnSync('bash', [join(REPO, 'scripts', 'build-native.sh')], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`scripts/build-native.sh failed:\n${r.stderr}`);
    }
  });

  const weird = 'we\nird\\dir\tx';
  /** The tree: what counts where, and the skip list. */
  function makeTree(): string {
    const root = tempDir('impermanence-walk-');
    const w = (p: string, text: string) => {
      mkdirSync(join(root, p, '..'), { recursive: true });
      writeFileSync(join(root, p), text);
    };
    w('top', '1234'); // 4 bytes at /
    w('a/x', 'hi\n'); // 3
    w('a/b/y', 'hello\n'); // 6
    w('a/b/c/d/deep', ''); // 0 bytes, still a file
    symlinkSync('/usr/share', join(root, 'a', 'link')); // a symlink to a directory outside: one entry of 10 bytes
    w('var/log/skipped', 'nope');
    w('var/log/sub/skipped', 'nope');
    w('var/logs/kept', '12'); // a sibling with the skipped path as a prefix is not skipped
    w('var/lib/skipme', 'nope'); // a skipped file
    w('var/lib/keep', 'abc');
    w('home/u/.cache/c', 'nope');
    w('home/v/.cache/sub/c', 'nope');
    w('home/u/.cachex', '12345'); // the glob matches whole names only
    w('home/u/sub/.cache/c', 'zz'); // FNM_PATHNAME: * does not match u/sub
    w(`${weird}/f`, 'abcdef');
    mkdirSync(join(root, 'mnt'));
    chmodSync(root, 0o755);
    chmodSync(join(root, 'a', 'b'), 0o750); // closed: others may not list it
    chmodSync(join(root, 'var', 'logs'), 0o1733); // closed, sticky
    return root;
  }
  const ids = `${process.getuid!()} ${process.getgid!()}`;
  const expectedClosed = new Map([
    ['/a/b', `${0o750} ${ids}`],
    ['/var/logs', `${0o1733} ${ids}`],
  ]);
  const skips = ['/var/log', '/var/lib/skipme', 'glob /home/*/.cache'];
  const expected = new Map([
    ['/', '1 4'],
    ['/a', '2 13'],
    ['/a/b', '1 6'],
    ['/a/b/c/d', '1 0'],
    ['/var/logs', '1 2'],
    ['/var/lib', '1 3'],
    ['/home/u', '1 5'],
    ['/home/u/sub/.cache', '1 2'],
    [escapePath(`/${weird}`), '1 6'],
  ]);

  test('counts files and bytes per directory, skipping listed paths and globs, not following symlinks', () => {
    const root = makeTree();
    const r = walk(root, '0', skips);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.dirs).toEqual(expected);
    expect(r.closed).toEqual(expectedClosed);
    expect(r.scanned).toBe(10);
    // Without skips everything counts.
    expect(walk(root, '0').scanned).toBe(10 + 5);
    // A trailing slash in a skipped path is ignored; skipping "/" skips everything.
    expect(walk(root, '0', ['/var/log/', '/var/lib/skipme', 'glob /home/*/.cache']).dirs).toEqual(expected);
    const all = walk(root, '0', ['/']);
    expect([all.dirs.size, all.scanned]).toEqual([0, 0]);
  });

  test.each([1, 2, 4])('the same with IMPERMANENCE_WALK_THREADS=%i', (threads) => {
    const root = makeTree();
    const r = walk(root, '0', skips, threads);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.dirs).toEqual(expected);
    expect(r.closed).toEqual(expectedClosed);
    expect(r.scanned).toBe(10);
    expect(walk(root, '0', [], threads).scanned).toBe(10 + 5);
    const all = walk(root, '0', ['/'], threads);
    expect([all.dirs.size, all.scanned]).toEqual([0, 0]);
  });

  test('one thread or several: the same lines over a wider tree, the total last', () => {
    const root = tempDir('impermanence-walk-');
    const want = new Map<string, string>();
    for (let i = 0; i < 30; i++) {
      for (let j = 0; j < 8; j++) {
        const d = join(root, `d${i}`, `e${j}`, ...(j % 3 === 0 ? ['deeper', 'still'] : []));
        mkdirSync(d, { recursive: true });
        for (let k = 0; k <= j; k++) writeFileSync(join(d, `f${k}`), 'x'.repeat(k));
        want.set(d.slice(root.length), `${j + 1} ${(j * (j + 1)) / 2}`);
      }
    }
    const one = walk(root, '0', [], 1);
    expect(one.dirs).toEqual(want);
    for (const threads of [2, 3, 8]) {
      const r = walk(root, '0', [], threads);
      expect(r.status).toBe(0);
      expect(r.dirs).toEqual(want);
      expect(r.scanned).toBe(one.scanned);
    }
  });

  (isRoot ? test : test.skip)('never enters another filesystem (a tmpfs mounted inside, in a private mount namespace)', () => {
    const root = makeTree();
    const script = 'mount -t tmpfs walk-test "$1/mnt" && echo inside > "$1/mnt/f" && mkdir "$1/mnt/d" && echo x > "$1/mnt/d/g" && exec "$2" "$1" 0';
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, BIN], {
      input: skips.map((s) => s + '\n').join(''),
      encoding: 'utf8',
    });
    const res = parse(r.stdout, r.status, r.stderr);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.dirs).toEqual(expected);
    expect(res.scanned).toBe(10);
    // And the mount was private: nothing is left on the host.
    expect(existsSync(join(root, 'mnt', 'f'))).toBe(false);
  });

  /**
   * Runs the walker with `sh` limits (`ulimit` arguments, e.g. '-s 8192') over a tree that `make`
   * (a Node script run with the root as its argument, chdir-ing down so that no path grows past
   * PATH_MAX) builds on a tmpfs mounted in a private mount namespace: a tree too deep for rm -r is
   * gone with the namespace.
   */
  function walkMade(make: string, limits: string[], threads: number) {
    const root = tempDir('impermanence-walk-deep-');
    const script =
      'mount -t tmpfs -o nr_inodes=0 walk-deep "$1" && "$2" -e "$3" "$1" && ' +
      limits.map((l) => `ulimit ${l} && `).join('') +
      'IMPERMANENCE_WALK_THREADS=$4 exec "$5" "$1" 0 </dev/null';
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, process.execPath, make, String(threads), BIN], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    });
    return { stdout: r.stdout, status: r.status, stderr: r.stderr };
  }
  const DEPTH = 20_000;
  /** One chain of folders 20,000 deep with a file at the bottom, or `chains` of them side by side
   * (c0, c1...): with two threads, parallel chains make each thread go deep. */
  const makeDeep = (chains: number) => `const fs = require('fs'); process.chdir(process.argv[1]);
    for (let c = 0; c < ${chains}; c++) {
      if (${chains} > 1) { fs.mkdirSync('c' + c); process.chdir('c' + c); }
      for (let i = 0; i < ${DEPTH}; i++) { fs.mkdirSync('d'); process.chdir('d'); }
      fs.writeFileSync('secret', 'hello');
      process.chdir(process.argv[1]);
    }`;
  const bottoms = (chains: number) =>
    new Map(Array.from({ length: chains }, (_, c) => [(chains > 1 ? `/c${c}` : '') + '/d'.repeat(DEPTH), '1 5']));
  const chainsFor = (threads: number) => (threads === 1 ? 1 : 12);

  (isRoot ? test.each([1, 2]) : test.skip.each([1, 2]))('a tree 20,000 folders deep, 8 MB of stack, %i thread(s): the file at the bottom counts', (threads) => {
    const chains = chainsFor(threads);
    const r = walkMade(makeDeep(chains), ['-s 8192'], threads);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const res = parse(r.stdout, r.status, r.stderr);
    expect(res.dirs).toEqual(bottoms(chains));
    expect(res.scanned).toBe(chains);
  });

  (isRoot ? test.each([1, 2]) : test.skip.each([1, 2]))('a low RLIMIT_NOFILE, %i thread(s): the walk is whole, or it fails saying so, never a partial count', (threads) => {
    // 16 fds (soft and hard) in all: the walk raises nothing, and holds few.
    const deep = walkMade(makeDeep(chainsFor(threads)), ['-n 16'], threads);
    if (deep.status === 0) expect(parse(deep.stdout, deep.status, deep.stderr).dirs).toEqual(bottoms(chainsFor(threads)));
    else {
      expect(deep.status).toBe(1);
      expect(deep.stderr).toMatch(/^impermanence-walk: .*the walk is incomplete/);
      expect(deep.stdout).not.toMatch(/^total\t/m);
    }
    // 300 levels, each with subdirectories left to enter after the one that goes on ("d" between
    // "a" and "z", whatever the order of the listing): their fds past the budget are closed and
    // the folders opened again later.
    const makeWide = `const fs = require('fs'); process.chdir(process.argv[1]);
      for (let i = 0; i < 300; i++) {
        for (const s of ['a', 'd', 'z']) fs.mkdirSync(s);
        fs.writeFileSync('a/f', 'x'); fs.writeFileSync('z/f', 'yy'); process.chdir('d');
      }`;
    const want = new Map<string, string>();
    for (let i = 0; i < 300; i++) {
      want.set('/d'.repeat(i) + '/a', '1 1');
      want.set('/d'.repeat(i) + '/z', '1 2');
    }
    for (const limit of ['-n 16', '-n 64']) {
      const wide = walkMade(makeWide, [limit], threads);
      if (wide.status !== 0) {
        expect(wide.status).toBe(1);
        expect(wide.stderr).toMatch(/^impermanence-walk: .*the walk is incomplete/);
        continue;
      }
      const res = parse(wide.stdout, wide.status, wide.stderr);
      expect(res.dirs).toEqual(want);
      expect(res.scanned).toBe(600);
    }
    // One thread needs few fds: with 16 it is whole.
    if (threads === 1) expect([deep.status, walkMade(makeWide, ['-n 16'], 1).status]).toEqual([0, 0]);
  });

  // tmpfs allows files of up to LLONG_MAX bytes (ext4 does not).
  (existsSync('/dev/shm') ? test : test.skip)('BYTES saturates at LLONG_MAX: two sparse files of nearly that size each (tmpfs) do not overflow', () => {
    const root = mkdtempSync('/dev/shm/impermanence-walk-sparse-');
    try {
      for (const name of ['a', 'b']) {
        const t = spawnSync('truncate', ['-s', '9223372036854775000', join(root, name)], { encoding: 'utf8' });
        expect(t.stderr).toBe('');
      }
      const r = walk(root, '0');
      expect(r.status).toBe(0);
      expect(r.dirs).toEqual(new Map([['/', '2 9223372036854775807']]));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('SINCE: only what changed since then counts, to the nanosecond', async () => {
    const root = tempDir('impermanence-walk-');
    mkdirSync(join(root, 'd'));
    writeFileSync(join(root, 'd', 'old'), 'old');
    await sleep(50);
    const since = (Date.now() / 1000).toFixed(3);
    await sleep(50);
    writeFileSync(join(root, 'd', 'new'), 'newer');
    const r = walk(root, since);
    expect(r.dirs).toEqual(new Map([['/d', '1 5']]));
    expect(r.scanned).toBe(2);
    expect(walk(root, '0').dirs).toEqual(new Map([['/d', '2 8']]));
    // The exact ctime of the newer file counts (>=), one nanosecond later does not.
    const ns = statSync(join(root, 'd', 'new'), { bigint: true }).ctimeNs;
    const asSince = (n: bigint) => `${n / 1_000_000_000n}.${String(n % 1_000_000_000n).padStart(9, '0')}`;
    expect(walk(root, asSince(ns)).dirs).toEqual(new Map([['/d', '1 5']]));
    expect(walk(root, asSince(ns + 1n)).dirs).toEqual(new Map());
    expect(walk(root, String(Number(ns / 1_000_000_000n) + 10)).scanned).toBe(2);
  });

  test('a bad ROOT or SINCE exits 1 with a message', () => {
    for (const [root, since] of [['/nonexistent-walk-root', '0'], ['relative', '0'], ['/etc/hostname', '0'], ['/', '12x'], ['/', '']]) {
      const r = spawnSync(BIN, [root!, since!], { input: '', encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^impermanence-walk: /);
    }
    expect(spawnSync(BIN, ['/'], { input: '', encoding: 'utf8' }).status).toBe(2);
  });

  (existsSync('/dev/shm') ? test : test.skip)('timing against find -xdev on 200,000 files (informational)', () => {
    const root = mkdtempSync('/dev/shm/impermanence-walk-bench-');
    try {
      const DIRS = 400;
      const PER = 500;
      for (let i = 0; i < DIRS; i++) {
        const d = join(root, `d${i % 20}`, `e${i}`);
        mkdirSync(d, { recursive: true });
        for (let j = 0; j < PER; j++) writeFileSync(join(d, `f${j}`), 'x');
      }
      const time = (fn: () => void) => {
        let best = Infinity;
        for (let k = 0; k < 3; k++) {
          const t = process.hrtime.bigint();
          fn();
          best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
        }
        return best;
      };
      let res: Result | undefined;
      const walkMs = time(() => (res = walk(root, '0')));
      expect(res!.scanned).toBe(DIRS * PER);
      expect(res!.dirs.size).toBe(DIRS);
      const findMs = time(() => {
        const r = spawnSync('find', [root, '-xdev'], { stdio: ['ignore', 'ignore', 'inherit'] });
        expect(r.status).toBe(0);
      });
      const findStatMs = time(() => {
        const r = spawnSync('find', [root, '-xdev', '-printf', '%s\n'], { stdio: ['ignore', 'ignore', 'inherit'] });
        expect(r.status).toBe(0);
      });
      console.log(
        `${DIRS * PER} files on /dev/shm, best of 3: impermanence-walk ${walkMs.toFixed(0)} ms, ` +
          `find -xdev ${findMs.toFixed(0)} ms, find -xdev -printf %s (stats every file) ${findStatMs.toFixed(0)} ms`,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('walkNative (src/drift/walker.ts) over the real walker', () => {
  /** A Set that adds up the length of every string looked up in it. */
  class CountingSet extends Set<string> {
    chars = 0;
    override has(p: string): boolean {
      this.chars += p.length;
      return super.has(p);
    }
  }

  test('folders named with bytes that are not UTF-8 (0xff, 0xfe) stay apart: a group and a closed entry each', async () => {
    const root = tempDir('impermanence-walknative-bytes-');
    chmodSync(root, 0o755);
    const named = (byte: number) => Buffer.concat([Buffer.from(root + '/'), Buffer.from([byte])]);
    for (const [byte, text] of [[0xff, 'a'], [0xfe, 'bb']] as const) {
      mkdirSync(named(byte), { mode: 0o700 });
      chmodSync(named(byte), 0o700);
      writeFileSync(Buffer.concat([named(byte), Buffer.from('/f')]), text);
    }
    const { walkNative } = await import('../../src/drift/walker');
    const { escapeLine } = await import('../../src/drift/helper');
    const { groups, scanned } = await walkNative(BIN, { host: (p) => (p === '/' ? root : root + p), since: 0, known: new Set(), skips: { exact: [], globs: [] } });
    expect(scanned).toBe(2);
    // Each byte is the lone surrogate U+DC00 + byte (see helper.ts), and escapes back to \xHH.
    const ff = '/\udcff';
    const fe = '/\udcfe';
    expect([...groups.keys()].sort()).toEqual([fe, ff]);
    expect(groups.get(ff)).toMatchObject({ files: 1, bytes: 1 });
    expect(groups.get(fe)).toMatchObject({ files: 1, bytes: 2 });
    expect(groups.get(ff)!.closed?.map((c) => [c.path, c.mode, c.files])).toEqual([[ff, 0o700, 1]]);
    expect(groups.get(fe)!.closed?.map((c) => [c.path, c.mode, c.files])).toEqual([[fe, 0o700, 1]]);
    expect([escapeLine(ff), escapeLine(fe)]).toEqual(['/\\xff', '/\\xfe']);
  });

  (existsSync('/dev/shm') ? test : test.skip)('a tree 4,000 folders deep: grouping costs about the length of what the walker printed, not depth x length per line', async () => {
    const DEPTH = 4000;
    const root = mkdtempSync('/dev/shm/impermanence-walknative-deep-');
    try {
      chmodSync(root, 0o755);
      // A file at every level; closed folders at levels 3 and 2,000 (chdir down: the paths pass PATH_MAX).
      const make = `const fs = require('fs'); process.chdir(process.argv[1]);
        for (let i = 1; i <= ${DEPTH}; i++) {
          fs.mkdirSync('d', { mode: i === 3 ? 0o700 : i === 2000 ? 0o750 : 0o755 }); process.chdir('d');
          fs.writeFileSync('f', 'x');
        }`;
      const m = spawnSync(process.execPath, ['-e', make, root], { encoding: 'utf8' });
      expect(m.stderr).toBe('');
      const known = new CountingSet();
      const lookups = { chars: 0 };
      const { walkNative } = await import('../../src/drift/walker');
      const { groups, scanned } = await walkNative(BIN, {
        host: (p) => (p === '/' ? root : root + p),
        since: 0,
        known,
        skips: { exact: [], globs: [] },
        lookups,
      });
      expect(scanned).toBe(DEPTH);
      const g = groups.get('/d/d')!;
      expect([g.files, g.bytes]).toEqual([DEPTH - 1, DEPTH - 1]);
      const at = (level: number) => '/d'.repeat(level);
      expect(g.closed?.map((c) => [c.path, c.mode, c.files, c.parent])).toEqual([
        [at(3), 0o700, 2000 - 3, -1], // levels 3 to 1,999: below, the files count towards the closed folder inside
        [at(2000), 0o750, DEPTH - 1999, 0],
      ]);
      expect(groups.get('/d')).toMatchObject({ files: 1, bytes: 1 });
      // The walker printed a line per level, each about 2 x level long: the lookups stay within a
      // few times that (looking up every prefix of every line was ~DEPTH / 3 times more).
      let printed = 0;
      for (let level = 1; level <= DEPTH; level++) printed += 2 * level;
      expect(lookups.chars + known.chars).toBeGreaterThan(0);
      expect(lookups.chars + known.chars).toBeLessThan(4 * printed);
    } finally {
      spawnSync('rm', ['-rf', root]);
    }
  });
});
