import { EventEmitter } from 'node:events';
import { Manager } from '../../src/daemon/manager';
import type { LiveDrift } from '../../src/drift/live-drift';
import type { DriftReport } from '../../src/drift/report';
import { tree } from '../helpers';

/**
 * Live drift that lost events (a kernel queue overflowed) asks the manager for a full scan. The
 * live watch is a stand-in here: a queue overflow at the exact moment a scan runs cannot be
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
