/**
 * Self-test of the nspawn harness: a real systemd boots on a fresh tmpfs copy of the rootfs,
 * runs a Node generator from /usr/lib/systemd/system-generators, and a reboot wipes the root
 * but keeps the bind-mounted /persist.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';

jest.setTimeout(20 * 60_000); // the first run debootstraps (~1 min); later boots take < 1 s

const NAME = `harness-${process.pid}`;

/** A minimal generator: one oneshot unit wanted by multi-user.target, plus a dump of its environment. */
const GENERATOR = `#!/usr/bin/env node
'use strict';
const fs = require('fs');
const path = require('path');
const [normal, early, late] = process.argv.slice(2);
const read = (f) => { try { return fs.readFileSync(f, 'utf8'); } catch (e) { return String(e); } };
fs.writeFileSync(path.join(normal, 'dummy-generator.service'), [
  '[Unit]', 'Description=Proof that the dummy generator ran', '',
  '[Service]', 'Type=oneshot', 'RemainAfterExit=yes', 'ExecStart=/usr/bin/touch /run/dummy-generator-ran', '',
].join('\\n'));
fs.mkdirSync(path.join(normal, 'multi-user.target.wants'), { recursive: true });
fs.symlinkSync('../dummy-generator.service', path.join(normal, 'multi-user.target.wants', 'dummy-generator.service'));
fs.writeFileSync(path.join(normal, 'dummy-generator.json'), JSON.stringify({
  execPath: process.execPath, version: process.version, argv: process.argv, dirs: { normal, early, late },
  env: process.env, cmdline: read('/proc/cmdline'), pid1cmdline: read('/proc/1/cmdline'),
}));
`;

interface GeneratorReport {
  execPath: string; version: string; argv: string[]; dirs: Record<string, string>;
  env: Record<string, string>; cmdline: string; pid1cmdline: string;
}

let hostTmp: string;
let persistDir: string;
let rootfs: string;
let c: Container | undefined;
const setupRoots: string[] = [];

beforeAll(async () => {
  rootfs = await ensureRootfs();
  hostTmp = fs.mkdtempSync(path.join(os.tmpdir(), 'harness-test-'));
  persistDir = path.join(hostTmp, 'persist');
  fs.mkdirSync(persistDir);
  const gen = path.join(hostTmp, 'dummy-generator');
  fs.writeFileSync(gen, GENERATOR, { mode: 0o755 });
  c = await Container.boot({
    name: NAME,
    rootfs,
    binds: [
      { host: persistDir, container: '/persist' },
      { host: gen, container: '/usr/lib/systemd/system-generators/dummy-generator', readOnly: true },
    ],
    initArgs: ['impermanence.config=/persist/etc/impermanence/persist.d'],
    setup: (root) => {
      setupRoots.push(root);
      // Written into the fresh copy before boot; must not leak into the pristine rootfs.
      fs.writeFileSync(path.join(root, 'etc/harness-setup'), `boot ${setupRoots.length}\n`);
    },
  });
});

afterAll(async () => {
  try {
    await c?.stop();
    await c?.stop(); // idempotent
    if (c) console.log(`${NAME} timings: ${JSON.stringify(c.timings)}`);
  } finally {
    if (hostTmp) fs.rmSync(hostTmp, { recursive: true, force: true });
  }
  expect(leftovers(NAME)).toEqual([]);
  expect(c?.running).toBe(false);
});

const run = async (script: string) => {
  const r = await c!.sh(script);
  if (r.code !== 0) throw new Error(`${script} exited ${r.code}\n${r.stdout}${r.stderr}\n${await c!.journal()}`);
  return r.stdout;
};

describe('nspawn harness', () => {
  test('boots a real systemd on a fresh root', async () => {
    expect(['running', 'degraded']).toContain(c!.state);
    expect((await run('cat /proc/1/comm')).trim()).toBe('systemd');
    expect((await run('systemd-detect-virt')).trim()).toBe('systemd-nspawn');
    expect((await run('hostname')).trim()).toBe(NAME);
    expect(await run('cat /etc/harness-setup')).toBe('boot 1\n');
    expect(fs.readFileSync(path.join(c!.rootPath, 'etc/harness-setup'), 'utf8')).toBe('boot 1\n');
    expect(fs.existsSync(path.join(rootfs, 'etc/harness-setup'))).toBe(false);
  });

  test('exec: exit codes, stdin, stderr', async () => {
    expect(await c!.exec(['sh', '-c', 'echo out; echo err >&2; exit 3'])).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(await c!.exec(['cat'], { input: 'hello' })).toEqual({ code: 0, stdout: 'hello', stderr: '' });
    expect((await c!.exec(['/nonexistent'])).code).not.toBe(0);
    expect(await c!.journal()).toMatch(/Startup finished|Reached target/);
  });

  test('systemd ran the #!/usr/bin/env node generator', async () => {
    await run('test -e /run/dummy-generator-ran');
    expect((await run('systemctl is-active dummy-generator.service')).trim()).toBe('active');
    const rep = JSON.parse(await run('cat /run/systemd/generator/dummy-generator.json')) as GeneratorReport;
    expect(rep.execPath).toBe('/usr/bin/node');
    expect(rep.env.PATH?.split(':')).toContain('/usr/bin');
    expect(rep.dirs).toEqual({ normal: '/run/systemd/generator', early: '/run/systemd/generator.early', late: '/run/systemd/generator.late' });
    // In a container the kernel command line is the host's; systemd hands its own argv to
    // generators through PID 1's cmdline (systemd's proc_cmdline() reads /proc/1/cmdline in containers).
    expect(rep.pid1cmdline.split('\0')).toContain('impermanence.config=/persist/etc/impermanence/persist.d');
    expect(rep.cmdline).not.toContain('impermanence.config=');
    console.log(`generator env: ${JSON.stringify({ PATH: rep.env.PATH, version: rep.version, SYSTEMD_VIRTUALIZATION: rep.env.SYSTEMD_VIRTUALIZATION })}`);
  });

  test('users bird (1000:1000) and colord exist', async () => {
    expect((await run('id -u bird; id -g bird; id -gn bird')).split('\n')).toEqual(['1000', '1000', 'bird', '']);
    expect((await run('getent passwd bird')).trim()).toBe('bird:x:1000:1000::/home/bird:/bin/bash');
    expect((await run('stat -c %u:%g /home/bird')).trim()).toBe('1000:1000');
    await run('getent passwd colord && getent group colord');
    expect(Number((await run('id -u colord')).trim())).toBeLessThan(1000);
  });

  test('reboot wipes the root but keeps /persist', async () => {
    await run('echo kept > /persist/keep && echo lost > /etc/lost && sync');
    expect(fs.readFileSync(path.join(persistDir, 'keep'), 'utf8')).toBe('kept\n');
    const oldLeader = c!.leader;
    const oldRoot = c!.rootPath;

    await c!.reboot();

    expect(['running', 'degraded']).toContain(c!.state);
    expect(c!.leader).not.toBe(oldLeader);
    expect(c!.rootPath).not.toBe(oldRoot);
    expect(await run('cat /persist/keep')).toBe('kept\n');
    expect((await c!.sh('test -e /etc/lost')).code).toBe(1);
    expect(fs.existsSync(path.join(rootfs, 'etc/lost'))).toBe(false);
    expect(await run('cat /etc/harness-setup')).toBe('boot 2\n');
    expect(setupRoots).toHaveLength(2);
    // the generator ran again on the new boot
    await run('test -e /run/dummy-generator-ran');
    expect((await run('id -u bird')).trim()).toBe('1000');
  });
});
