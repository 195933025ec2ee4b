/**
 * The real thing: a Debian with systemd as PID 1, our package installed into a root that is
 * wiped at every boot (a fresh tmpfs copy of the pristine image), a host folder as the storage
 * /persistent, and the config kept on the storage, found at boot through impermanence.config=.
 * After boot every declared path must be mounted (or symlinked) with its declared owner and
 * mode; after writing everywhere and rebooting onto a wiped root, everything declared must have
 * survived and nothing undeclared.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh } from './package';

jest.setTimeout(20 * 60_000); // the first run debootstraps (~1 min); boots take about a second

const REPO = path.join(__dirname, '..', '..');
const CONFIG_IN_STORAGE = '/persistent/etc/impermanence/persist.d';

/** What the seed configs declare, with the owner and mode each path must show after boot. */
const DIRECTORIES: Array<[string, string]> = [
  ['/var/log', 'root:root 755'],
  ['/var/lib/bluetooth', 'root:root 755'],
  ['/var/lib/systemd/coredump', 'root:root 755'],
  ['/etc/NetworkManager/system-connections', 'root:root 755'],
  ['/var/lib/colord', 'colord:colord 750'],
  ['/home/bird/Downloads', 'bird:bird 755'],
  ['/home/bird/VirtualBox VMs', 'bird:bird 755'],
  ['/home/bird/.ssh', 'bird:bird 700'],
  ['/home/bird/.local/share/keyrings', 'bird:bird 700'],
  ['/home/alice/Documents', 'alice:alice 755'],
  ['/home/alice/.gnupg', 'alice:alice 700'],
  ['/home/alice/.mozilla/firefox', 'alice:alice 755'],
  ['/srv/odd name/ünï-cödé', 'root:root 2770'],
];
/** Files: bind-mounted (present in storage before boot) and symlinked (absent, or method = "symlink"). */
const BOUND_FILE = '/etc/e2e/bound.conf';
const SYMLINKED = ['/var/keys/secret_file', '/home/bird/.screenrc', '/home/alice/.gitconfig', '/home/alice/.config/monitors.xml', '/etc/e2e/linked.conf'];
const UNDECLARED = ['/etc/undeclared', '/var/lib/undeclared', '/root/undeclared', '/home/bird/undeclared', '/home/alice/.config/undeclared'];

const E2E_CONFIG = `
# Beyond the seed examples: a bind-mounted file, a file that is always a symlink, and a
# directory whose name needs escaping, with a setgid mode.
[persistence."/persistent"]
directories = [{ directory = "/srv/odd name/ünï-cödé", mode = "2770" }]
files = ["${BOUND_FILE}", { file = "/etc/e2e/linked.conf", method = "symlink" }]
`;

let tmp: string;
let storage: string;
let rootfs: string;
const containers: Container[] = [];

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function boot(name: string, storageDir: string, extraNspawnArgs: string[] = []): Promise<Container> {
  const c = await Container.boot({
    name: `${name}-${process.pid}`,
    extraNspawnArgs,
    rootfs,
    binds: [{ host: storageDir, container: '/persistent' }],
    initArgs: [`impermanence.config=${CONFIG_IN_STORAGE}`],
    // The image knows nothing of impermanence but the installed package: the config is on the storage.
    setup: (root) => {
      installPackage(root);
    },
  });
  containers.push(c);
  return c;
}


/** owner:group mode of each path, as the container sees it. */
async function owners(c: Container, paths: string[]): Promise<string[]> {
  const out = await sh(c, paths.map((p) => `stat -c '%U:%G %a' ${q(p)}`).join('; '));
  return out.trimEnd().split('\n');
}

beforeAll(async () => {
  rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-boot-'));
  storage = path.join(tmp, 'persistent');
  const config = path.join(storage, CONFIG_IN_STORAGE.slice('/persistent/'.length));
  fs.mkdirSync(config, { recursive: true });
  for (const f of fs.readdirSync(path.join(REPO, 'examples', 'persist.d'))) {
    fs.copyFileSync(path.join(REPO, 'examples', 'persist.d', f), path.join(config, f));
  }
  fs.writeFileSync(path.join(config, '30-e2e.toml'), E2E_CONFIG);
  // A file already in storage is bind-mounted; its owner and mode are what the mount shows.
  fs.mkdirSync(path.join(storage, path.dirname(BOUND_FILE)), { recursive: true });
  fs.writeFileSync(path.join(storage, BOUND_FILE), 'kept in storage\n', { mode: 0o640 });
});

afterAll(async () => {
  for (const c of containers) await c.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
});

describe('a boot with the seed configs', () => {
  let c: Container;
  beforeAll(async () => {
    c = await boot('seed', storage);
  });

  it('boots cleanly, with impermanence.target reached and nothing failed', async () => {
    const failed = await sh(c, 'systemctl --failed --no-legend --plain');
    expect(failed).toBe('');
    expect(c.state).toBe('running');
    expect((await sh(c, 'systemctl is-active impermanence.target impermanence-prepare@persistent.service')).split('\n').slice(0, 2)).toEqual(['active', 'active']);
  });

  it('generated units pass systemd-analyze verify inside the booted system', async () => {
    await sh(c, 'cd /run/systemd/generator && systemd-analyze verify --man=no ./*.mount impermanence.target impermanence-prepare@persistent.service impermanence-machine-id-journal.service');
  });

  it('installs the desktop agent as a user unit that graphical sessions want, and it verifies', async () => {
    await sh(c, 'install -dm0700 /tmp/user-runtime && XDG_RUNTIME_DIR=/tmp/user-runtime systemd-analyze verify --man=no --user /usr/lib/systemd/user/impermanence-notify.service');
    expect(await sh(c, 'systemctl --global is-enabled impermanence-notify.service')).toBe('enabled\n');
    expect(await sh(c, 'impermanence-notify --version')).toMatch(/^impermanence-notify \d/);
  });

  it('mounts every declared directory from storage, with the declared owner and mode', async () => {
    for (const [dir] of DIRECTORIES) {
      // The source is the host folder behind /persistent: the bind mount's root in it is the entry's storage path.
      expect((await sh(c, `findmnt -n -o SOURCE --mountpoint ${q(dir)}`)).trimEnd()).toMatch(new RegExp(`\\[${escapeRegExp(storage + dir)}\\]$`));
      expect((await sh(c, `systemctl is-active "$(systemd-escape --path --suffix=mount ${q(dir)})"`)).trim()).toBe('active');
    }
    expect(await owners(c, DIRECTORIES.map(([d]) => d))).toEqual(DIRECTORIES.map(([, o]) => o));
    // Parents it had to create: the home 0700, inside a home the user's, parentDirectory as declared.
    // (/home/bird itself came with the image, 0755: owner and mode apply only on creation.)
    expect(await owners(c, ['/home/bird', '/persistent/home/bird', '/home/bird/.local', '/var/keys', '/persistent/var/keys', '/persistent/home/alice'])).toEqual([
      'bird:bird 755', 'bird:bird 700', 'bird:bird 700', 'root:root 700', 'root:root 700', 'alice:alice 700',
    ]);
  });

  it('bind-mounts a file present in storage and symlinks the others', async () => {
    expect((await c.sh(`mountpoint -q ${BOUND_FILE}`)).code).toBe(0);
    expect(await sh(c, `cat ${BOUND_FILE}`)).toBe('kept in storage\n');
    expect(await owners(c, [BOUND_FILE])).toEqual(['root:root 640']);
    for (const f of SYMLINKED) expect((await sh(c, `readlink ${q(f)}`)).trim()).toBe(`/persistent${f}`);
  });

  it('starts impermanenced by D-Bus activation; busctl, impermanencectl and journalctl see it', async () => {
    const introspect = await sh(c, 'busctl introspect org.impermanence.Manager /org/impermanence/Manager');
    expect(introspect).toMatch(/^\.ListEntries +method +a\{sv\} +a\(ossss\)/m);
    expect((await sh(c, 'systemctl is-active impermanence.service')).trim()).toBe('active');
    const list = await c.sh('impermanencectl list --json');
    if (list.code !== 0) throw new Error(`impermanencectl list: ${list.code} ${list.stderr}\n${(await c.sh('journalctl -u impermanence --no-pager | tail -20')).stdout}`);
    const entries = JSON.parse(list.stdout).entries as Array<{ path: string; state: string }>;
    const state = new Map(entries.map((e) => [e.path, e.state]));
    for (const [dir] of DIRECTORIES) expect(state.get(dir)).toBe('mounted');
    expect(state.get(BOUND_FILE)).toBe('mounted');
    expect(state.get('/etc/e2e/linked.conf')).toBe('linked');
    // The image has its own /etc/machine-id (systemd reads it before anything is mounted): it
    // was adopted into storage on this first boot and is bind-mounted from there.
    expect(state.get('/etc/machine-id')).toBe('mounted');
    expect((await c.sh('impermanencectl status')).code).toBe(0);
    // Structured entries: journalctl finds the event by its fields.
    const journal = await sh(c, 'journalctl -u impermanence -o json --no-pager');
    const event = journal.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.IMPERMANENCE_CONFIG_FILES);
    expect(event).toMatchObject({ PRIORITY: '6', SYSLOG_IDENTIFIER: 'impermanenced', _SYSTEMD_UNIT: 'impermanence.service' });
    expect(event.IMPERMANENCE_CONFIG_FILES).toContain(`${CONFIG_IN_STORAGE}/30-e2e.toml`);
    const security = await c.sh('systemd-analyze security --no-pager impermanence.service');
    console.log(`systemd-analyze security impermanence.service: ${security.stdout.trim().split('\n').at(-1)}`);
    const rss = await sh(c, 'ps -o rss= -p "$(systemctl show -p MainPID --value impermanence.service)"');
    console.log(`impermanenced RSS at idle: ${Math.round(Number(rss.trim()) / 1024)} MiB`);
  });

  it('after writes everywhere and a reboot onto a wiped root, keeps exactly what was declared', async () => {
    const marker = `written before reboot ${Date.now()}`;
    const writes = [
      ...DIRECTORIES.map(([dir, owner]) => {
        const user = owner.split(':')[0]!;
        return `runuser -u ${user} -- sh -c ${q(`echo ${q(marker)} > ${q(dir + '/kept')}`)}`;
      }),
      `echo ${q(marker)} >> ${BOUND_FILE}`,
      `echo ${q(marker)} > /var/keys/secret_file`,
      `runuser -u bird -- sh -c ${q(`echo ${q(marker)} > /home/bird/.screenrc`)}`,
      `runuser -u alice -- sh -c ${q(`echo ${q(marker)} > /home/alice/.config/monitors.xml`)}`,
      ...UNDECLARED.map((p) => `echo ${q(marker)} > ${q(p)}`),
      'journalctl --flush',
    ];
    await sh(c, writes.join('\n'));
    const bootIdBefore = (await sh(c, 'cat /proc/sys/kernel/random/boot_id')).trim();

    await c.reboot();

    expect((await sh(c, 'cat /proc/sys/kernel/random/boot_id')).trim()).not.toBe(bootIdBefore);
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toBe('');
    for (const [dir, owner] of DIRECTORIES) {
      expect(await sh(c, `cat ${q(dir + '/kept')}`)).toBe(`${marker}\n`);
      expect((await owners(c, [dir + '/kept']))[0]).toMatch(new RegExp(`^${owner.split(' ')[0]} `));
    }
    expect(await owners(c, DIRECTORIES.map(([d]) => d))).toEqual(DIRECTORIES.map(([, o]) => o));
    expect(await sh(c, `cat ${BOUND_FILE}`)).toBe(`kept in storage\n${marker}\n`);
    expect(await sh(c, 'cat /var/keys/secret_file /home/bird/.screenrc /home/alice/.config/monitors.xml')).toBe(`${marker}\n`.repeat(3));
    expect(await owners(c, ['/persistent/home/bird/.screenrc'])).toEqual(['bird:bird 644']);
    // `auto`: .screenrc now exists in storage, so this boot bind-mounts it instead of symlinking it.
    expect((await c.sh('mountpoint -q /home/bird/.screenrc')).code).toBe(0);
    // `symlink`: stays a symlink whatever storage holds.
    expect((await sh(c, 'readlink /home/alice/.config/monitors.xml')).trim()).toBe('/persistent/home/alice/.config/monitors.xml');
    for (const p of UNDECLARED) expect((await c.sh(`test -e ${q(p)}`)).code).toBe(1);
    // /var/log is persisted: the journal of the first boot is still there.
    expect(Number((await sh(c, 'journalctl --list-boots --no-pager | wc -l')).trim())).toBeGreaterThanOrEqual(2);
  });
});

describe('a boot with a bad config', () => {
  it('activates nothing from it and shows the failure in systemctl --failed and status', async () => {
    const bad = path.join(tmp, 'bad-storage');
    const config = path.join(bad, CONFIG_IN_STORAGE.slice('/persistent/'.length));
    fs.mkdirSync(config, { recursive: true });
    fs.writeFileSync(path.join(config, '10-bad.toml'), '[persistence."/persistent"]\ndirectories = ["/var/log", "var/lib/foo"]\n');
    const c = await boot('bad', bad);
    expect(c.state).toBe('degraded');
    expect(await sh(c, 'systemctl --failed --no-legend --plain')).toMatch(/^impermanence-config-error\.service +loaded failed failed impermanence: invalid configuration, nothing was persisted/);
    const status = (await c.sh('systemctl status --no-pager --lines=20 impermanence-config-error.service')).stdout;
    expect(status).toContain(`impermanence: ${CONFIG_IN_STORAGE}/10-bad.toml: persistence."/persistent".directories[1]: path "var/lib/foo" is relative`);
    expect((await c.sh('mountpoint -q /var/log')).code).not.toBe(0);
    expect(await sh(c, 'ls /run/systemd/generator | grep -c "\\.mount$" || true')).toBe('0\n');
    expect(fs.readdirSync(bad)).toEqual(['etc']); // nothing was created in storage either
    // diff still answers: with nothing activated, everything written since boot is lost.
    await sh(c, 'mkdir -p /var/lib/app && echo x > /var/lib/app/state');
    const r = await c.sh('impermanencectl diff --json');
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout).items).toContainEqual(expect.objectContaining({ kind: 'ephemeral', path: '/var/lib/app', files: 1 }));
    await c.stop();
  });
});

describe('drift on a booted system', () => {
  it('reports what will be lost, what is not in place, what was replaced, orphans and owner/mode drift', async () => {
    const store = path.join(tmp, 'drift-storage');
    const config = path.join(store, CONFIG_IN_STORAGE.slice('/persistent/'.length));
    fs.mkdirSync(config, { recursive: true });
    fs.writeFileSync(
      path.join(config, '10-drift.toml'),
      `[persistence."/persistent"]
directories = ["/var/log", "/var/lib/kept", "/srv/gone"]
files = [{ file = "/etc/e2e.conf", method = "symlink" }]
[persistence."/persistent".users.bird]
directories = ["Documents"]
`,
    );
    // nspawn keeps open_by_handle_at (which the fanotify watcher needs, as root has on a real
    // machine) from containers unless told otherwise.
    const c = await boot('drift', store, ['--capability=CAP_DAC_READ_SEARCH', '--system-call-filter=open_by_handle_at fanotify_init fanotify_mark']);
    const diff = async () => {
      const r = await c.sh('impermanencectl diff --json');
      if (r.code !== 0 && r.code !== 3) throw new Error(`diff: ${r.code} ${r.stderr}`);
      return (JSON.parse(r.stdout) as { items: Array<{ kind: string; path: string; files: number; suggestion: string }> }).items;
    };
    const kinds = (items: Awaited<ReturnType<typeof diff>>) => items.map((i) => `${i.kind} ${i.path}`);

    // Right after boot: nothing written, everything in place. (This also starts the daemon.)
    expect(kinds(await diff())).toEqual([]);
    expect(await sh(c, 'journalctl -u impermanence --no-pager -o cat')).toContain('for drift as it happens');

    await sh(c, [
      'mkdir -p /var/lib/undeclared && head -c 4096 /dev/urandom > /var/lib/undeclared/state.db',
      `runuser -u bird -- sh -c 'mkdir -p ~/.config/newapp && echo x > ~/.config/newapp/settings.ini'`,
      'echo ignored > /tmp/ignored && echo ignored > /var/cache/ignored',
      'umount /srv/gone',
      // An editor writes a new file and renames it over the symlink.
      'echo edited > /etc/e2e.conf.tmp && mv /etc/e2e.conf.tmp /etc/e2e.conf',
      'chmod 0700 /persistent/var/lib/kept',
    ].join(' && '));
    // Live: the daemon saw the write as it happened; GetDrift (no scan) already lists it.
    let live = '';
    for (let i = 0; i < 100 && !live.includes('/var/lib/undeclared'); i++) {
      live = (await c.sh('busctl call org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager GetDrift a{sv} 0')).stdout;
      if (!live.includes('/var/lib/undeclared')) await new Promise((r) => setTimeout(r, 50));
    }
    expect(live).toContain('"ephemeral" "/var/lib/undeclared"');
    // An entry dropped from the config leaves its data behind in storage.
    fs.writeFileSync(path.join(store, 'var/lib/kept/data'), 'kept\n');
    fs.writeFileSync(path.join(config, '10-drift.toml'), fs.readFileSync(path.join(config, '10-drift.toml'), 'utf8').replace('"/var/lib/kept", ', ''));
    await sh(c, 'impermanencectl reload');

    const items = await diff();
    expect(kinds(items)).toEqual(expect.arrayContaining([
      'unmounted /srv/gone',
      'replaced /etc/e2e.conf',
      'ephemeral /var/lib/undeclared',
      'ephemeral /home/bird/.config/newapp',
      'orphan /persistent/var/lib/kept',
    ]));
    expect(kinds(items).filter((k) => /ignored|\/tmp|\/var\/cache/.test(k))).toEqual([]);
    const lost = items.find((i) => i.path === '/var/lib/undeclared')!;
    expect(lost.files).toBe(1);
    expect(lost.suggestion).toBe('[persistence."/persistent"]\ndirectories = ["/var/lib/undeclared"]');
    expect(items.find((i) => i.path === '/home/bird/.config/newapp')!.suggestion).toBe('[persistence."/persistent".users.bird]\ndirectories = [".config/newapp"]');
    // Attributes: a storage folder still declared, with its mode changed behind the config's back.
    await sh(c, 'chmod 0700 /persistent/var/log');
    expect(kinds(await diff())).toContain('attributes /persistent/var/log');
    // One journal entry per new drift item, findable by path; one about an entry carries its state and storage.
    const journal = await sh(c, 'journalctl -u impermanence IMPERMANENCE_PATH=/var/lib/undeclared -o json --no-pager');
    expect(JSON.parse(journal.trim().split('\n')[0]!)).toMatchObject({ IMPERMANENCE_DRIFT: 'ephemeral', IMPERMANENCE_FILES: '1' });
    const gone = await sh(c, 'journalctl -u impermanence IMPERMANENCE_PATH=/srv/gone IMPERMANENCE_DRIFT=unmounted -o json --no-pager');
    expect(JSON.parse(gone.trim().split('\n')[0]!)).toMatchObject({ IMPERMANENCE_STATE: 'unmounted', IMPERMANENCE_STORAGE: '/persistent' });
    // The daemon's "since" (the boot) keeps its fraction of a second, as an offline diff does.
    const usec = BigInt((await sh(c, 'busctl get-property org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager LastScanSinceUSec')).trim().split(' ')[1]!);
    expect(usec % 1_000_000n).not.toBe(0n);
    // Nothing was deleted or changed in storage by any of this.
    expect(fs.readFileSync(path.join(store, 'var/lib/kept/data'), 'utf8')).toBe('kept\n');
    await c.stop();
  });
});
