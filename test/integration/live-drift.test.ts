/**
 * Live drift without a scan (drift/live-drift.ts) with the real impermanence-pathwatch: storage
 * watched with inotify (new orphans, a declared folder's mode), an entry's symlink made or
 * replaced (what makes the manager re-read the entries), and the kernel's inotify watch limit reached (a user namespace with a limit of 2,
 * so the host's limit is untouched). The write watcher (fanotify) is left out: it has its own
 * tests (fanotify.test.ts, daemon.test.ts), and so is the mount table (the daemon test unmounts
 * in the daemon's namespace).
 */
import { chmodSync, cpSync, mkdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { resolveConfig } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { LiveDrift } from '../../src/drift/live-drift';
import { readMountPoints } from '../../src/drift/mountinfo';
import type { DriftReport } from '../../src/drift/report';
import { scanDrift } from '../../src/drift/scan';
import { EXAMPLE_ROOT, REPO, tempDir, tree } from '../helpers';

const PATHWATCH = join(REPO, 'dist/impermanence-pathwatch');

async function sandbox(pathWatcher = PATHWATCH) {
  const root = tempDir('impermanence-live-drift-');
  chmodSync(root, 0o755);
  cpSync(join(EXAMPLE_ROOT, 'etc'), join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'persistent/srv/data'), { recursive: true });
  mkdirSync(join(root, 'srv'), { recursive: true });
  writeFileSync(join(root, 'persistent/srv/notes'), 'n');
  const users = UserDb.read(root);
  const config = resolveConfig(loadConfig([tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = [{ directory = "/srv/data", mode = "0755" }]\nfiles = ["/srv/notes"]\n' })]), users);
  chmodSync(join(root, 'persistent/srv/data'), 0o755);
  const live = new LiveDrift({ root, configDirs: [], pathWatcher });
  const logs: string[] = [];
  live.on('log', (level, message) => logs.push(`${level}: ${message}`));
  const reports: DriftReport[] = [];
  live.on('drift', (r) => {
    reports.push(r);
    live.published(r);
  });
  live.configure(config);
  live.published(await scanDrift({ root, config, users, mountPoints: readMountPoints(), since: 0 }));
  await live.start();
  // The watches are in place once the helper said so (a 'watching' line).
  await new Promise((r) => setTimeout(r, 300));
  const until = async (what: string, pred: (r: DriftReport) => boolean) => {
    for (const start = Date.now(); !reports.some(pred); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() - start > 3000) throw new Error(`not seen in 3 s: ${what}\n${JSON.stringify(reports.at(-1)?.items)}\n${logs.join('\n')}`);
    }
    return reports.find(pred)!;
  };
  return { root, live, reports, logs, until };
}

describe('live drift, watched with inotify', () => {
  it('sees a new orphan in storage, and its removal, without a scan', async () => {
    const { root, live, reports, until } = await sandbox();
    try {
      mkdirSync(join(root, 'persistent/srv/old'));
      writeFileSync(join(root, 'persistent/srv/old/f'), 'x');
      await until('the orphan', (r) => r.items.some((i) => i.kind === 'orphan' && i.path === '/persistent/srv/old'));
      reports.length = 0;
      rmSync(join(root, 'persistent/srv/old'), { recursive: true });
      await until('the orphan gone', (r) => !r.items.some((i) => i.kind === 'orphan'));
    } finally {
      live.stop();
    }
  });

  it('sees a declared storage folder\'s mode change (attributes)', async () => {
    const { root, live, until } = await sandbox();
    try {
      chmodSync(join(root, 'persistent/srv/data'), 0o777);
      const r = await until('attributes', (r) => r.items.some((i) => i.kind === 'attributes' && i.path === '/persistent/srv/data'));
      expect(r.items.find((i) => i.kind === 'attributes')!.detail).toMatch(/mode 0777, declared 0755/);
    } finally {
      live.stop();
    }
  });

  it('re-reads the entries when an entry\'s symlink is made or replaced, not for a file beside it', async () => {
    // The storage here is a folder, not a mount: every entry stays "unmounted" whatever is done,
    // so what is asserted is the 'entries' event (the manager re-reads the entries' status on it).
    const { root, live } = await sandbox();
    let entries = 0;
    live.on('entries', () => entries++);
    const settle = () => new Promise((r) => setTimeout(r, 400));
    try {
      writeFileSync(join(root, 'srv/other'), 'beside the entry');
      await settle();
      expect(entries).toBe(0);
      symlinkSync('/persistent/srv/notes', join(root, 'srv/notes'));
      await settle();
      expect(entries).toBeGreaterThan(0);
      entries = 0;
      unlinkSync(join(root, 'srv/notes'));
      writeFileSync(join(root, 'srv/notes'), 'a file where the symlink was');
      await settle();
      expect(entries).toBeGreaterThan(0);
    } finally {
      live.stop();
    }
  });

  it('says when the kernel\'s watch limit is reached, and goes on with the watches it has', async () => {
    const limited = join(tempDir('impermanence-live-limit-'), 'pathwatch');
    writeFileSync(limited, `#!/bin/sh\nexec unshare -U -r sh -c 'echo 2 > /proc/sys/user/max_inotify_watches && exec "$0"' ${PATHWATCH}\n`, { mode: 0o755 });
    const { live, logs } = await sandbox(limited);
    try {
      for (const start = Date.now(); !logs.some((l) => l.includes('watch limit')) && Date.now() - start < 5000; ) await new Promise((r) => setTimeout(r, 20));
      expect(logs.join('\n')).toMatch(/^warning: The kernel's inotify watch limit \(fs\.inotify\.max_user_watches\) was reached at \S+: .* \(2 are\); what changes there is seen by scans only$/m);
    } finally {
      live.stop();
    }
  });
});

describe('impermanence-pathwatch read by PathWatch (src/drift/path-watch.ts)', () => {
  it('reports a name holding "\\r" or another control byte whole, and injects no overflow; bytes not UTF-8 stay apart', async () => {
    const { PathWatch } = await import('../../src/drift/path-watch');
    const dir = tempDir('impermanence-pathwatch-');
    const pw = new PathWatch(PATHWATCH);
    const changes: string[] = [];
    let overflows = 0;
    pw.on('change', (p) => changes.push(p));
    pw.on('overflow', () => overflows++);
    const watching = new Promise((resolve) => pw.once('watching', resolve));
    try {
      expect(await pw.start()).toBe(true);
      pw.watch([dir]);
      await watching;
      const names = ['.ssh\rX', 'x\roverflow', 'bell\x07\x1b[0m\x7f'];
      for (const n of names) writeFileSync(join(dir, n), 'x');
      // Names that are not UTF-8: each byte comes back as U+DC00 + byte (see helper.ts), apart.
      for (const byte of [0xff, 0xfe]) writeFileSync(Buffer.concat([Buffer.from(`${dir}/z`), Buffer.from([byte])]), 'x');
      names.push('z\udcff', 'z\udcfe');
      const want = names.map((n) => join(dir, n)).sort();
      const deadline = Date.now() + 10_000;
      while (!want.every((p) => changes.includes(p)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect([...new Set(changes)].sort()).toEqual(want);
      expect(overflows).toBe(0);
    } finally {
      pw.stop();
    }
  });
});
