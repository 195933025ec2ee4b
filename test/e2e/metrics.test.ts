/**
 * impermanence-metrics.service on a booted systemd, as installed: with its hardening (read-only
 * system but for the collector's folder, no network but the bus) it reaches impermanenced,
 * replaces the collector's file whole, follows an entry that goes unmounted, and does nothing
 * where no node_exporter folder exists. (The format itself is checked by the real node_exporter
 * and promtool in test/integration/metrics.test.ts.)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Container, ensureRootfs, leftovers } from './nspawn';
import { installPackage, sh } from './package';

jest.setTimeout(20 * 60_000);

const CONFIG_IN_STORAGE = '/persistent/etc/impermanence/persist.d';
const PROM = '/var/lib/prometheus/node-exporter/impermanence.prom';

let tmp: string;
let c: Container;
const NAME = `fleetF-metrics-${process.pid}`; // unique: other boot tests may run beside this one

/** The file's samples: `name{labels}` → value. */
async function samples(): Promise<Map<string, number>> {
  const text = await sh(c, `cat ${PROM}`);
  return new Map(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]));
}

beforeAll(async () => {
  const rootfs = await ensureRootfs();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'impermanence-fleetF-metrics-'));
  const storage = path.join(tmp, 'persistent');
  const config = path.join(storage, CONFIG_IN_STORAGE.slice('/persistent/'.length));
  fs.mkdirSync(config, { recursive: true });
  fs.writeFileSync(path.join(config, '10-test.toml'), '[persistence."/persistent"]\ndirectories = ["/var/lib/kept", "/srv/data"]\n');
  c = await Container.boot({
    name: NAME,
    rootfs,
    binds: [{ host: storage, container: '/persistent' }],
    initArgs: [`impermanence.config=${CONFIG_IN_STORAGE}`],
    setup: (root) => {
      installPackage(root);
      // As prometheus-node-exporter leaves it: the collector's folder, root's.
      fs.mkdirSync(path.join(root, 'var/lib/prometheus/node-exporter'), { recursive: true });
    },
  });
});

afterAll(async () => {
  await c?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  expect(leftovers(NAME)).toEqual([]);
});

describe('impermanence-metrics.service, installed and hardened', () => {
  it('writes the collector\'s file from the running daemon', async () => {
    const start = await c.sh('systemctl start impermanence-metrics.service');
    if (start.code !== 0) throw new Error((await c.sh('journalctl -b --no-pager -u impermanence-metrics.service | tail -30')).stdout);
    expect((await sh(c, 'systemctl show -P Result impermanence-metrics.service')).trim()).toBe('success');
    expect((await sh(c, `stat -c '%U %a' ${PROM}; ls -A /var/lib/prometheus/node-exporter`)).trim().split('\n')).toEqual(['root 644', 'impermanence.prom']);
    const m = await samples();
    expect(m.get('impermanence_up')).toBe(1);
    expect(m.get('impermanence_state{state="ok"}')).toBe(1);
    expect(m.get('impermanence_config_valid')).toBe(1);
    expect(m.get('impermanence_entries{storage="/persistent",kind="directory",state="mounted"}')).toBe(2);
    expect(m.get('impermanence_last_scan_timestamp_seconds')).toBeGreaterThan(0);
  });

  it('follows an entry that goes unmounted', async () => {
    await sh(c, 'umount /srv/data && systemctl start impermanence-metrics.service');
    const m = await samples();
    expect(m.get('impermanence_entry_in_place{path="/srv/data",kind="directory",storage="/persistent"}')).toBe(0);
    expect(m.get('impermanence_entry_in_place{path="/var/lib/kept",kind="directory",storage="/persistent"}')).toBe(1);
    expect(m.get('impermanence_state{state="degraded"}')).toBe(1);
    expect(m.get('impermanence_drift_items{kind="unmounted"}')).toBe(1);
  });

  it('its timer is valid and can be enabled; without the collector\'s folder the service does nothing', async () => {
    await sh(c, 'systemctl enable --now impermanence-metrics.timer');
    expect(await sh(c, 'systemctl list-timers --all --no-legend impermanence-metrics.timer')).toContain('impermanence-metrics.service');
    await sh(c, 'rm -r /var/lib/prometheus/node-exporter && systemctl start impermanence-metrics.service');
    expect((await sh(c, 'systemctl show -P ConditionResult impermanence-metrics.service')).trim()).toBe('no');
    expect((await c.sh('ls /var/lib/prometheus')).stdout).toBe('');
    // The exposure systemd-analyze gives it, for the README (not a pass/fail figure).
    const security = await c.sh('systemd-analyze security impermanence-metrics.service --no-pager | tail -1');
    process.stdout.write(`impermanence-metrics.service: ${security.stdout}`);
  });
});
