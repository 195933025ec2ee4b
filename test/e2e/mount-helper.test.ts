/**
 * mount.impermanence on a booted system: the generated Type=impermanence units are mounted by
 * the helper that packaging/install.sh installs as /usr/sbin/mount.impermanence, through the real
 * systemd and mount(8). A storage folder that a user swaps for a symlink to /root after the
 * generator checked it (here: during boot, by a unit ordered between the generator's run and
 * the mount; then at runtime, before a restart of the mount) is refused: the mount unit fails,
 * its status says why, and nothing is mounted there.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh } from './package';

jest.setTimeout(20 * 60_000); // the first run debootstraps (~1 min); boots take about a second

const CONFIG_IN_STORAGE = '/persistent/etc/impermanence/persist.d';
const ODD = '/srv/quo"te back\\slash 100%';
const CONFIG = `
[persistence."/persistent"]
hideMounts = true
directories = ["/var/lib/kept", ${JSON.stringify(ODD)}]
files = ["/etc/kept.conf"]
[persistence."/persistent".users.bird]
directories = ["Documents", { directory = "Music", hideMount = false }]
`;
const DOCS_UNIT = 'home-bird-Documents.mount';
const REFUSED = 'mount.impermanence: /home/bird/Documents: the source /persistent/home/bird/Documents goes through a symlink (/persistent/home/bird/Documents is one): refused, not mounted';

/** A user's swap of their storage folder for a symlink to /root, as bird, during boot: after the generator checked it, before the mount. */
const SWAP_UNIT = `[Unit]
Description=e2e: bird swaps a storage folder for a symlink to /root
DefaultDependencies=no
After=impermanence-prepare@persistent.service
Before=${DOCS_UNIT}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=runuser -u bird -- sh -c 'mv /persistent/home/bird/Documents /persistent/home/bird/Documents.real && ln -s /root /persistent/home/bird/Documents'
`;

let tmp: string;
let rootfs: string;
const containers: Container[] = [];

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function makeStorage(name: string): string {
  const storage = path.join(tmp, name);
  const config = path.join(storage, CONFIG_IN_STORAGE.slice('/persistent/'.length));
  fs.mkdirSync(config, { recursive: true });
  fs.writeFileSync(path.join(config, '10-e2e.toml'), CONFIG);
  fs.mkdirSync(path.join(storage, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(storage, 'etc/kept.conf'), 'kept in storage\n');
  return storage;
}

async function boot(name: string, storage: string, swapDuringBoot = false): Promise<Container> {
  const c = await Container.boot({
    name: `${name}-${process.pid}`,
    rootfs,
    binds: [{ host: storage, container: '/persistent' }],
    initArgs: [`impermanence.config=${CONFIG_IN_STORAGE}`],
    setup: (root) => {
      installPackage(root);
      fs.writeFileSync(path.join(root, 'root/secret.txt'), 'root only\n', { mode: 0o600 });
      if (swapDuringBoot) {
        fs.writeFileSync(path.join(root, 'etc/systemd/system/e2e-swap.service'), SWAP_UNIT);
        fs.mkdirSync(path.join(root, 'etc/systemd/system/local-fs.target.wants'), { recursive: true });
        fs.symlinkSync('../e2e-swap.service', path.join(root, 'etc/systemd/system/local-fs.target.wants/e2e-swap.service'));
      }
    },
  });
  containers.push(c);
  return c;
}


beforeAll(async () => {
  rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-mount-'));
});

afterAll(async () => {
  for (const c of containers) await c.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
});

describe('a boot with mount.impermanence', () => {
  let c: Container;
  let storage: string;
  beforeAll(async () => {
    storage = makeStorage('clean');
    c = await boot('mhelper', storage);
  });

  it('mounts persisted directories and files through the helper, with nothing failed', async () => {
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(c.state).toBe('running');
    expect(await sh(c, 'test -x /usr/sbin/mount.impermanence && test -x /sbin/mount.impermanence && echo installed')).toBe('installed\n');
    for (const [where, kind] of [['/var/lib/kept', 'directory'], [ODD, 'directory'], ['/home/bird/Documents', 'directory'], ['/home/bird/Music', 'directory'], ['/etc/kept.conf', 'file']]) {
      const unit = (await sh(c, `systemd-escape --path --suffix=mount ${q(where!)}`)).trim();
      // Type= in the unit (systemctl show reports the mounted filesystem's type once it is mounted).
      expect(await sh(c, `grep -x Type=impermanence "$(systemctl show -p FragmentPath --value ${q(unit)})"; systemctl is-active ${q(unit)}`)).toBe('Type=impermanence\nactive\n');
      expect(await sh(c, `systemctl show -p Environment --value ${q(unit)}`)).toContain(`IMPERMANENCE_KIND=${kind}`);
      // The kernel's view: a bind of the storage path (the clone open_tree made).
      expect((await sh(c, `findmnt -n -o SOURCE --mountpoint ${q(where!)}`)).trimEnd()).toMatch(new RegExp(`\\[${(storage + where).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\]$`));
    }
    expect(await sh(c, 'cat /etc/kept.conf')).toBe('kept in storage\n');
    expect(await sh(c, `stat -c '%U:%G %a' /home/bird/Documents /persistent/home/bird/Documents`)).toBe('bird:bird 755\nbird:bird 755\n');
    // File managers see x-gvfs-hide (libmount merges the helper's utab line); Music is not hidden.
    expect(await sh(c, 'findmnt -m -n -o OPTIONS /home/bird/Documents')).toMatch(/(^|,)x-gvfs-hide(,|$)/m);
    expect(await sh(c, 'findmnt -m -n -o OPTIONS /home/bird/Music')).not.toMatch(/x-gvfs/);
  });

  it('refuses a storage folder swapped for a symlink before a restart of its mount', async () => {
    await sh(c, [
      `systemctl stop ${DOCS_UNIT}`,
      "runuser -u bird -- sh -c 'mv /persistent/home/bird/Documents /persistent/home/bird/Documents.real && ln -s /root /persistent/home/bird/Documents'",
    ].join(' && '));
    const start = await c.sh(`systemctl start ${DOCS_UNIT}`);
    expect(start.code).not.toBe(0);
    expect(await sh(c, `systemctl is-failed ${DOCS_UNIT} || true`)).toBe('failed\n');
    expect((await c.sh(`systemctl status --no-pager --lines=10 ${DOCS_UNIT}`)).stdout).toContain(REFUSED);
    expect((await c.sh('mountpoint -q /home/bird/Documents')).code).not.toBe(0);
    expect(await sh(c, 'ls -A /home/bird/Documents')).toBe('');
  });
});

describe('a storage folder swapped for a symlink during boot, after the generator checked it', () => {
  it('is refused: the mount unit fails and says why, nothing is mounted there, the rest is mounted', async () => {
    const c = await boot('mhswap', makeStorage('swapped'), true);
    expect(c.state).toBe('degraded');
    expect(await sh(c, 'systemctl is-active e2e-swap.service')).toBe('active\n');
    expect(fs.readlinkSync(path.join(tmp, 'swapped/home/bird/Documents'))).toBe('/root');
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toMatch(new RegExp(`^${DOCS_UNIT.replace(/\./g, '\\.')} +loaded failed failed Persistent directory /home/bird/Documents\\n$`));
    expect((await c.sh(`systemctl status --no-pager --lines=10 ${DOCS_UNIT}`)).stdout).toContain(REFUSED);
    expect((await c.sh('mountpoint -q /home/bird/Documents')).code).not.toBe(0);
    expect(await sh(c, 'ls -A /home/bird/Documents')).toBe('');
    expect(await sh(c, 'findmnt -rn -o TARGET,SOURCE | grep -c "\\[/root\\]" || true')).toBe('0\n');
    for (const where of ['/var/lib/kept', '/home/bird/Music', '/etc/kept.conf']) expect((await c.sh(`mountpoint -q ${q(where)}`)).code).toBe(0);
    await c.stop();
  });
});
