/**
 * `impermanencectl metrics` read by the real node_exporter (Debian's prometheus-node-exporter,
 * only its textfile collector, on a free localhost port), scraped with curl: the real daemon on
 * a private system-like bus over a sandbox root where some entries are really bind-mounted, one
 * is not, a file is linked, and a file was written outside every persisted path. node_exporter
 * parses each *.prom file with Prometheus's own parser and refuses a bad one
 * (node_textfile_scrape_error 1): the test shows that too, so a pass means the format is right.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { PrivateBus } from '../dbus/harness';
import { sandboxRoot, startBus, startDaemon, type Daemon } from '../dbus/daemon';
import { ctl, REPO, tempDir } from '../helpers';

jest.setTimeout(60_000);

const EXPORTER = '/usr/bin/prometheus-node-exporter';
const WEIRD = '/srv/we"ird \\ näme';

let bus: PrivateBus;
let daemon: Daemon;
let exporter: ChildProcess;
let exporterLog = '';
let port: number;
let root: string;
let configDir: string;
let textDir: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port: p } = s.address() as { port: number };
      s.close(() => resolve(p));
    });
  });
}

/** The exporter's /metrics through curl, as samples: `name{labels sorted as the exporter prints them}` → value. */
function scrape(): Map<string, number> {
  const r = spawnSync('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/metrics`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`curl: ${r.stderr}\n${exporterLog}`);
  const samples = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** Runs `impermanencectl metrics` into the collector's folder. */
function metrics(...extra: string[]) {
  return ctl('metrics', '--bus', bus.address, '--config', configDir, '--root', root, '--out', join(textDir, 'impermanence.prom'), ...extra);
}

async function waitFor<T>(what: string, fn: () => T | undefined): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = fn();
    if (v !== undefined) return v;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}\n${daemon?.log()}\n${exporterLog}`);
}

beforeAll(async () => {
  root = sandboxRoot({
    prefix: 'impermanence-fleetF-metrics-',
    config: `[persistence."/persistent"]
directories = ["/var/log", "/srv/data", ${JSON.stringify(WEIRD)}]
files = [{ file = "/etc/linked.conf", method = "symlink" }]
`,
    dirs: ['var/log', 'srv/data', WEIRD, 'var/lib/undeclared', 'persistent/var/log', 'persistent/srv/data', `persistent${WEIRD}`, 'persistent/etc'],
  });
  writeFileSync(join(root, 'persistent/etc/linked.conf'), 'kept\n');
  symlinkSync('/persistent/etc/linked.conf', join(root, 'etc/linked.conf'));
  writeFileSync(join(root, 'var/lib/undeclared/blob'), Buffer.alloc(4096, 1)); // lost at reboot
  configDir = join(root, 'etc/impermanence/persist.d');

  bus = await startBus();
  // A private mount namespace where /var/log and the oddly named folder are really bind-mounted; /srv/data is not.
  daemon = await startDaemon({ bus, root, bindMounts: ['var/log', WEIRD.slice(1)] });

  textDir = tempDir('impermanence-fleetF-textfile-');
  chmodSync(textDir, 0o755);
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    exporterLog = '';
    exporter = spawn('setpriv', ['--pdeathsig', 'KILL', '--', EXPORTER, `--web.listen-address=127.0.0.1:${port}`, '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${textDir}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    exporter.stdout!.on('data', (d) => (exporterLog += d));
    exporter.stderr!.on('data', (d) => (exporterLog += d));
    const up = await waitFor('node_exporter to listen', () => (exporter.exitCode !== null ? false : spawnSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/metrics`]).status === 0 ? true : undefined));
    if (up) break;
    if (attempt === 2) throw new Error(`node_exporter did not start:\n${exporterLog}`); // the port was taken meanwhile: another
  }
});

afterAll(async () => {
  if (exporter && exporter.exitCode === null && exporter.signalCode === null) {
    exporter.kill('SIGTERM');
    await new Promise((r) => exporter.once('exit', r));
  }
  await daemon?.stop();
  await bus?.stop();
});

describe('impermanencectl metrics, scraped through the real node_exporter', () => {
  it('exports entries by state, drift by kind, the scan time and the config validity', async () => {
    const before = Date.now() / 1000;
    const r = metrics();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const file = join(textDir, 'impermanence.prom');
    expect(statSync(file).mode & 0o777).toBe(0o644);
    expect(readdirSync(textDir)).toEqual(['impermanence.prom']); // no temporary file left

    const m = scrape();
    expect(m.get('node_textfile_scrape_error')).toBe(0);
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    expect(m.get(`impermanence_build_info{daemon_version="${version}",version="${version}"}`)).toBe(1);
    expect(m.get('impermanence_up')).toBe(1);
    expect([m.get('impermanence_state{state="ok"}'), m.get('impermanence_state{state="degraded"}'), m.get('impermanence_state{state="invalid-config"}')]).toEqual([0, 1, 0]);
    expect([m.get('impermanence_config_valid'), m.get('impermanence_config_problems'), m.get('impermanence_config_files')]).toEqual([1, 0, 1]);

    const entries = (kind: string, state: string) => m.get(`impermanence_entries{kind="${kind}",state="${state}",storage="/persistent"}`);
    expect([entries('directory', 'mounted'), entries('directory', 'unmounted'), entries('file', 'linked'), entries('file', 'unlinked')]).toEqual([2, 1, 1, 0]);
    const inPlace = (path: string, kind = 'directory') => m.get(`impermanence_entry_in_place{kind="${kind}",path=${JSON.stringify(path)},storage="/persistent"}`);
    expect([inPlace('/var/log'), inPlace('/srv/data'), inPlace(WEIRD), inPlace('/etc/linked.conf', 'file')]).toEqual([1, 0, 1, 1]);

    expect(m.get('impermanence_drift_items{kind="unmounted"}')).toBe(1);
    expect(m.get('impermanence_drift_items{kind="ephemeral"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('impermanence_drift_bytes{kind="ephemeral"}')).toBeGreaterThanOrEqual(4096);
    expect(m.get('impermanence_drift_files{kind="ephemeral"}')).toBeGreaterThanOrEqual(1);
    for (const kind of ['replaced', 'shadowed', 'attributes', 'orphan']) expect([kind, m.get(`impermanence_drift_items{kind="${kind}"}`)]).toEqual([kind, 0]);
    const scanned = m.get('impermanence_last_scan_timestamp_seconds')!;
    expect(scanned).toBeGreaterThanOrEqual(before);
    expect(scanned).toBeLessThanOrEqual(Date.now() / 1000);
    expect(m.get('impermanence_last_scan_duration_seconds')).toBeGreaterThanOrEqual(0);
    expect(m.get('impermanence_drift_since_timestamp_seconds')).toBeGreaterThan(0);
  });

  it('follows an entry that goes unmounted, and more drift', async () => {
    // Unmount /var/log inside the daemon's mount namespace: the daemon sees its mount table change.
    expect(spawnSync('nsenter', ['-t', String(daemon.pid), '-m', 'umount', join(root, 'var/log')]).status).toBe(0);
    writeFileSync(join(root, 'var/lib/undeclared/more'), Buffer.alloc(8192, 2));
    const m = await waitForAsync('/var/log unmounted in the metrics', () => {
      expect(metrics().code).toBe(0);
      const s = scrape();
      return s.get('impermanence_entry_in_place{kind="directory",path="/var/log",storage="/persistent"}') === 0 ? s : undefined;
    });
    expect(m.get('impermanence_entries{kind="directory",state="unmounted",storage="/persistent"}')).toBe(2);
    expect(m.get('impermanence_drift_items{kind="unmounted"}')).toBe(2);
    expect(m.get('impermanence_drift_bytes{kind="ephemeral"}')).toBeGreaterThanOrEqual(4096 + 8192);
  });

  it('says the config on disk is invalid before anything reloads it', () => {
    writeFileSync(join(configDir, '20-bad.toml'), '[persistence."/persistent"]\ndirectories = ["var/relative", "/srv/data"]\n');
    try {
      expect(metrics('--no-scan').code).toBe(0);
      const m = scrape();
      expect(m.get('node_textfile_scrape_error')).toBe(0);
      expect([m.get('impermanence_config_valid'), m.get('impermanence_config_problems'), m.get('impermanence_config_files')]).toEqual([0, 2, 2]);
      expect(m.get('impermanence_up')).toBe(1); // the daemon keeps the config it has
      expect(m.has('impermanence_last_scan_timestamp_seconds')).toBe(false); // --no-scan
    } finally {
      unlinkSync(join(configDir, '20-bad.toml'));
    }
  });

  it('writes impermanence_up 0 when the daemon cannot be reached, with the config validity', () => {
    const r = ctl('metrics', '--bus', `unix:path=${join(textDir, 'no-such-socket')}`, '--config', configDir, '--root', root, '--out', join(textDir, 'impermanence.prom'));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^impermanencectl metrics: cannot connect to the system bus: .*; writing impermanence_up 0\n$/);
    const m = scrape();
    expect(m.get('node_textfile_scrape_error')).toBe(0);
    expect(m.get('impermanence_up')).toBe(0);
    expect(m.get('impermanence_config_valid')).toBe(1);
    expect([...m.keys()].some((k) => k.startsWith('impermanence_entries') || k.startsWith('impermanence_drift'))).toBe(false);
    expect(m.get(`impermanence_state{state="degraded"}`)).toBe(0);
  });

  it('node_exporter really refuses a malformed file (so the passes above mean something)', () => {
    const bad = join(textDir, 'broken.prom');
    writeFileSync(bad, '# TYPE impermanence_x gauge\nimpermanence_x{path="unterminated} 1\n');
    try {
      expect(scrape().get('node_textfile_scrape_error')).toBe(1);
    } finally {
      unlinkSync(bad);
    }
    expect(scrape().get('node_textfile_scrape_error')).toBe(0);
  });

  it('--out - prints the file; a folder it cannot write in is exit 1 and leaves nothing', () => {
    const r = ctl('metrics', '--no-scan', '--bus', bus.address, '--config', configDir, '--root', root, '--out', '-');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# HELP impermanence_build_info /);
    const missing = join(textDir, 'missing', 'impermanence.prom');
    const w = ctl('metrics', '--no-scan', '--bus', bus.address, '--config', configDir, '--root', root, '--out', missing);
    expect(w.code).toBe(1);
    expect(w.stderr).toMatch(/cannot write .*missing\/impermanence\.prom: ENOENT/);
    expect(existsSync(join(textDir, 'missing'))).toBe(false);
  });
});

async function waitForAsync<T>(what: string, fn: () => T | undefined): Promise<T> {
  for (let i = 0; i < 40; i++) {
    const v = fn();
    if (v !== undefined) return v;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}\n${daemon?.log()}`);
}

/**
 * Prometheus's own promtool (from Debian's `prometheus` package; .ci/run extracts it and sets
 * PROMTOOL): its linter on what `metrics` writes, and the README's alert rules checked and
 * unit-tested (`promtool test rules`: each alert fires on such series, after its `for`, and only then).
 */
describe('promtool', () => {
  const promtool = process.env.PROMTOOL ?? '/usr/bin/promtool';
  const run = (args: string[], input?: string) => spawnSync(promtool, args, { encoding: 'utf8', input, cwd: REPO });

  beforeAll(() => {
    if (!existsSync(promtool)) throw new Error(`promtool not found at ${promtool}: set PROMTOOL (see .ci/run: apt-get download prometheus)`);
  });

  it('check metrics: the file impermanencectl metrics writes passes its linter', () => {
    const r = ctl('metrics', '--bus', bus.address, '--config', configDir, '--root', root, '--out', '-');
    expect(r.code).toBe(0);
    const lint = run(['check', 'metrics'], r.stdout);
    expect(lint.stdout + lint.stderr).toBe('');
    expect(lint.status).toBe(0);
  });

  it('the README\'s alert rules: check rules, and test rules against series like ours', () => {
    const rules = join(REPO, 'examples', 'prometheus', 'impermanence-rules.yml');
    expect(run(['check', 'rules', rules]).status).toBe(0);
    const t = run(['test', 'rules', join(REPO, 'test', 'fixtures', 'prometheus', 'rules-test.yml')]);
    expect(t.stdout).toContain('SUCCESS');
    expect(t.status).toBe(0);
    expect(readFileSync(join(REPO, 'README.md'), 'utf8')).toContain(readFileSync(rules, 'utf8'));
  });
});
