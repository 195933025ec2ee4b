/**
 * mount.impermanence (src/generator/native/mount-impermanence.c), the mount(8) helper behind the
 * generated Type=impermanence units, driven for real: as root, in a private mount namespace
 * (unshare -m --propagation private: nothing is mounted on the host), through the real mount(8)
 * with the helper where mount(8) looks for it (a tmpfs over /usr/sbin in that namespace, and one
 * over /run so that utab stays private too).
 *
 * A fixture stands for a machine: ROOT stands for "/", STORAGE for "/persistent", and a persisted
 * path P is ROOT/..., its source STORAGE + P (as the generator writes them).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from './helpers';

const HELPER = join(REPO, 'dist', 'mount.impermanence');
const NOBODY = 65534;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs a shell script as root in a private mount namespace where mount(8) finds the helper. */
function inNamespace(script: string, timeout = 120_000) {
  const prelude = [
    'set -u',
    'mount -t tmpfs impermanence-test-run /run',
    'mount -t tmpfs impermanence-test-sbin /usr/sbin',
    `cp ${q(HELPER)} /usr/sbin/mount.impermanence`,
  ].join('\n');
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `${prelude}\n${script}`], { encoding: 'utf8', timeout });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function fixture() {
  const base = tempDir('impermanence-mount-');
  chmodSync(base, 0o755); // the user who flips folders must reach them
  const storage = join(base, 'persistent');
  const root = join(base, 'root');
  const secret = join(base, 'secret'); // stands for /root: root's, 0700, with a secret in it
  mkdirSync(secret, { mode: 0o700 });
  writeFileSync(join(secret, 'secret.txt'), 'root only\n');
  const dir = (p: string, uid = 0) => {
    mkdirSync(p, { recursive: true });
    chownSync(p, uid, uid);
  };
  return { base, storage, root, secret, dir, path: (p: string) => root + p, source: (p: string) => storage + root + p };
}

type Fixture = ReturnType<typeof fixture>;

/** The shell command systemd's `mount` runs for a generated unit (environment included). */
function mountCmd(f: Fixture, p: string, kind: 'directory' | 'file', extra = '') {
  const path = f.path(p);
  return `IMPERMANENCE_STORAGE=${q(f.storage)} IMPERMANENCE_PATH=${q(path)} IMPERMANENCE_KIND=${kind} mount ${q(f.source(p))} ${q(path)} -t impermanence ${extra}`;
}

describe('mount.impermanence', () => {
  beforeAll(() => {
    expect(spawnSync(HELPER, [], { encoding: 'utf8' }).status).toBe(1); // built by npm test: usage
  });

  it('mounts a directory and a file from storage, applies ro, and records x-gvfs-* options in utab', () => {
    const f = fixture();
    f.dir(f.source('/home/bird/Documents'), NOBODY);
    writeFileSync(f.source('/home/bird/Documents/kept.txt'), 'kept\n');
    f.dir(f.path('/home/bird/Documents'), NOBODY);
    f.dir(f.source('/etc'));
    writeFileSync(f.source('/etc/machine-id'), 'f'.repeat(32) + '\n');
    f.dir(f.path('/etc'));
    writeFileSync(f.path('/etc/machine-id'), '');
    const docs = f.path('/home/bird/Documents');
    const id = f.path('/etc/machine-id');
    const r = inNamespace([
      `IMPERMANENCE_USER_OPTIONS=x-gvfs-hide,x-gvfs-trash ${mountCmd(f, '/home/bird/Documents', 'directory', '-o x-gvfs-hide,x-gvfs-trash')} || exit 10`,
      `${mountCmd(f, '/etc/machine-id', 'file', '-o ro,nosuid,nodev')} || exit 11`,
      `cat ${q(docs)}/kept.txt ${q(id)}`,
      `findmnt -n -o SOURCE,OPTIONS -m ${q(docs)}`,
      `findmnt -n -o SOURCE,VFS-OPTIONS ${q(id)}`,
      `(echo x >> ${q(id)}) 2>/dev/null && echo writable || echo read-only`,
      `umount ${q(docs)} && umount ${q(id)} && echo unmounted`,
    ].join('\n'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.slice(0, 2)).toEqual(['kept', 'f'.repeat(32)]);
    expect(lines[2]).toMatch(new RegExp(`\\[${f.source('/home/bird/Documents')}\\] .*\\bx-gvfs-hide,x-gvfs-trash$`));
    expect(lines[3]).toMatch(new RegExp(`\\[${f.source('/etc/machine-id')}\\] ro,nosuid,nodev\\b`));
    expect(lines.slice(4)).toEqual(['read-only', 'unmounted', '']);
  });

  it('mounts paths with spaces, quotes, backslashes and non-ASCII text', () => {
    const f = fixture();
    const odd = '/srv/with space/quo"te/back\\slash/ünï-cödé';
    f.dir(f.source(odd));
    writeFileSync(f.source(odd) + '/x', 'odd\n');
    f.dir(f.path(odd));
    const r = inNamespace(`${mountCmd(f, odd, 'directory', '-o x-gvfs-hide')} && cat ${q(f.path(odd))}/x`);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('odd\n');
  });

  /** Runs a mount that must be refused: the helper's one line on stderr, and nothing mounted there or at the secret. */
  function refused(f: Fixture, p: string, kind: 'directory' | 'file', prepare = '') {
    const target = f.path(p);
    const r = inNamespace([
      prepare,
      `${mountCmd(f, p, kind)}; echo "exit $?"`,
      `mountpoint -q ${q(target)} && echo "MOUNTED at target"`,
      `findmnt -rn -o TARGET,SOURCE | grep -F ${q(f.secret)} && echo "MOUNTED the secret"`,
      `findmnt -rn -o TARGET | grep -F ${q(f.base)} | grep -v -F ${q(f.source(''))} && echo "MOUNTED below the fixture"`,
      'true',
    ].join('\n'));
    expect(r.stdout).toBe('exit 32\n'); // mount(8): mount failure; nothing mounted anywhere
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    return r.stderr.trimEnd();
  }

  it('refuses a source that is a symlink', () => {
    const f = fixture();
    f.dir(f.source('/home/bird'), NOBODY);
    symlinkSync(f.secret, f.source('/home/bird/Documents'));
    f.dir(f.path('/home/bird/Documents'), NOBODY);
    expect(refused(f, '/home/bird/Documents', 'directory')).toBe(
      `mount.impermanence: ${f.path('/home/bird/Documents')}: the source ${f.source('/home/bird/Documents')} goes through a symlink (${f.source('/home/bird/Documents')} is one): refused, not mounted`,
    );
  });

  it('refuses a source below a symlinked folder, even one that stays inside the storage', () => {
    const f = fixture();
    f.dir(f.source('/home/bird'), NOBODY);
    // Inside the storage: mount(8) alone would resolve it to another persisted, root-only folder.
    f.dir(f.source('/root/.ssh'));
    symlinkSync(f.source('/root'), f.source('/home/bird/.local'));
    f.dir(f.path('/home/bird/.local/.ssh'), NOBODY);
    expect(refused(f, '/home/bird/.local/.ssh', 'directory')).toContain(
      `: the source ${f.source('/home/bird/.local/.ssh')} goes through a symlink (${f.source('/home/bird/.local')} is one): refused, not mounted`,
    );
  });

  it('refuses a mount point that is a symlink, or below a symlinked folder', () => {
    const f = fixture();
    f.dir(f.source('/home/bird/Documents'), NOBODY);
    f.dir(f.source('/home/bird/.config/app'), NOBODY);
    f.dir(f.path('/home/bird'), NOBODY);
    const victim = join(f.base, 'etc');
    mkdirSync(join(victim, 'app'), { recursive: true });
    symlinkSync(victim, f.path('/home/bird/Documents'));
    symlinkSync(victim, f.path('/home/bird/.config'));
    // mount(8) resolves the symlink first; the helper sees that the mount point it was given is not the unit's.
    expect(refused(f, '/home/bird/Documents', 'directory')).toContain(`: mount(8) resolved the mount point to ${victim}: it goes through a symlink; refused, not mounted`);
    expect(refused(f, '/home/bird/.config/app', 'directory')).toContain(`: mount(8) resolved the mount point to ${victim}/app`);
  });

  it('refuses a symlinked mount point when called directly, as mount(8) would with the path unresolved', () => {
    const f = fixture();
    f.dir(f.source('/home/bird/Documents'), NOBODY);
    f.dir(f.path('/home/bird'), NOBODY);
    symlinkSync(f.secret, f.path('/home/bird/Documents'));
    const target = f.path('/home/bird/Documents');
    const r = inNamespace(`IMPERMANENCE_STORAGE=${q(f.storage)} IMPERMANENCE_PATH=${q(target)} IMPERMANENCE_KIND=directory ${q(HELPER)} ${q(f.source('/home/bird/Documents'))} ${q(target)} -o rw; echo "exit $?"; mountpoint -q ${q(f.secret)} && echo MOUNTED; true`);
    expect(r.stdout).toBe('exit 32\n');
    expect(r.stderr).toBe(`mount.impermanence: ${target}: the mount point goes through a symlink (${target} is one): refused, not mounted\n`);
  });

  it('refuses sources and mount points of the wrong type', () => {
    const f = fixture();
    f.dir(f.source('/srv'));
    writeFileSync(f.source('/srv/file-not-dir'), 'x');
    mkdirSync(f.source('/srv/dir-not-file'));
    spawnSync('mkfifo', [f.source('/srv/fifo')]);
    f.dir(f.source('/srv/dir-on-file'));
    f.dir(f.path('/srv/file-not-dir'));
    writeFileSync(f.path('/srv/dir-not-file'), '');
    writeFileSync(f.path('/srv/fifo'), '');
    writeFileSync(f.path('/srv/dir-on-file'), '');
    expect(refused(f, '/srv/file-not-dir', 'directory')).toContain(`: the source ${f.source('/srv/file-not-dir')} is a regular file, not a directory: refused`);
    expect(refused(f, '/srv/dir-not-file', 'file')).toContain(`: the source ${f.source('/srv/dir-not-file')} is a directory, not a regular file: refused`);
    expect(refused(f, '/srv/fifo', 'file')).toContain('is a fifo, not a regular file: refused');
    expect(refused(f, '/srv/dir-on-file', 'directory')).toContain(': the mount point is a regular file, not a directory: refused');
  });

  it('refuses unknown options, remount (exit 32), and a call without the unit environment (exit 1)', () => {
    const f = fixture();
    f.dir(f.source('/srv/a'));
    f.dir(f.path('/srv/a'));
    const a = f.path('/srv/a');
    const r = inNamespace([
      `${mountCmd(f, '/srv/a', 'directory', '-o uid=0')}; echo "exit $?"`,
      `${mountCmd(f, '/srv/a', 'directory', '-o remount')}; echo "exit $?"`,
      `${q(HELPER)} ${q(f.source('/srv/a'))} ${q(a)} -o rw; echo "exit $?"`,
      `mountpoint -q ${q(a)} && echo MOUNTED; true`,
    ].join('\n'));
    expect(r.stdout).toBe('exit 32\nexit 32\nexit 1\n');
    expect(r.stderr).toBe([
      `mount.impermanence: ${a}: unsupported mount option uid=0 (supported: ro, rw, nosuid, nodev, noexec, noatime, relatime, strictatime, nodiratime)`,
      `mount.impermanence: ${a}: remount is not supported: stop and start the mount unit instead`,
      `mount.impermanence: ${a}: IMPERMANENCE_STORAGE is not set: this helper mounts the units impermanence-generator writes (Type=impermanence), which set it`,
      '',
    ].join('\n'));
  });
});

/**
 * The race the helper closes: a user swaps a storage folder they own (or a mount point in their
 * home) for a symlink to a secret folder, over and over (renameat2 RENAME_EXCHANGE, the fastest
 * flip there is), while it is mounted. Plain `mount --bind` (what Type=none units did) is run the
 * same way as a control: it shows how often the window is hit.
 */
describe('mount.impermanence under a symlink race', () => {
  const ITERATIONS = 1000;
  const CONTROL = 200;
  let flipper: string;
  beforeAll(() => {
    const dir = tempDir('impermanence-flip-');
    flipper = join(dir, 'flip');
    writeFileSync(join(dir, 'flip.c'), `#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
/* flip A B: exchanges A and B forever (until killed). */
int main(int argc, char **argv) {
  if (argc != 3) return 2;
  for (;;) renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE);
}
`);
    const cc = spawnSync(process.env.CC ?? 'cc', ['-O2', '-o', flipper, join(dir, 'flip.c')], { encoding: 'utf8' });
    expect(cc.stderr).toBe('');
    chmodSync(dir, 0o755);
  });

  /**
   * Mounts `p` `iterations` times while nobody flips FLIP (real folder) and FLIP.swap (symlink to
   * the secret). Counts: mounts done (the real folder, checked), refusals (and how many named a
   * symlink: the window was hit), leaks (the secret mounted, or something mounted at the secret).
   */
  function race(f: Fixture, p: string, flip: string, mount: string, iterations = ITERATIONS) {
    const target = f.path(p);
    const err = join(f.base, 'stderr');
    const script = `
      setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups ${q(flipper)} ${q(flip)} ${q(flip + '.swap')} &
      flipper=$!
      done=0 refused=0 symlink=0 leaks=0 i=0
      while [ $i -lt ${iterations} ]; do
        i=$((i + 1))
        ok=0
        if ${mount} 2>${q(err)}; then
          ok=1 done=$((done + 1))
        else
          refused=$((refused + 1))
          grep -q symlink ${q(err)} && symlink=$((symlink + 1))
        fi
        if mountpoint -q ${q(f.secret)}; then
          leaks=$((leaks + 1)); umount -l ${q(f.secret)}
        elif [ $ok = 1 ]; then
          # Mounted on the real folder, wherever the flips left it (the user may rename their own
          # folder between the helper's open and the mount), and showing the real folder's files.
          where=
          for t in ${q(target)} ${q(target + '.swap')}; do
            if [ ! -L "$t" ] && [ -d "$t" ] && mountpoint -q "$t"; then where=$t; fi
          done
          if [ -z "$where" ] || [ -e "$where/secret.txt" ] || [ ! -e "$where/real.txt" ]; then leaks=$((leaks + 1)); fi
        fi
        # Clean up; the flipper still runs, so a folder may turn into the symlink between the
        # check and umount ("not mounted"): the mount then stays on the folder until a later round.
        for t in ${q(target)} ${q(target + '.swap')}; do
          if [ ! -L "$t" ] && [ -d "$t" ] && mountpoint -q "$t"; then umount -l "$t" 2>/dev/null || true; fi
        done
      done
      kill $flipper
      wait $flipper 2>/dev/null
      echo "$done $refused $symlink $leaks"
    `;
    const r = inNamespace(script, 300_000);
    expect(r.stderr).toBe('');
    const [done, refusedN, symlink, leaks] = r.stdout.trim().split(' ').map(Number) as [number, number, number, number];
    expect(done + refusedN).toBe(iterations);
    return { done, refused: refusedN, symlink, leaks };
  }

  it(`never mounts the secret: a source flipped with a symlink, ${ITERATIONS} mounts`, () => {
    const f = fixture();
    f.dir(f.source('/home/bird'), NOBODY);
    f.dir(f.source('/home/bird/Documents'), NOBODY);
    writeFileSync(f.source('/home/bird/Documents/real.txt'), 'mine\n');
    symlinkSync(f.secret, f.source('/home/bird/Documents.swap'));
    f.dir(f.path('/home/bird/Documents'), NOBODY);
    const target = f.path('/home/bird/Documents');
    const helper = race(f, '/home/bird/Documents', f.source('/home/bird/Documents'), mountCmd(f, '/home/bird/Documents', 'directory'));
    const plain = race(f, '/home/bird/Documents', f.source('/home/bird/Documents'), `mount --bind ${q(f.source('/home/bird/Documents'))} ${q(target)}`, CONTROL);
    console.log(
      `source flipped with a symlink to a secret folder, ${ITERATIONS} mounts:\n` +
        `  mount.impermanence: ${helper.done} mounted, ${helper.refused} refused (${helper.symlink} of them on a symlink: the window was hit), ${helper.leaks} leaks\n` +
        `  mount --bind (the old Type=none unit), ${CONTROL} mounts: ${plain.done} mounted, ${plain.refused} failed, ${plain.leaks} leaks`,
    );
    expect(helper.leaks).toBe(0);
    expect(helper.symlink).toBeGreaterThan(0);
    expect(helper.done).toBeGreaterThan(0);
    expect(plain.leaks).toBeGreaterThan(0); // the race is real
  });

  it(`never mounts over the secret: a mount point flipped with a symlink, ${ITERATIONS} mounts`, () => {
    const f = fixture();
    f.dir(f.source('/home/bird/Documents'), NOBODY);
    writeFileSync(f.source('/home/bird/Documents/real.txt'), 'mine\n');
    f.dir(f.path('/home/bird'), NOBODY);
    f.dir(f.path('/home/bird/Documents'), NOBODY);
    symlinkSync(f.secret, f.path('/home/bird/Documents.swap'));
    const target = f.path('/home/bird/Documents');
    const helper = race(f, '/home/bird/Documents', target, mountCmd(f, '/home/bird/Documents', 'directory'));
    const plain = race(f, '/home/bird/Documents', target, `mount --bind ${q(f.source('/home/bird/Documents'))} ${q(target)}`, CONTROL);
    console.log(
      `mount point flipped with a symlink to a secret folder, ${ITERATIONS} mounts:\n` +
        `  mount.impermanence: ${helper.done} mounted, ${helper.refused} refused (${helper.symlink} of them on a symlink: the window was hit), ${helper.leaks} leaks\n` +
        `  mount --bind (the old Type=none unit), ${CONTROL} mounts: ${plain.done} mounted, ${plain.refused} failed, ${plain.leaks} leaks`,
    );
    expect(helper.leaks).toBe(0);
    expect(helper.symlink).toBeGreaterThan(0);
    expect(helper.done).toBeGreaterThan(0);
    expect(plain.leaks).toBeGreaterThan(0);
  });
});
