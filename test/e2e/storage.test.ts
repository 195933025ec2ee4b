/**
 * No silent loss, on a booted systemd with a root wiped at every boot: a storage root that is
 * not mounted activates nothing and says so; a config folder named on the kernel command line
 * that is not there is an error; persisting /etc on empty storage adopts it and boots; a
 * machine ID generated on the first boot survives reboots.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh } from './package';

jest.setTimeout(20 * 60_000);

let tmp: string;
let rootfs: string;
const containers: Container[] = [];


/** A config shipped in the image (/usr/lib/impermanence/persist.d), as on a tmpfs root with its own /usr. */
function shipConfig(root: string, text: string): void {
  fs.mkdirSync(path.join(root, 'usr/lib/impermanence/persist.d'), { recursive: true });
  fs.writeFileSync(path.join(root, 'usr/lib/impermanence/persist.d/10-test.toml'), text);
}

async function boot(name: string, opts: { storage?: string; initArgs?: string[]; setup?: (root: string) => void }): Promise<Container> {
  const c = await Container.boot({
    name: `${name}-${process.pid}`,
    rootfs,
    binds: opts.storage ? [{ host: opts.storage, container: '/persistent' }] : [],
    initArgs: opts.initArgs,
    setup: (root) => {
      installPackage(root);
      opts.setup?.(root);
    },
  });
  containers.push(c);
  return c;
}


async function diffItems(c: Container): Promise<Array<{ kind: string; path: string; detail: string; files: number }>> {
  const r = await c.sh('impermanencectl diff --json');
  if (r.code !== 0 && r.code !== 3) throw new Error(`diff: ${r.code} ${r.stderr}`);
  return JSON.parse(r.stdout).items;
}

beforeAll(async () => {
  rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-storage-'));
});

afterAll(async () => {
  for (const c of containers) await c.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
});

describe('a storage root that is not mounted', () => {
  const CONFIG = `[persistence."/persistent"]
directories = ["/var/log", "/srv/data"]
files = ["/etc/machine-id", { file = "/etc/linked.conf", method = "symlink" }]
[persistence."/persistent".users.bird]
directories = ["Documents"]
`;
  let c: Container;
  beforeAll(async () => {
    // /persistent is a plain folder on the wiped root: what a missing fstab line or a late mount leaves.
    c = await boot('unmounted', {
      setup: (root) => {
        shipConfig(root, CONFIG);
        fs.mkdirSync(path.join(root, 'persistent'));
      },
    });
  });

  it('activates nothing from it, and a failed unit says why and what to do', async () => {
    expect(c.state).toBe('degraded');
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toMatch(/^impermanence-prepare@persistent\.service +loaded failed failed Check and prepare the persistent storage \/persistent\n$/);
    const status = (await c.sh('systemctl status --no-pager --lines=10 impermanence-prepare@persistent.service')).stdout;
    expect(status).toContain('the storage /persistent is not mounted: it is a folder on the root filesystem, which is wiped at every boot; nothing is persisted from it.');
    expect(status).toContain('x-initrd.mount');
    for (const p of ['/var/log', '/srv/data', '/home/bird/Documents', '/etc/machine-id']) expect((await c.sh(`mountpoint -q ${p}`)).code).not.toBe(0);
    // tmpfiles never ran for it: nothing was created in the folder, no symlink points into it.
    expect(await sh(c, 'find /persistent -mindepth 1 | wc -l')).toBe('0\n');
    expect((await c.sh('test -L /etc/linked.conf')).code).not.toBe(0);
  });

  it('status is degraded and diff reports every declared path as unmounted', async () => {
    const status = await c.sh('impermanencectl status');
    expect(status.code).toBe(3);
    expect(status.stdout).toMatch(/^State: degraded\n/);
    const list = JSON.parse(await sh(c, 'impermanencectl list --json')).entries as Array<{ path: string; state: string }>;
    expect(list.map((e) => `${e.path} ${e.state}`).sort()).toEqual(
      ['/etc/linked.conf', '/etc/machine-id', '/home/bird/Documents', '/srv/data', '/var/log'].map((p) => `${p} unmounted`),
    );
    const items = await diffItems(c);
    const unmounted = items.filter((i) => i.kind === 'unmounted');
    expect(unmounted.map((i) => i.path).sort()).toEqual(['/etc/linked.conf', '/etc/machine-id', '/home/bird/Documents', '/srv/data', '/var/log']);
    for (const i of unmounted) expect(i.detail).toBe('the storage /persistent is not mounted (a folder on the wiped root): writes there are lost at reboot');
  });
});

describe('impermanence.config= naming a folder on a storage that is not there', () => {
  it('is an error at boot, in status and in check, not an empty config', async () => {
    const c = await boot('nocfg', { initArgs: ['impermanence.config=/persistent/etc/impermanence/persist.d'] });
    expect(c.state).toBe('degraded');
    const status = (await c.sh('systemctl status --no-pager --lines=10 impermanence-config-error.service')).stdout;
    expect(status).toContain('/persistent/etc/impermanence/persist.d: impermanence.config= names this folder, but it does not exist. Is the storage that holds it mounted?');
    const ctl = await c.sh('impermanencectl status');
    expect(ctl.stdout).toMatch(/^State: invalid-config\n/);
    const check = await c.sh('impermanencectl check');
    expect(check.code).toBe(1);
    expect(check.stderr).toContain('impermanence.config= names this folder, but it does not exist');
    await c.stop();
  });
});

describe('persisting the whole /etc on empty storage (adoption)', () => {
  it('copies /etc into storage before mounting it, boots cleanly, keeps changes, and reports what the root alone holds as shadowed', async () => {
    const storage = path.join(tmp, 'etc-storage');
    fs.mkdirSync(storage);
    let extra = false;
    const c = await boot('etc', {
      storage,
      setup: (root) => {
        shipConfig(root, '[persistence."/persistent"]\ndirectories = ["/etc", "/var/log"]\n');
        // On the second boot the image gains a file the persisted /etc does not have (an upgrade of the image).
        if (extra) fs.writeFileSync(path.join(root, 'etc/only-in-the-image'), 'new\n');
      },
    });
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(c.state).toBe('running');
    expect((await sh(c, 'findmnt -n -o SOURCE --mountpoint /etc')).trim()).toMatch(new RegExp(`\\[${storage}/etc\\]$`));
    // The image's /etc is in storage, owners and modes kept; dbus and logind run from it.
    expect(fs.readFileSync(path.join(storage, 'etc/passwd'), 'utf8')).toContain('bird:x:1000');
    expect(fs.statSync(path.join(storage, 'etc/shadow')).mode & 0o777).toBe(0o640);
    expect((await sh(c, 'systemctl is-active dbus.service systemd-logind.service')).split('\n').slice(0, 2)).toEqual(['active', 'active']);
    expect((await sh(c, 'journalctl -u impermanence-prepare@persistent --no-pager -o cat'))).toContain('adopted /etc into /persistent');
    await sh(c, 'echo kept > /etc/e2e-kept && useradd -m carol');

    extra = true;
    await c.reboot();
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(await sh(c, 'cat /etc/e2e-kept')).toBe('kept\n');
    expect(await sh(c, 'id -u carol')).toMatch(/^\d+\n$/);
    // Storage won: the image's new file is hidden under the mount, and drift says so.
    expect((await c.sh('test -e /etc/only-in-the-image')).code).toBe(1);
    const shadowed = (await diffItems(c)).filter((i) => i.kind === 'shadowed');
    expect(shadowed).toEqual([expect.objectContaining({ path: '/etc', files: 1 })]);
    expect(fs.existsSync(path.join(storage, 'etc/only-in-the-image'))).toBe(false);
    await c.stop();
  });
});

describe('/etc/machine-id, generated anew at every boot of an image without one', () => {
  it('is adopted on the first boot and stays the same over 5 reboots', async () => {
    const storage = path.join(tmp, 'machine-id-storage');
    fs.mkdirSync(storage);
    const c = await boot('machineid', {
      storage,
      setup: (root) => {
        shipConfig(root, '[persistence."/persistent"]\ndirectories = [{ directory = "/var/log", mountOptions = ["nodev", "nosuid", "X-fstrim.notrim"] }]\nfiles = ["/etc/machine-id"]\n');
        // A golden image: no machine ID, so systemd makes a new one at every boot (from nspawn's random UUID).
        fs.writeFileSync(path.join(root, 'etc/machine-id'), '');
        fs.rmSync(path.join(root, 'var/lib/dbus/machine-id'), { force: true });
      },
    });
    // mountOptions reach the mount (and options for other programs, utab).
    expect((await sh(c, 'findmnt -n -o VFS-OPTIONS --mountpoint /var/log')).split(',')).toEqual(expect.arrayContaining(['nodev', 'nosuid']));
    expect(await sh(c, 'findmnt -m -n -o OPTIONS --mountpoint /var/log')).toContain('X-fstrim.notrim');
    const first = (await sh(c, 'cat /etc/machine-id')).trim();
    expect(first).toMatch(/^[0-9a-f]{32}$/);
    expect(fs.readFileSync(path.join(storage, 'etc/machine-id'), 'utf8').trim()).toBe(first);
    const ids = [first];
    for (let i = 0; i < 5; i++) {
      await c.reboot();
      expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
      expect((await c.sh('mountpoint -q /etc/machine-id')).code).toBe(0);
      ids.push((await sh(c, 'cat /etc/machine-id')).trim());
      // The journal of this boot is found under the persisted ID.
      expect(Number((await sh(c, 'journalctl -b --no-pager | wc -l')).trim())).toBeGreaterThan(10);
    }
    expect(new Set(ids)).toEqual(new Set([first]));
    expect(Number((await sh(c, 'journalctl --list-boots --no-pager | wc -l')).trim())).toBeGreaterThanOrEqual(6);
    await c.stop();
  });
});

describe('files symlinked into storage', () => {
  it('tells a symlink written through (kept) from one replaced by sed -i and from a file that was there first', async () => {
    const storage = path.join(tmp, 'files-storage');
    fs.mkdirSync(storage);
    const c = await boot('files', {
      storage,
      setup: (root) => {
        shipConfig(root, '[persistence."/persistent"]\nfiles = ["/etc/through.conf", "/etc/sedded.conf", { file = "/etc/first.conf", method = "symlink" }]\n');
        fs.writeFileSync(path.join(root, 'etc/first.conf'), 'from the image\n');
      },
    });
    await sh(c, 'echo kept > /etc/through.conf && echo y > /etc/sedded.conf && sed -i s/y/z/ /etc/sedded.conf');
    expect(fs.readFileSync(path.join(storage, 'etc/through.conf'), 'utf8')).toBe('kept\n');
    const list = JSON.parse(await sh(c, 'impermanencectl list --json')).entries as Array<{ path: string; state: string }>;
    expect(Object.fromEntries(list.map((e) => [e.path, e.state]))).toEqual({
      '/etc/through.conf': 'linked',
      '/etc/sedded.conf': 'replaced',
      '/etc/first.conf': 'replaced',
    });
    const items = await diffItems(c);
    expect(items.filter((i) => i.kind !== 'ephemeral').map((i) => `${i.kind} ${i.path}`).sort()).toEqual(['replaced /etc/first.conf', 'replaced /etc/sedded.conf']);
    expect(items.find((i) => i.path === '/etc/sedded.conf')!.detail).toMatch(/^something replaced the symlink to \/persistent\/etc\/sedded\.conf after it was made \(a program writing by rename/);
    expect(items.find((i) => i.path === '/etc/first.conf')!.detail).toMatch(/^a file was already here when \/persistent was activated, so the symlink to \/persistent\/etc\/first\.conf was never made/);
    await c.stop();
  });
});

describe('a /home of its own, mounted after the storage', () => {
  it('is prepared once it is mounted, not on the root below it: the home is its user\'s, and every path is mounted', async () => {
    // /home on a disk that shows up two seconds after the storage (which the initrd mounts).
    const storage = path.join(tmp, 'home-storage');
    fs.mkdirSync(path.join(storage, 'home/bird/Documents'), { recursive: true });
    fs.writeFileSync(path.join(storage, 'home/bird/Documents/keep.txt'), 'persisted\n');
    fs.writeFileSync(path.join(storage, 'home/bird/.profile-kept'), 'persisted file\n');
    const c = await boot('latehome', {
      storage,
      setup: (root) => {
        shipConfig(root, '[persistence."/persistent".users.bird]\ndirectories = ["Documents"]\nfiles = [".profile-kept"]\n');
        fs.appendFileSync(path.join(root, 'etc/fstab'), 'tmpfs /home tmpfs mode=0755 0 0\n');
        fs.writeFileSync(path.join(root, 'etc/systemd/system/slow-disk.service'), '[Unit]\nDefaultDependencies=no\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 2\n');
        fs.mkdirSync(path.join(root, 'etc/systemd/system/home.mount.d'), { recursive: true });
        fs.writeFileSync(path.join(root, 'etc/systemd/system/home.mount.d/slow.conf'), '[Unit]\nRequires=slow-disk.service\nAfter=slow-disk.service\n');
      },
    });
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    expect(await sh(c, 'stat -c "%U %a" /home/bird')).toBe('bird 700\n');
    expect(await sh(c, 'cat /home/bird/Documents/keep.txt /home/bird/.profile-kept')).toBe('persisted\npersisted file\n');
    expect((await sh(c, 'findmnt -n -o TARGET /home/bird/.profile-kept')).trim()).toBe('/home/bird/.profile-kept');
    await c.stop();
  });
});
