/**
 * impermanencectl persist and unpersist on a booted systemd, without a reboot: the data moves,
 * the drop-in is edited, the mount starts and stops; a reboot keeps what was persisted; and
 * kill -9 at random points of each, then running it again, loses and duplicates nothing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh as mustSucceed } from './package';

jest.setTimeout(30 * 60_000);

const CONFIG_DIR = '/persistent/etc/impermanence/persist.d';
const DROP_IN = `${CONFIG_DIR}/50-local.toml`;
const CONFIG = '# the base config\n[persistence."/persistent"]\ndirectories = ["/var/log"]\n';
const KILLS = Number(process.env.IMPERMANENCE_PERSIST_KILLS ?? 50); // per command: 2 × 50 = 100 kill points

let tmp: string;
let storage: string;
let c: Container;

const sh = (script: string) => mustSucceed(c, script, { timeoutMs: 600_000 });

beforeAll(async () => {
  const rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-persist-'));
  storage = path.join(tmp, 'persistent');
  fs.mkdirSync(path.join(storage, CONFIG_DIR.slice('/persistent/'.length)), { recursive: true });
  fs.writeFileSync(path.join(storage, CONFIG_DIR.slice('/persistent/'.length), '10-image.toml'), CONFIG);
  c = await Container.boot({
    name: `persist-${process.pid}`,
    rootfs,
    binds: [{ host: storage, container: '/persistent' }],
    // The config is on the storage, so that what persist adds outlives the wipe.
    initArgs: [`impermanence.config=${CONFIG_DIR}`],
    setup: (root) => {
      installPackage(root);
    },
  });
});

afterAll(async () => {
  await c?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers()).toEqual([]);
});

describe('persist and unpersist without a reboot', () => {
  it('persist copies the folder into storage, adds it to 50-local.toml and mounts it now; a reboot keeps it', async () => {
    await sh('mkdir -p /srv/app/sub && echo one > /srv/app/a && echo two > /srv/app/sub/b && chown -R bird:bird /srv/app/sub && chmod 0750 /srv/app');
    await sh(`printf '# mine: keep this comment\\n' > ${DROP_IN}`);
    const out = await sh('impermanencectl persist /srv/app');
    expect(out).toContain('copied /srv/app into /persistent/srv/app');
    expect(out).toContain('/srv/app is mounted from /persistent/srv/app (srv-app.mount)');
    expect((await c.sh('mountpoint -q /srv/app')).code).toBe(0);
    expect(fs.readFileSync(path.join(storage, 'srv/app/sub/b'), 'utf8')).toBe('two\n');
    expect(fs.statSync(path.join(storage, 'srv/app')).mode & 0o777).toBe(0o750);
    expect(fs.statSync(path.join(storage, 'srv/app/sub')).uid).toBe(1000);
    const dropIn = await sh(`cat ${DROP_IN}`);
    expect(dropIn).toBe('# mine: keep this comment\n\n[persistence."/persistent"]\ndirectories = [\n  "/srv/app",\n]\n');
    // The daemon follows: the entry is listed, in place.
    const list = JSON.parse(await sh('impermanencectl list --json')).entries as Array<{ path: string; state: string }>;
    expect(list.find((e) => e.path === '/srv/app')?.state).toBe('mounted');
    expect(await sh('systemctl --failed --no-legend --plain')).toBe('');

    await sh('echo three > /srv/app/c');
    await c.reboot();
    expect(await sh('systemctl --failed --no-legend --plain')).toBe('');
    expect((await c.sh('mountpoint -q /srv/app')).code).toBe(0);
    expect(await sh('cat /srv/app/a /srv/app/sub/b /srv/app/c')).toBe('one\ntwo\nthree\n');
  });

  it('a file in a home goes under users.<name>; a writer holding a file open is named and refused', async () => {
    await sh("runuser -u bird -- sh -c 'echo set > ~/.toolrc'");
    await sh('impermanencectl persist /home/bird/.toolrc');
    expect(await sh(`cat ${DROP_IN}`)).toContain('[persistence."/persistent".users.bird]\nfiles = [\n  ".toolrc",\n]\n');
    expect((await c.sh('mountpoint -q /home/bird/.toolrc')).code).toBe(0);
    expect(fs.readFileSync(path.join(storage, 'home/bird/.toolrc'), 'utf8')).toBe('set\n');

    await sh('mkdir -p /srv/busy && (exec 3>/srv/busy/log; exec sleep 30) >/dev/null 2>&1 & sleep 0.2');
    const busy = await c.sh('impermanencectl persist /srv/busy');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/files below \/srv\/busy are open for writing; stop these first, or what they write next is lost:\n {2}sleep \(PID \d+\) writes \/srv\/busy\/log/);
    expect(await sh(`cat ${DROP_IN}`)).not.toContain('busy');
    expect(fs.existsSync(path.join(storage, 'srv/busy'))).toBe(false);
    await sh('pkill -x sleep || true');
  });

  it('unpersist copies it back onto the root, stops the mount, takes it out of 50-local.toml and keeps the storage copy', async () => {
    await sh('mkdir -p /srv/tmpdata && echo x > /srv/tmpdata/x && impermanencectl persist /srv/tmpdata && echo y > /srv/tmpdata/y');
    const out = await sh('impermanencectl unpersist /srv/tmpdata');
    expect(out).toContain('copied /persistent/srv/tmpdata back to /srv/tmpdata');
    expect((await c.sh('mountpoint -q /srv/tmpdata')).code).not.toBe(0);
    expect(await sh('cat /srv/tmpdata/x /srv/tmpdata/y')).toBe('x\ny\n');
    expect(await sh(`cat ${DROP_IN}`)).not.toContain('/srv/tmpdata');
    expect(fs.readFileSync(path.join(storage, 'srv/tmpdata/y'), 'utf8')).toBe('y\n');
    const items = JSON.parse((await c.sh('impermanencectl diff --json')).stdout).items as Array<{ kind: string; path: string }>;
    expect(items).toContainEqual(expect.objectContaining({ kind: 'orphan', path: '/persistent/srv/tmpdata' }));
    // What is declared elsewhere is not this command's to remove.
    const elsewhere = await c.sh('impermanencectl unpersist /var/log');
    expect(elsewhere.code).toBe(1);
    expect(elsewhere.stderr).toContain(`/var/log is declared in ${CONFIG_DIR}/10-image.toml`);
  });
});

describe('kill -9 at random points', () => {
  it(`of ${KILLS} persists and ${KILLS} unpersists of a folder with 10,000 files: running it again completes it, nothing lost or duplicated`, async () => {
    await sh('mkdir -p /srv/big && cd /srv/big && for d in $(seq 100); do mkdir d$d; for f in $(seq 100); do echo "$d/$f" > d$d/f$f; done; done');
    const sum = (dir: string) => `cd ${dir} && find . -type f | sort | xargs cat | md5sum | cut -d" " -f1; find ${dir} -type f | wc -l`;
    const expected = await sh(sum('/srv/big'));
    expect(expected.split('\n')[1]).toBe('10000');
    const timed = async (cmd: string) => {
      const t0 = Date.now();
      await sh(cmd);
      return Date.now() - t0;
    };
    // One full run of each, to spread the kills over its length.
    const persistMs = await timed('impermanencectl persist /srv/big');
    const unpersistMs = await timed('impermanencectl unpersist /srv/big');
    await sh('rm -rf /persistent/srv/big');
    const stats = { persist: { killed: 0, finished: 0 }, unpersist: { killed: 0, finished: 0 } };
    for (let i = 0; i < KILLS; i++) {
      for (const [cmd, ms] of [['persist', persistMs], ['unpersist', unpersistMs]] as const) {
        // Uniform over the run (a run may go quicker than the one timed: then it finishes first).
        const delay = (Math.random() * ms) / 1000;
        const r = await sh(`impermanencectl ${cmd} /srv/big >/dev/null 2>&1 & pid=$!; sleep ${delay.toFixed(3)}; kill -9 $pid 2>/dev/null && echo killed; wait $pid; true`);
        stats[cmd][r.includes('killed') ? 'killed' : 'finished']++;
        // Running it again completes it (or says it is done already).
        const again = await c.sh(`impermanencectl ${cmd} /srv/big`);
        if (again.code !== 0 && !/is not persisted|is already persisted/.test(again.stderr)) throw new Error(`${cmd} after a kill at ${delay}s: ${again.stderr}`);
        expect((await c.sh('mountpoint -q /srv/big')).code === 0).toBe(cmd === 'persist');
        expect(await sh(sum('/srv/big'))).toBe(expected);
        // No copy of ours is left where the user would see it: beside the folder, in storage, or a second entry.
        expect(await sh('ls -a /srv /persistent/srv | grep -c impermanence || true')).toBe('0\n');
        const entries = (await sh(`grep -c "/srv/big" ${DROP_IN} || true`)).trim();
        expect(entries).toBe(cmd === 'persist' ? '1' : '0');
        if (cmd === 'persist') expect(await sh(sum('/persistent/srv/big'))).toBe(expected);
        // The storage copy stays after unpersist (an orphan); removed by hand, as a user would, so
        // that the next persist copies all 10,000 files again.
        else await sh('rm -rf /persistent/srv/big');
      }
    }
    console.log(
      `kill -9 during persist/unpersist of 10,000 files (one full run: persist ${persistMs} ms, unpersist ${unpersistMs} ms): ` +
        `persist killed ${stats.persist.killed}×, finished before the kill ${stats.persist.finished}×; ` +
        `unpersist killed ${stats.unpersist.killed}×, finished ${stats.unpersist.finished}×; ` +
        `after each, running it again completed it with all 10,000 files, identical, and no leftover copy`,
    );
  });
});
