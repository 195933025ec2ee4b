/**
 * src/drift/live.ts (LiveWatcher, the daemon's side of the write watcher) over the real
 * dist/impermanence-fanotify, its root a fresh folder on /dev/shm: the mark covers that whole
 * tmpfs, so other processes' writes there reach the watcher too, outside the root. Its rate limit
 * is set to 20 s, far longer than any wait here: a change that comes at all came at once, and one
 * held for the window does not come within the test. Needs root.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiveWatcher, type LiveChange } from '../../src/drift/live';
import { REPO } from '../helpers';

jest.setTimeout(60_000);

const BIN = join(REPO, 'dist', 'impermanence-fanotify');
const canRun = process.platform === 'linux' && process.getuid?.() === 0 && existsSync('/dev/shm');
const WINDOW_MS = 20_000;

let root: string;
let watcher: LiveWatcher | undefined;
const changes: LiveChange[] = [];

/** The next change naming `group`, or undefined if none came within `ms`. */
async function changeFor(group: string, ms: number): Promise<LiveChange | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const i = changes.findIndex((c) => c.groups.has(group));
    if (i >= 0) return changes.splice(0, i + 1).pop();
    await new Promise((r) => setTimeout(r, 10));
  }
  return undefined;
}

(canRun ? describe : describe.skip)('LiveWatcher: writes after a quiet spell go out at once, a burst waits', () => {
  beforeEach(async () => {
    root = mkdtempSync('/dev/shm/impermanence-live-watcher-');
    mkdirSync(join(root, 'srv'));
    changes.length = 0;
    watcher = new LiveWatcher({
      binary: BIN,
      root,
      // The folder right under /srv a write is in.
      groupOf: (p) => (p.startsWith('/srv/') ? p.split('/').slice(0, 3).join('/') : undefined),
      isEntry: () => false,
      delayMs: WINDOW_MS,
    });
    watcher.on('change', (c) => changes.push(c));
    expect(await watcher.start()).toBe(true);
  });

  afterEach(() => {
    watcher?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  test('a folder, then a file written in it a moment later: the second change is not held for the window', async () => {
    mkdirSync(join(root, 'srv/app'));
    expect(await changeFor('/srv/app', 10_000)).toBeDefined();
    // A single leading edge held this one until the window ended (the folder alone is no drift).
    writeFileSync(join(root, 'srv/app/state'), 'x');
    expect(await changeFor('/srv/app', 10_000)).toBeDefined();
  });

  test('while writes go on, the first three go out at once and the next waits for the window (or a sync)', async () => {
    // A mkdir is one event (a file's create and close_write may be read apart: two changes).
    for (const name of ['a', 'b', 'c']) {
      mkdirSync(join(root, 'srv', name));
      expect(await changeFor(`/srv/${name}`, 10_000)).toBeDefined();
    }
    mkdirSync(join(root, 'srv', 'd'));
    expect(await changeFor('/srv/d', 2_000)).toBeUndefined();
    // A barrier sends what was read at once.
    expect(await watcher!.sync(10_000)).toBe(true);
    expect(await changeFor('/srv/d', 1_000)).toBeDefined();
  });

  test('writes outside the root (other processes on the same filesystem) use none of the three', async () => {
    const outside = mkdtempSync('/dev/shm/impermanence-live-watcher-outside-');
    try {
      for (let i = 0; i < 20; i++) writeFileSync(join(outside, `f${i}`), 'x');
      expect(await watcher!.sync(10_000)).toBe(true);
      expect(changes).toEqual([]);
      for (const name of ['a', 'b', 'c']) {
        mkdirSync(join(root, 'srv', name));
        expect(await changeFor(`/srv/${name}`, 10_000)).toBeDefined();
      }
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
