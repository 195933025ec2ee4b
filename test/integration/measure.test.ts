/**
 * The daemon's live re-measure of a drift group (RootLayout.measure) and the full scan run as
 * root: a folder a user owns, swapped for a symlink to a secret folder (standing for /root)
 * before or during the walk, is never followed, so the secret's files never show in a report.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, lstatSync, mkdirSync, readlinkSync, renameSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { resolveConfig } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { RootLayout } from '../../src/drift/layout';
import { scanDrift } from '../../src/drift/scan';
import type { DriftItem } from '../../src/drift/report';
import { EXAMPLE_ROOT, REPO, tempDir, tree } from '../helpers';

const BIRD = 1000; // in examples/root/etc/passwd
const SECRET_FILES = 7;
const SECRET_BYTES = 7 * 1001;

/** A root with bird's home, a persisted ~/.ssh (so ~ is a known folder), and a root-only secret folder outside it. */
function fixture() {
  const root = tempDir('impermanence-measure-');
  chmodSync(root, 0o755);
  cpSync(join(EXAMPLE_ROOT, 'etc'), join(root, 'etc'), { recursive: true });
  const home = join(root, 'home/bird');
  mkdirSync(join(home, '.ssh'), { recursive: true });
  mkdirSync(join(home, '.local/share/keyrings'), { recursive: true });
  for (const d of ['home/bird', 'home/bird/.ssh', 'home/bird/.local', 'home/bird/.local/share', 'home/bird/.local/share/keyrings']) chownSync(join(root, d), BIRD, BIRD);
  const secret = join(tempDir('impermanence-secret-'), 'root'); // outside the root, as /root is outside a home
  mkdirSync(join(secret, 'secretsub'), { recursive: true, mode: 0o700 });
  chmodSync(secret, 0o700);
  for (let i = 0; i < SECRET_FILES; i++) writeFileSync(join(secret, i < 3 ? `secretsub/s${i}` : `s${i}`), 'x'.repeat(1001));
  const users = UserDb.read(root);
  const config = resolveConfig(loadConfig([tree({ 'a.toml': '[persistence."/persistent"]\n[persistence."/persistent".users.bird]\ndirectories = [".ssh", ".local/share/keyrings"]\n' })]), users);
  return { root, home, secret, users, config, layout: () => new RootLayout(config, root, new Set([root]), users) };
}

/** A real folder of bird's with one 10-byte file, and beside it FOLDER.swap, a symlink to the secret. */
function birdFolder(path: string, secret: string) {
  mkdirSync(path);
  chownSync(path, BIRD, BIRD);
  writeFileSync(join(path, 'mine'), '0123456789');
  symlinkSync(secret, path + '.swap');
}

/** Items that show the secret: its names, or sizes made of its 1001-byte files (real files are 10 bytes, folders 4096, links shorter). */
function leaked(items: Iterable<DriftItem | undefined>): DriftItem[] {
  return [...items].filter((i): i is DriftItem => !!i && (i.path.includes('secretsub') || /\/s\d$/.test(i.path) || (i.bytes > 0 && i.bytes % 1001 === 0)));
}

let flipper: string;
beforeAll(() => {
  const dir = tempDir('impermanence-flip-');
  chmodSync(dir, 0o755);
  flipper = join(dir, 'flip');
  writeFileSync(join(dir, 'flip.c'), '#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdio.h>\nint main(int argc, char **argv) { if (argc != 3) return 2; for (;;) renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE); }\n');
  const cc = spawnSync(process.env.CC ?? 'cc', ['-O2', '-o', flipper, join(dir, 'flip.c')], { encoding: 'utf8' });
  expect(cc.stderr).toBe('');
});

/** Runs fn while bird flips `path` and `path.swap` (renameat2 RENAME_EXCHANGE), then stops the flipper. */
async function whileFlipping<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const child = spawn('setpriv', [`--reuid=${BIRD}`, `--regid=${BIRD}`, '--clear-groups', flipper, path, path + '.swap'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 20));
  try {
    return await fn();
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Leave the real folder at `path`, whatever the last flip did.
    if (lstatSync(path).isSymbolicLink()) {
      const target = readlinkSync(path);
      unlinkSync(path);
      renameSync(path + '.swap', path);
      symlinkSync(target, path + '.swap');
    }
  }
}

describe('RootLayout.measure (the daemon\'s live re-measure)', () => {
  it('counts a group folder swapped for a symlink before measuring as the symlink, never its target', async () => {
    const f = fixture();
    symlinkSync(f.secret, join(f.home, '.config'));
    const out = await f.layout().measure('/home/bird/.config', 0);
    expect([...out.keys()]).toEqual(['/home/bird/.config']);
    expect(out.get('/home/bird/.config')).toMatchObject({ files: 1, bytes: f.secret.length }); // the link itself
    expect(leaked(out.values())).toEqual([]);
  });

  it('finds nothing in a group below a folder swapped for a symlink', async () => {
    const f = fixture();
    symlinkSync(f.secret, join(f.home, '.config'));
    const out = await f.layout().measure('/home/bird/.config/secretsub', 0);
    expect([...out.entries()]).toEqual([['/home/bird/.config/secretsub', undefined]]);
  });

  it('measures the real folder as before', async () => {
    const f = fixture();
    birdFolder(join(f.home, '.config'), f.secret);
    mkdirSync(join(f.home, '.config/app'));
    writeFileSync(join(f.home, '.config/app/settings'), 'abc');
    const out = await f.layout().measure('/home/bird/.config', 0);
    expect(out.get('/home/bird/.config')).toMatchObject({ files: 1, bytes: 10 });
    expect(out.get('/home/bird/.config/app')).toMatchObject({ files: 1, bytes: 3 });
  });

  it('never counts the secret while the group folder, or a folder inside it, is flipped with a symlink (2,000 measures each)', async () => {
    const f = fixture();
    const config = join(f.home, '.config');
    birdFolder(config, f.secret);
    mkdirSync(join(config, 'app'));
    chownSync(join(config, 'app'), BIRD, BIRD);
    birdFolder(join(config, 'app/inner'), f.secret);
    const layout = f.layout();
    const leaks: DriftItem[] = [];
    // The group itself flipped: measure 2,000 times, more if either state was seen too rarely.
    const seen = { real: 0, link: 0, gone: 0 };
    await whileFlipping(config, async () => {
      for (let i = 0; i < 5000 && (i < 2000 || seen.real < 20 || seen.link < 20); i++) {
        const out = await layout.measure('/home/bird/.config', 0);
        leaks.push(...leaked(out.values()));
        const g = out.get('/home/bird/.config');
        if (out.has('/home/bird/.config/app')) seen.real++;
        else if (g) seen.link++;
        else seen.gone++;
      }
    });
    // A folder inside the group flipped while the group is walked.
    let inner = 0;
    await whileFlipping(join(config, 'app/inner'), async () => {
      for (; inner < 2000; inner++) leaks.push(...leaked((await layout.measure('/home/bird/.config/app', 0)).values()));
    });
    console.log(
      `live re-measure, a group flipped with a symlink to a secret folder: ${seen.real + seen.link + seen.gone} measures ` +
        `(${seen.real} saw the real folder, ${seen.link} the symlink itself, ${seen.gone} nothing); a folder inside it flipped: ${inner} measures; ${leaks.length} leaks`,
    );
    expect(leaks).toEqual([]);
    expect(seen.real).toBeGreaterThan(0);
    expect(seen.link).toBeGreaterThan(0);
  }, 120_000); // 4,000+ measures: ~5 s on a loaded machine, past jest's default bound
});

describe('the full scan, run as root', () => {
  it.each([['with impermanence-walk', join(REPO, 'dist', 'impermanence-walk')], ['without it (the Node walk)', undefined]])(
    'never lists the secret while a known folder in a home is flipped with a symlink (%s)',
    async (_name, walker) => {
      const f = fixture();
      const share = join(f.home, '.local/share');
      // ~/.local/share is known (it holds the persisted keyrings): its files are listed one by one.
      writeFileSync(join(share, 'mine'), '0123456789');
      symlinkSync(f.secret, share + '.swap');
      const leaks: DriftItem[] = [];
      await whileFlipping(share, async () => {
        for (let i = 0; i < (walker ? 40 : 300); i++) {
          const report = await scanDrift({ root: f.root, config: f.config, users: f.users, mountPoints: new Set([f.root]), since: 0, walker });
          leaks.push(...leaked(report.items));
        }
      });
      expect(leaks).toEqual([]);
    },
  );
});
