/**
 * impermanencectl persist and unpersist as root, on real files, real uids and real mounts, each
 * run in a mount namespace of its own (unshare): a tmpfs on /run, the storage bind-mounted on
 * itself (a mounted filesystem, as the storage check wants), a kernel command line naming the
 * config folder on the storage, and test/fixtures/persist-bin first in PATH: a systemctl that runs
 * the real generator and the real mount.impermanence (PID 1 is not systemd here), and a cp that
 * lets an unprivileged user win a race at the moment root's copy starts. The same commands on a
 * booted systemd: test/e2e/persist.test.ts.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CTL, REPO, run, tempDir } from '../helpers';

const isRoot = process.getuid?.() === 0;
const BIN = join(REPO, 'test/fixtures/persist-bin');
const VICTIM_TEXT = 'ROOT ONLY\n';

interface Sandbox { dir: string; storage: string; config: string; victim: string; victimDir: string; raceLog: string }

/** A sandbox folder (traversable by uid 1000), its storage and config folder, and a root-only victim file and folder. */
function sandbox(): Sandbox {
  const dir = tempDir('impermanence-persist-');
  chmodSync(dir, 0o755);
  const storage = join(dir, 'persistent');
  const config = join(storage, 'etc/impermanence/persist.d');
  mkdirSync(config, { recursive: true });
  writeFileSync(join(config, '10-base.toml'), `[persistence."${storage}"]\ndirectories = []\n`);
  writeFileSync(join(dir, 'cmdline'), `quiet impermanence.config=${config}\n`);
  const victim = join(dir, 'victim');
  writeFileSync(victim, VICTIM_TEXT, { mode: 0o600 });
  const victimDir = join(dir, 'victim.d');
  mkdirSync(victimDir, { mode: 0o700 });
  writeFileSync(join(victimDir, 'secret'), VICTIM_TEXT, { mode: 0o600 });
  return { dir, storage, config, victim, victimDir, raceLog: join(dir, 'race.log') };
}

/**
 * `impermanencectl ARGS` in a mount namespace of its own (see the top); `setup` runs there first;
 * `command`, a shell script, runs there instead ("$IMPERMANENCE_NODE" "$CTL" runs impermanencectl).
 */
function ctlIn(sb: Sandbox, args: string[], opts: { env?: Record<string, string>; setup?: string; command?: string } = {}) {
  const script = [
    'mount -t tmpfs -o mode=0755 tmpfs /run',
    'mount --bind "$SB/persistent" "$SB/persistent"',
    'mount --bind "$SB/cmdline" /proc/cmdline',
    opts.setup ?? ':',
    opts.command ?? 'exec "$IMPERMANENCE_NODE" "$CTL" "$@"',
  ].join('\n');
  return run('unshare', ['-m', '--propagation', 'private', 'sh', '-ec', script, 'sh', ...args], {
    env: { SB: sb.dir, CTL, IMPERMANENCE_NODE: process.execPath, IMPERMANENCE_DIST: join(REPO, 'dist'), PATH: `${BIN}:${process.env.PATH}`, ...opts.env },
  });
}

/** The user who races root (test/fixtures/persist-bin/cp), acting in `dirs`, her symlinks leading to `victim`. */
const racer = (sb: Sandbox, dirs: string[], victim = sb.victim) => ({ RACE_VICTIM: victim, RACE_DIRS: dirs.join(' '), RACE_LOG: sb.raceLog });

function expectVictimsUntouched(sb: Sandbox): void {
  const look = (p: string) => {
    const st = lstatSync(p);
    return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, ...(st.isDirectory() ? { names: readdirSync(p) } : { text: readFileSync(p, 'utf8') }) };
  };
  expect(look(sb.victim)).toEqual({ text: VICTIM_TEXT, uid: 0, gid: 0, mode: 0o600 });
  expect(look(sb.victimDir)).toEqual({ names: ['secret'], uid: 0, gid: 0, mode: 0o700 });
  expect(look(join(sb.victimDir, 'secret'))).toEqual({ text: VICTIM_TEXT, uid: 0, gid: 0, mode: 0o600 });
}

/** What is in a folder, apart from `except`: [name, uid, kind]. */
const entries = (dir: string, except: string[] = []) =>
  readdirSync(dir)
    .filter((n) => !except.includes(n))
    .sort()
    .map((n) => {
      const st = lstatSync(join(dir, n));
      return [n, st.uid, st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'file'];
    });

(isRoot ? describe : describe.skip)('persist and unpersist as root, where a user owns the folders', () => {
  it('unpersist: a symlink the user makes at the moment root copies the file back leads nowhere (the copy is made in a root-only folder)', () => {
    const sb = sandbox();
    const share = join(sb.dir, 'share');
    const kept = join(sb.storage, share.slice(1), 'app.conf');
    mkdirSync(join(sb.storage, share.slice(1)), { recursive: true });
    writeFileSync(kept, 'written by uid 1000\n');
    chownSync(kept, 1000, 1000);
    mkdirSync(share);
    chownSync(share, 1000, 1000);
    symlinkSync(kept, join(share, 'app.conf')); // the entry as the boot made it (a symlink: method "symlink")
    writeFileSync(join(sb.config, '50-local.toml'), `[persistence."${sb.storage}"]\nfiles = [\n  "${share}/app.conf",\n]\n`);

    const r = ctlIn(sb, ['unpersist', join(share, 'app.conf')], { env: racer(sb, [share]) });
    // The race happened: she planted or swapped at the moment cp started.
    expect(readFileSync(sb.raceLog, 'utf8')).toMatch(/^(planted|swapped) /m);
    expectVictimsUntouched(sb);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`copied ${kept} back to ${share}/app.conf`);
    // The file is back on the root, hers; nothing of root's is left in her folder (only her own symlinks).
    expect(readFileSync(join(share, 'app.conf'), 'utf8')).toBe('written by uid 1000\n');
    expect(entries(share)).toEqual(expect.arrayContaining([['app.conf', 1000, 'file']]));
    for (const [name, uid, kind] of entries(share, ['app.conf'])) expect([name, uid, kind]).toEqual([name, 1000, 'symlink']);
    expect(readFileSync(kept, 'utf8')).toBe('written by uid 1000\n'); // storage keeps its copy
  });

  it('unpersist of a mounted folder: a symlink to a root-only folder, made where root copies it back or swapped for root\'s temporary folder, neither redirects nor blocks the copy', () => {
    const sb = sandbox();
    const share = join(sb.dir, 'share');
    const data = join(share, 'data');
    const source = join(sb.storage, data.slice(1));
    mkdirSync(join(source, 'sub'), { recursive: true });
    writeFileSync(join(source, 'sub/notes'), 'notes\n');
    chownSync(join(source, 'sub/notes'), 1000, 1000);
    mkdirSync(data, { recursive: true });
    chownSync(share, 1000, 1000);
    writeFileSync(join(sb.config, '50-local.toml'), `[persistence."${sb.storage}"]\ndirectories = [\n  "${data}",\n]\n`);
    const unit = run('systemd-escape', ['--path', '--suffix=mount', data]).stdout.trim();

    const r = ctlIn(sb, ['unpersist', data], { env: racer(sb, [share], sb.victimDir), setup: `systemctl daemon-reload; systemctl start '${unit}'; mountpoint -q '${data}'` });
    expect(readFileSync(sb.raceLog, 'utf8')).toMatch(/^(planted|swapped) /m);
    expectVictimsUntouched(sb);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(join(data, 'sub/notes'), 'utf8')).toBe('notes\n');
    expect(lstatSync(join(data, 'sub/notes')).uid).toBe(1000);
    for (const [name, uid, kind] of entries(share, ['data'])) expect([name, uid, kind]).toEqual([name, 1000, 'symlink']);
  });

  it('unpersist: the user\'s folder swapped for a symlink to a root-only folder at the moment root copies back: the file lands in her folder, wherever she moved it', () => {
    const sb = sandbox();
    const home = join(sb.dir, 'home');
    const share = join(home, 'share');
    const kept = join(sb.storage, share.slice(1), 'app.conf');
    mkdirSync(join(sb.storage, share.slice(1)), { recursive: true });
    writeFileSync(kept, 'written by uid 1000\n');
    chownSync(kept, 1000, 1000);
    mkdirSync(share, { recursive: true });
    chownSync(home, 1000, 1000);
    chownSync(share, 1000, 1000);
    symlinkSync(kept, join(share, 'app.conf'));
    writeFileSync(join(sb.config, '50-local.toml'), `[persistence."${sb.storage}"]\nfiles = [\n  "${share}/app.conf",\n]\n`);

    const r = ctlIn(sb, ['unpersist', join(share, 'app.conf')], { env: { ...racer(sb, [share], sb.victimDir), RACE_MOVE: share } });
    expect(readFileSync(sb.raceLog, 'utf8')).toMatch(/^moved /m);
    expectVictimsUntouched(sb);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // Root held the folder itself: the file is in it, under the name she gave it.
    expect(readlinkSync(share)).toBe(sb.victimDir);
    expect(readFileSync(join(home, 'share.moved/app.conf'), 'utf8')).toBe('written by uid 1000\n');
    for (const [name, uid, kind] of entries(join(home, 'share.moved'), ['app.conf'])) expect([name, uid, kind]).toEqual([name, 1000, 'symlink']);
  });

  it('persist (adoption): a symlink the user makes in her storage folder at the moment root copies her file into it leads nowhere', () => {
    const sb = sandbox();
    const share = join(sb.dir, 'share');
    const inStorage = join(sb.storage, share.slice(1));
    mkdirSync(inStorage, { recursive: true });
    chownSync(inStorage, 1000, 1000); // a storage folder she may write, as a home's is
    mkdirSync(share);
    chownSync(share, 1000, 1000);
    writeFileSync(join(share, 'app.conf'), 'written by uid 1000\n');
    chownSync(join(share, 'app.conf'), 1000, 1000);

    const r = ctlIn(sb, ['persist', join(share, 'app.conf')], { env: racer(sb, [inStorage]) });
    expect(readFileSync(sb.raceLog, 'utf8')).toMatch(/^(planted|swapped) /m);
    expectVictimsUntouched(sb);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`copied ${share}/app.conf into ${inStorage}/app.conf`);
    expect(readFileSync(join(inStorage, 'app.conf'), 'utf8')).toBe('written by uid 1000\n');
    expect(lstatSync(join(inStorage, 'app.conf')).uid).toBe(1000);
    for (const [name, uid, kind] of entries(inStorage, ['app.conf'])) expect([name, uid, kind]).toEqual([name, 1000, 'symlink']);
  });
});

(isRoot ? describe : describe.skip)('persist: what is written while it runs is not lost', () => {
  it('a folder: files and folders written after the copy, before the mount, are moved into storage; a file changed meanwhile is set aside and named', () => {
    const sb = sandbox();
    const app = join(sb.dir, 'srv/app');
    const source = join(sb.storage, app.slice(1));
    mkdirSync(join(app, 'sub'), { recursive: true });
    writeFileSync(join(app, 'a'), 'one\n');
    writeFileSync(join(app, 'sub/b'), 'two\n');
    chownSync(join(app, 'sub'), 1000, 1000);
    // A service writing while persist runs: at the moment the mount is started (after the copy).
    const hook = [
      `echo new > '${app}/new'`,
      `echo new2 > '${app}/sub/new2'`,
      `mkdir '${app}/newdir' && echo c > '${app}/newdir/c'`,
      `chown -R 1000:1000 '${app}/newdir'`,
      `echo changed > '${app}/a'`,
    ].join('\n');

    const r = ctlIn(sb, ['persist', app], { env: { SYSTEMCTL_START_HOOK: hook } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${app} is mounted from ${source}`);
    // In storage: the copy, and what was written meanwhile, in its place, with its owner.
    expect(readFileSync(join(source, 'a'), 'utf8')).toBe('one\n');
    expect(readFileSync(join(source, 'sub/b'), 'utf8')).toBe('two\n');
    expect(readFileSync(join(source, 'new'), 'utf8')).toBe('new\n');
    expect(readFileSync(join(source, 'sub/new2'), 'utf8')).toBe('new2\n');
    expect(readFileSync(join(source, 'newdir/c'), 'utf8')).toBe('c\n');
    expect(lstatSync(join(source, 'newdir/c')).uid).toBe(1000);
    // What differs from storage's copy is set aside in storage, and the output says where.
    const aside = readdirSync(join(source, '..')).filter((n) => n.startsWith('app.impermanence-unsaved-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(source, '..', aside[0]!, 'a'), 'utf8')).toBe('changed\n');
    expect(r.stdout).toContain(`moved into ${source}: new, newdir, sub/new2`);
    expect(r.stdout).toContain(`set aside in ${join(source, '..', aside[0]!)}: a`);
    // The root's copy under the mount is cleared (what is left on the root after the namespace is gone).
    expect(readdirSync(app)).toEqual([]);
    // No temporary folder of ours is left in storage.
    expect(readdirSync(join(source, '..')).sort()).toEqual(['app', aside[0]]);
  });

  it('a file changed after the copy, before the mount: the changed content is set aside, not truncated away', () => {
    const sb = sandbox();
    const file = join(sb.dir, 'srv/f.conf');
    const source = join(sb.storage, file.slice(1));
    mkdirSync(join(sb.dir, 'srv'));
    writeFileSync(file, 'old\n');

    const r = ctlIn(sb, ['persist', file], { env: { SYSTEMCTL_START_HOOK: `echo newer > '${file}'` } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(source, 'utf8')).toBe('old\n');
    const aside = readdirSync(join(source, '..')).filter((n) => n.startsWith('f.conf.impermanence-unsaved-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(source, '..', aside[0]!, 'f.conf'), 'utf8')).toBe('newer\n');
    expect(r.stdout).toContain(`set aside in ${join(source, '..', aside[0]!)}: f.conf`);
    expect(readFileSync(file, 'utf8')).toBe(''); // the root's copy under the mount: cleared
  });

  it('a folder with nothing written meanwhile: all moved, the root\'s copy cleared, nothing set aside', () => {
    const sb = sandbox();
    const app = join(sb.dir, 'srv/quiet');
    const source = join(sb.storage, app.slice(1));
    mkdirSync(join(app, 'd/e'), { recursive: true });
    writeFileSync(join(app, 'd/e/f'), 'f\n');
    symlinkSync('d/e/f', join(app, 'link'));
    const r = ctlIn(sb, ['persist', app]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/moved into|set aside|hidden/);
    expect(readFileSync(join(source, 'd/e/f'), 'utf8')).toBe('f\n');
    expect(readlinkSync(join(source, 'link'))).toBe('d/e/f');
    expect(readdirSync(app)).toEqual([]);
    expect(readdirSync(join(source, '..'))).toEqual(['quiet']);
  });

  it('two persists at once: one waits for the other, and both paths end up persisted (in the drop-in and mounted)', () => {
    const sb = sandbox();
    const a = join(sb.dir, 'srv/a');
    const b = join(sb.dir, 'srv/b');
    for (const d of [a, b]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'f'), 'f\n');
    }
    // Both in one namespace (one /run, where the lock is), each copy slowed down so that they overlap.
    const both = [
      '"$IMPERMANENCE_NODE" "$CTL" persist "$A" > "$SB/a.out" 2>&1 & pa=$!',
      '"$IMPERMANENCE_NODE" "$CTL" persist "$B" > "$SB/b.out" 2>&1 & pb=$!',
      'ra=0; wait $pa || ra=$?; rb=0; wait $pb || rb=$?',
      'echo "codes $ra $rb"',
      'mountpoint -q "$A" && mountpoint -q "$B" && echo "both mounted"',
    ].join('\n');
    const r = ctlIn(sb, [], { env: { A: a, B: b, CP_DELAY: '1' }, command: both });
    expect(r.stdout).toBe('codes 0 0\nboth mounted\n');
    const said = readFileSync(join(sb.dir, 'a.out'), 'utf8') + readFileSync(join(sb.dir, 'b.out'), 'utf8');
    expect(said).toContain('waiting for another persist or unpersist to finish');
    const dropIn = readFileSync(join(sb.config, '50-local.toml'), 'utf8');
    expect(dropIn).toContain(`"${a}"`);
    expect(dropIn).toContain(`"${b}"`);
  });
});
