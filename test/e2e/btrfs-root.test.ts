/**
 * Live drift on a root that is a btrfs subvolume (mounted with subvol=@root: the layout of seeds
 * 001 and 002), booted for real: systemd in a systemd-nspawn container whose root is a fresh
 * btrfs image's @root subvolume on every boot (see BootOptions.rootOn), our package installed,
 * a host folder as the storage. fanotify refuses a filesystem mark on such a mount (EXDEV);
 * impermanence-fanotify marks the filesystem through its top-level subvolume instead, so the
 * daemon watches live here too: a write shows in GetDrift without a scan.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh } from './package';

jest.setTimeout(20 * 60_000); // the first run debootstraps (~1 min); boots take a few seconds

const CONFIG_IN_STORAGE = '/persistent/etc/impermanence/persist.d';
const NAME = `btrfs-root-${process.pid}`;
let tmp: string;
let c: Container | undefined;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-btrfs-root-'));
});
afterAll(async () => {
  await c?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers(NAME)).toEqual([]); // this test's own (other suites may be booting meanwhile)
});

describe('a root on a btrfs subvolume', () => {
  it('is watched live: a write shows in GetDrift at once, with the same watcher as on ext4', async () => {
    const store = path.join(tmp, 'persistent');
    const config = path.join(store, CONFIG_IN_STORAGE.slice('/persistent/'.length));
    fs.mkdirSync(config, { recursive: true });
    fs.writeFileSync(path.join(config, '10-btrfs.toml'), '[persistence."/persistent"]\ndirectories = ["/var/log"]\n');
    c = await Container.boot({
      name: NAME,
      rootfs: await ensureRootfs(),
      rootOn: 'btrfs-subvolume',
      binds: [{ host: store, container: '/persistent' }],
      initArgs: [`impermanence.config=${CONFIG_IN_STORAGE}`],
      // nspawn keeps open_by_handle_at (which the fanotify watcher needs) from containers unless told otherwise.
      extraNspawnArgs: ['--capability=CAP_DAC_READ_SEARCH', '--system-call-filter=open_by_handle_at fanotify_init fanotify_mark'],
      setup: (root) => installPackage(root),
    });
    // The premise: / is the btrfs subvolume @root.
    expect((await sh(c, 'findmnt -n -o FSTYPE,FSROOT /')).trim().split(/\s+/)).toEqual(['btrfs', '/@root']);
    expect((await sh(c, 'findmnt -n -o TARGET /var/log')).trim()).toBe('/var/log');

    // Starting the daemon (diff activates it) starts the watcher; it says it watches live.
    const first = await c.sh('impermanencectl diff --json');
    expect([0, 3]).toContain(first.code);
    const journal = await sh(c, 'journalctl -u impermanence --no-pager -o cat');
    expect(journal).toContain('for drift as it happens');
    expect(journal).not.toMatch(/impermanence-fanotify: /);

    await sh(c, 'mkdir -p /var/lib/undeclared && head -c 4096 /dev/urandom > /var/lib/undeclared/state.db && echo kept > /var/log/kept.log');
    let live = '';
    for (let i = 0; i < 100 && !live.includes('/var/lib/undeclared'); i++) {
      live = (await c.sh('busctl call org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager GetDrift a{sv} 0')).stdout;
      if (!live.includes('/var/lib/undeclared')) await new Promise((r) => setTimeout(r, 50));
    }
    expect(live).toContain('"ephemeral" "/var/lib/undeclared"');
    expect(live).not.toContain('/var/log');
    // The write into the persisted folder reached the storage.
    expect(fs.readFileSync(path.join(store, 'var/log/kept.log'), 'utf8')).toBe('kept\n');
    await c.stop();
    c = undefined;
  });
});
