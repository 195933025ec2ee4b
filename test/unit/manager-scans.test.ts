import { EventEmitter } from 'node:events';
import { Manager } from '../../src/daemon/manager';
import type { LiveDrift } from '../../src/drift/live-drift';
import type { DriftReport } from '../../src/drift/report';
import { tree } from '../helpers';

/**
 * The manager's scans: who waits for which, who may cancel what, and the full scan that live
 * drift asks for when it lost events (a kernel queue overflowed). The live watch is a stand-in here: a queue overflow at the exact moment a scan runs cannot be
 * staged with the real watcher (bench/dos.mjs shows it with a million files: 40% were never
 * counted before this). The manager, its scans and the walk of the root are real.
 */
class LiveStandIn extends EventEmitter {
  scansStarted = 0;
  onScanStarted: (() => void) | undefined;
  readonly since = 0;
  readonly watchingWrites = true;
  async start(): Promise<boolean> {
    return true;
  }
  configure(): void {}
  published(): void {}
  scanStarted(): void {
    this.scansStarted++;
    this.onScanStarted?.();
  }
  async fromScan(report: DriftReport): Promise<DriftReport> {
    return report;
  }
}

const silent = { log: () => undefined, close: () => undefined, mode: 'stderr' as const };

async function managerOver(root: string): Promise<{ manager: Manager; live: LiveStandIn }> {
  const live = new LiveStandIn();
  const manager = new Manager({ configDirs: [], root, version: 'test' }, silent, live as unknown as LiveDrift);
  await manager.startLive();
  return { manager, live };
}

/** A manager whose publishing scans are held after their walk until `release()`: what else is asked for meanwhile queues behind. */
async function heldManager(): Promise<{ manager: Manager; live: LiveStandIn; release: () => void }> {
  const { manager, live } = await managerOver(tree({ 'var/lib/a/f': 'x' }));
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  live.fromScan = async (report) => {
    await held;
    return report;
  };
  return { manager, live, release };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  return ok();
};

describe('a live rescan (events were lost)', () => {
  it('starts a scan when none runs', async () => {
    const { live } = await managerOver(tree({ 'var/lib/a/f': 'x' }));
    live.emit('rescan', 0);
    expect(await until(() => live.scansStarted === 1)).toBe(true);
  });

  it('follows a publishing scan that was running, which may have passed where the events were lost', async () => {
    const { manager, live } = await managerOver(tree({ 'var/lib/a/f': 'x' }));
    // The events are lost while the first scan runs.
    live.onScanStarted = () => {
      live.onScanStarted = undefined;
      live.emit('rescan', 0);
      live.emit('rescan', 0); // lost twice: still one scan after
    };
    await manager.scan(0, 'root');
    expect(await until(() => live.scansStarted === 2)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(live.scansStarted).toBe(2);
  });
});

describe('cancelling a scan that others joined', () => {
  it('cancels only the calls of whoever cancels; the scan goes on for the others, and stops when no one waits', async () => {
    // The first scan is held, so that the others queue behind it.
    const { manager, live, release } = await heldManager();
    const first = manager.scan(0, ':1.1', true, undefined, 1000);
    expect(await until(() => live.scansStarted === 1)).toBe(true);
    // Two callers ask for the same waiting scan; the first of them cancels.
    const a = manager.scan(5, ':1.2', false, undefined, 1001);
    const b = manager.scan(5, ':1.3', false, undefined, 1002);
    expect(manager.cancelScan(':1.2', false)).toBe(true);
    await expect(a).rejects.toThrow('the scan was cancelled');
    // A caller who joined the running scan cancels: the one who asked first still gets the report.
    const joiner = manager.scan(0, ':1.4', true, undefined, 1003);
    expect(manager.cancelScan(':1.4', false)).toBe(true);
    await expect(joiner).rejects.toThrow('the scan was cancelled');
    release();
    await expect(first).resolves.toMatchObject({ since: 0 });
    await expect(b).resolves.toMatchObject({ since: 5 });
    // Alone on a scan, cancelling stops it.
    const alone = manager.scan(7, ':1.5', false, undefined, 1004);
    expect(manager.cancelScan(':1.5', false)).toBe(true);
    await expect(alone).rejects.toThrow('the scan was cancelled');
    expect(manager.cancelScan(':1.5', false)).toBe(false);
  });
});

describe('a scan everyone who asked for it cancelled', () => {
  it('is not joined while it stops: who asks for the same scan then gets a scan of their own', async () => {
    const { manager, live, release } = await heldManager();
    const first = manager.scan(0, ':1.1', true, undefined, 1000);
    expect(await until(() => live.scansStarted === 1)).toBe(true);
    expect(manager.cancelScan(':1.1', false)).toBe(true);
    const second = manager.scan(0, ':1.2', true, undefined, 1001);
    release();
    await first.catch(() => undefined);
    await expect(second).resolves.toMatchObject({ since: 0 });
    expect(live.scansStarted).toBe(2);
  });
});
