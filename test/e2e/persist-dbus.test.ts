/**
 * Persist and Unpersist over D-Bus on a booted systemd: busctl calls the real daemon, which has
 * the real systemd run impermanencectl in a transient unit outside its sandbox; the path is
 * mounted and in 50-local.toml, and still persisted after a reboot. A user polkit does not
 * authorize (no polkitd in the image: the daemon cannot ask, so it refuses) changes nothing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh as mustSucceed } from './package';

jest.setTimeout(15 * 60_000);

const CONFIG_DIR = '/persistent/etc/impermanence/persist.d';
const DROP_IN = `${CONFIG_DIR}/50-local.toml`;
const CALL = 'busctl --json=short call org.impermanence.Manager /org/impermanence/Manager org.impermanence.Manager';

let tmp: string;
let storage: string;
let c: Container;

const sh = (script: string) => mustSucceed(c, script, { timeoutMs: 120_000 });

beforeAll(async () => {
  const rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-busA-persist-'));
  storage = path.join(tmp, 'persistent');
  fs.mkdirSync(path.join(storage, CONFIG_DIR.slice('/persistent/'.length)), { recursive: true });
  fs.writeFileSync(path.join(storage, CONFIG_DIR.slice('/persistent/'.length), '10-image.toml'), '[persistence."/persistent"]\ndirectories = ["/var/log"]\n');
  c = await Container.boot({
    name: `busA-persist-dbus-${process.pid}`,
    rootfs,
    binds: [{ host: storage, container: '/persistent' }],
    initArgs: [`impermanence.config=${CONFIG_DIR}`],
    setup: (root) => installPackage(root),
  });
});

afterAll(async () => {
  await c?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
});

describe('Persist over D-Bus', () => {
  it('busctl Persist: the daemon has systemd persist the folder now (mounted, in 50-local.toml); a reboot keeps it', async () => {
    await sh('mkdir -p /srv/viabus/sub && echo one > /srv/viabus/a && echo two > /srv/viabus/sub/b');
    const reply = JSON.parse(await sh(`${CALL} Persist ssa{sv} /srv/viabus "" 0`)) as { type: string; data: [string[]] };
    expect(reply.type).toBe('as');
    expect(reply.data[0]).toContain('copied /srv/viabus into /persistent/srv/viabus');
    expect(reply.data[0]).toContain('/srv/viabus is mounted from /persistent/srv/viabus (srv-viabus.mount)');
    // Mounted in the host's namespace (not only the daemon's), and in the drop-in on the storage.
    expect((await c.sh('mountpoint -q /srv/viabus')).code).toBe(0);
    expect(fs.readFileSync(path.join(storage, 'srv/viabus/sub/b'), 'utf8')).toBe('two\n');
    expect(await sh(`cat ${DROP_IN}`)).toContain('"/srv/viabus"');
    // The transient unit is gone once done; nothing failed; the output file was removed.
    expect(await sh('systemctl --failed --no-legend --plain')).toBe('');
    expect(await sh("systemctl list-units --all --no-legend --plain 'impermanence-persist-*' | wc -l")).toBe('0\n');
    expect(await sh('ls -A /run/impermanenced')).toBe('');
    expect(await sh('stat -c %a /run/impermanenced')).toBe('700\n'); // the runs' output is root's alone
    const list = JSON.parse(await sh('impermanencectl list --json')).entries as Array<{ path: string; state: string }>;
    expect(list.find((e) => e.path === '/srv/viabus')?.state).toBe('mounted');

    await sh('echo three > /srv/viabus/c');
    await c.reboot();
    expect(await sh('systemctl --failed --no-legend --plain')).toBe('');
    expect((await c.sh('mountpoint -q /srv/viabus')).code).toBe(0);
    expect(await sh('cat /srv/viabus/a /srv/viabus/sub/b /srv/viabus/c')).toBe('one\ntwo\nthree\n');
  });

  it('what impermanencectl refuses is PersistFailed with its message; bad input is InvalidArgument; the daemon keeps serving', async () => {
    const twice = await c.sh(`mkdir -p /srv/other && ${CALL} Persist ssa{sv} /srv/other /elsewhere 0`);
    expect(twice.code).not.toBe(0);
    expect(twice.stderr).toContain('/elsewhere is not a storage root of the config');
    const relative = await c.sh(`${CALL} Persist ssa{sv} srv/x "" 0`);
    expect(relative.stderr).toMatch(/is relative/);
    expect(await sh(`${CALL} ListEntries a{sv} 0 >/dev/null && echo serving`)).toBe('serving\n');
  });

  it('a user polkit does not authorize is refused, and nothing changes', async () => {
    await sh('mkdir -p /srv/notyours && echo x > /srv/notyours/x');
    const r = await c.sh(`runuser -u bird -- ${CALL} Persist ssa{sv} /srv/notyours "" 0`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/polkit|not allowed/);
    expect(await sh(`cat ${DROP_IN}`)).not.toContain('notyours');
    expect((await c.sh('mountpoint -q /srv/notyours')).code).not.toBe(0);
    const viaCli = await c.sh('runuser -u bird -- impermanencectl persist --no-ask-password /srv/notyours');
    expect(viaCli.code).toBe(1);
    expect(viaCli.stderr).toMatch(/^impermanencectl persist: .*\(run it as root/);
  });

  it('busctl Unpersist puts it back on the root and takes it out of 50-local.toml', async () => {
    const reply = JSON.parse(await sh(`${CALL} Unpersist sa{sv} /srv/viabus 0`)) as { data: [string[]] };
    expect(reply.data[0]).toContain('copied /persistent/srv/viabus back to /srv/viabus');
    expect((await c.sh('mountpoint -q /srv/viabus')).code).not.toBe(0);
    expect(await sh('cat /srv/viabus/a /srv/viabus/c')).toBe('one\nthree\n');
    expect(await sh(`cat ${DROP_IN}`)).not.toContain('/srv/viabus');
  });
});
