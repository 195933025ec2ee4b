/**
 * The Debian package, installed as a user would: built from the tree (npm run package:deb),
 * `apt-get install ./impermanence_*.deb` in a booted Debian trixie container, whose apt resolves
 * nodejs 20 (and polkitd, recommended) from trixie's own package lists. The container keeps its
 * root across reboots (a disposable copy of the cached rootfs), as an installed machine does.
 * The packages nodejs and polkitd need were downloaded into apt's cache when the rootfs was
 * built, so the container needs no network.
 *
 * Then: the next boot runs the generator and the daemon, with every shipped preset included
 * (one boot, no failed unit); an admin's `systemctl --global disable impermanence-notify`
 * survives an upgrade to a higher version; `apt-get remove` leaves a machine that
 * boots with no generator and nothing failed; `purge` removes what the package installed and
 * keeps the admin's /etc/impermanence and the storage.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { Container, cacheDir, ensureRootfs, leftovers, ROOTFS_PACKAGES, type RootfsSpec } from './nspawn';
import { sh } from './package';

jest.setTimeout(20 * 60_000);

const REPO = path.join(__dirname, '..', '..');
export const TRIXIE: RootfsSpec = { suite: 'trixie', packages: ROOTFS_PACKAGES, aptCache: ['nodejs', 'polkitd'] };
const NAME = `pkg-trixie-${process.pid}`;
const APT = 'DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0';

let tmp = '';
let work = '';
let storage = '';
let c: Container;
const debs: Record<'first' | 'upgrade', string> = { first: '', upgrade: '' };
const presets = fs.readdirSync(path.join(REPO, 'presets')).map((f) => f.replace(/\.toml$/, '')).sort();

function buildDeb(out: string): string {
  const env = { ...process.env, IMPERMANENCE_DEB_OUT: out, IMPERMANENCE_DEB_LINTIAN: '1' };
  const r = spawnSync(path.join(REPO, 'scripts', 'package-deb.sh'), [], { env, encoding: 'utf8', timeout: 10 * 60_000 });
  if (r.status !== 0) throw new Error(`package-deb.sh failed:\n${r.stdout}\n${r.stderr}`);
  console.log(`lintian on the package:\n${r.stderr}`);
  return r.stdout.trim().split('\n').at(-1)!;
}

/**
 * The upgrade: the same package under a higher version (unpacked, its control file's Version
 * raised, packed again). The maintainer scripts see what an upgrade gives them, the old and the
 * new version, and the test does not build (and fetch from npm) a second time.
 */
function withVersion(deb: string, version: string, out: string): string {
  const dir = fs.mkdtempSync(path.join(tmp, 'repack-'));
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  };
  run('dpkg-deb', ['-R', deb, dir]);
  const control = path.join(dir, 'DEBIAN', 'control');
  fs.writeFileSync(control, fs.readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${version}`));
  const target = path.join(out, path.basename(deb).replace(/^impermanence_[^_]+_/, `impermanence_${version}_`));
  run('dpkg-deb', ['--root-owner-group', '-b', dir, target]);
  fs.rmSync(dir, { recursive: true, force: true });
  return target;
}

/** Presets with a system part, and those with a home part. */
function presetConfig(): string {
  const system: string[] = [];
  const home: string[] = [];
  for (const p of presets) {
    const preset = parseToml(fs.readFileSync(path.join(REPO, 'presets', `${p}.toml`), 'utf8'));
    if (preset.directories || preset.files) system.push(p);
    if (preset.home) home.push(p);
  }
  return `# the admin's config: every shipped preset, and one path of its own
[persistence."/persistent"]
include = ${JSON.stringify(system)}
directories = ["/var/lib/admin-data"]
users.bird.include = ${JSON.stringify(home)}
`;
}

beforeAll(async () => {
  const rootfs = await ensureRootfs(TRIXIE);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-pkg-'));
  // IMPERMANENCE_E2E_DEB_DIR: packages built before (by this test's recipe), to iterate faster.
  const given = process.env.IMPERMANENCE_E2E_DEB_DIR;
  const pick = (v: string) => given && fs.readdirSync(given).find((f) => f.startsWith(`impermanence_${v}_`) && f.endsWith('.deb'));
  const [first, upgrade] = [pick('0.1.0'), pick('0.1.0+e2e1')];
  debs.first = first ? path.join(given!, first) : buildDeb(path.join(tmp, 'deb'));
  debs.upgrade = upgrade ? path.join(given!, upgrade) : withVersion(debs.first, '0.1.0+e2e1', path.join(tmp, 'deb'));
  storage = path.join(tmp, 'persistent');
  fs.mkdirSync(storage);
  // A root that keeps what is installed across reboots: a copy of the cached image, on disk.
  work = fs.mkdtempSync(path.join(cacheDir(), '.work-pkg-'));
  const cp = spawnSync('cp', ['-a', `${rootfs}/.`, work]);
  if (cp.status !== 0) throw new Error(`cp failed: ${cp.stderr}`);
  c = await Container.boot({
    name: NAME, rootfs: work, inPlace: true, hostNode: false,
    binds: [{ host: storage, container: '/persistent' }],
    setup: (root) => {
      for (const d of Object.values(debs)) fs.copyFileSync(d, path.join(root, 'root', path.basename(d)));
    },
  });
}, 30 * 60_000);

afterAll(async () => {
  await c?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers(NAME)).toEqual([]);
});

describe('the Debian package on trixie', () => {
  let installedFiles: string[] = [];

  it('installs with apt, which brings nodejs 20 from the archive, and starts the daemon', async () => {
    expect((await c.exec(['sh', '-c', 'command -v node'])).code).not.toBe(0);
    const out = await sh(c, `cd /root && ${APT} install ./${path.basename(debs.first)}`);
    expect(out).toMatch(/Setting up nodejs \(20\./);
    expect(await sh(c, 'node --version')).toMatch(/^v20\./);
    expect(await sh(c, "dpkg-query -W -f '${Version} ${db:Status-Status}' impermanence")).toBe('0.1.0 installed');
    expect(await sh(c, 'systemctl is-enabled impermanence.service; systemctl --global is-enabled impermanence-notify.service')).toBe('enabled\nenabled\n');
    expect(await sh(c, 'systemctl is-active impermanence.service')).toBe('active\n');
    expect(await sh(c, 'busctl introspect org.impermanence.Manager /org/impermanence/Manager')).toMatch(/org\.impermanence\.Manager\s+interface/);
    // the generator is where systemd looks for it, and runs from there
    expect(await sh(c, 'readlink -f /usr/lib/systemd/system-generators/impermanence-generator')).toBe('/usr/lib/impermanence/impermanence-generator\n');
    expect(await sh(c, 'ls /usr/share/impermanence/presets')).toBe(presets.map((p) => `${p}.toml\n`).join(''));
    installedFiles = (await sh(c, 'dpkg -L impermanence')).trim().split('\n');
  });

  it('the next boot runs the generator (every preset included) and the daemon, with nothing failed', async () => {
    await sh(c, `cat > /etc/impermanence/persist.d/50-admin.toml <<'EOF'\n${presetConfig()}EOF`);
    expect(await sh(c, 'impermanencectl check')).toBeDefined();
    await c.reboot();
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(c.state).toBe('running');
    expect(await sh(c, 'systemctl is-active impermanence.target impermanence.service')).toBe('active\nactive\n');
    // one path from each kind of preset, mounted from storage
    for (const p of ['/var/lib/admin-data', '/var/log/journal', '/var/lib/bluetooth', '/var/lib/NetworkManager', '/var/lib/postgresql',
      '/var/lib/docker', '/var/lib/libvirt', '/var/lib/AccountsService', '/home/bird/.mozilla', '/home/bird/.gnupg', '/home/bird/.config/dconf',
      '/home/bird/.local/share/kwalletd', '/home/bird/.ssh']) {
      expect(await sh(c, `findmnt -n -o TARGET --mountpoint ${p}`)).toBe(`${p}\n`);
    }
    expect(await sh(c, 'readlink /home/bird/.config/kdeglobals')).toBe('/persistent/home/bird/.config/kdeglobals\n');
    expect(await sh(c, 'busctl introspect org.impermanence.Manager /org/impermanence/Manager')).toMatch(/org\.impermanence\.Manager\s+interface/);
    expect(fs.existsSync(path.join(storage, 'var/lib/admin-data'))).toBe(true);
  });

  it("an upgrade keeps the admin's systemctl --global disable of the desktop agent", async () => {
    await sh(c, 'systemctl --global disable impermanence-notify.service');
    await sh(c, `cd /root && ${APT} install ./${path.basename(debs.upgrade)}`);
    expect(await sh(c, "dpkg-query -W -f '${Version}' impermanence")).toBe('0.1.0+e2e1');
    expect((await c.sh('systemctl --global is-enabled impermanence-notify.service')).stdout).toBe('disabled\n');
    expect(await sh(c, 'systemctl is-enabled impermanence.service; systemctl is-active impermanence.service')).toBe('enabled\nactive\n');
  });

  it('after apt-get remove the machine boots with no generator and nothing failed', async () => {
    await sh(c, `${APT} remove impermanence`);
    await c.reboot();
    expect(c.state).toBe('running');
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(await sh(c, 'ls /usr/lib/systemd/system-generators/ /run/systemd/generator/ | grep -c impermanence || true')).toBe('0\n');
    expect(await sh(c, 'find /usr/lib/systemd /etc/systemd -xtype l -name "*impermanence*" -path "*generator*"')).toBe('');
    expect(await sh(c, 'findmnt -n -o TARGET --mountpoint /var/lib/admin-data || true')).toBe('');
    expect((await c.exec(['busctl', 'status', 'org.impermanence.Manager'])).code).not.toBe(0);
    // the admin's config stays (it is not the package's), and so does what the package's conffiles hold until purge
    expect(await sh(c, 'ls /etc/impermanence/persist.d/')).toBe('50-admin.toml\n');
  });

  it("purge removes what the package installed and keeps the admin's /etc/impermanence and the storage", async () => {
    await sh(c, `${APT} purge impermanence`);
    expect((await c.exec(['dpkg', '-s', 'impermanence'])).code).not.toBe(0);
    // Every file it installed is gone, and every folder of its own; shared folders (/usr/lib/systemd...) stay.
    const own = installedFiles.filter((f) => f !== '/.' && !f.startsWith('/etc/impermanence'));
    const left = await sh(c, `for f in ${own.map((f) => `'${f}'`).join(' ')}; do if [ -L "$f" ] || [ -f "$f" ]; then echo "$f"; elif [ -d "$f" ]; then case "$f" in *impermanence*) echo "$f";; esac; fi; done`);
    expect(left).toBe('');
    expect(await sh(c, 'ls -d /etc/systemd/system/*/impermanence* /etc/systemd/user/*/impermanence* /var/lib/systemd/deb-systemd-*/*impermanence* 2>/dev/null || true')).toBe('');
    expect(await sh(c, 'cat /etc/impermanence/persist.d/50-admin.toml')).toBe(presetConfig());
    expect(fs.existsSync(path.join(storage, 'var/lib/admin-data'))).toBe(true);
    await c.reboot();
    expect(c.state).toBe('running');
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
  });
});
