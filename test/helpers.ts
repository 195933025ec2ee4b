import { cpSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { InvalidConfig } from '../src/config/errors';
import { loadConfig } from '../src/config/load';
import { resolveConfig, type ResolvedConfig } from '../src/config/resolve';
import { UserDb } from '../src/config/userdb';

export const REPO = join(__dirname, '..');
export const EXAMPLES = join(REPO, 'examples', 'persist.d');
export const EXAMPLE_ROOT = join(REPO, 'examples', 'root');

/** A temporary folder, removed after the current test file. */
const made: string[] = [];
export function tempDir(prefix = 'impermanence-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Writes files (relative path → text) under a new temp folder and returns it. */
export function tree(files: Record<string, string>): string {
  const dir = tempDir();
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

/** Config files (name → text), written to a temp folder, loaded and resolved against the example user database. */
export function resolveFiles(files: Record<string, string>): ResolvedConfig {
  return resolveConfig(loadConfig([tree(files)]), UserDb.read(EXAMPLE_ROOT));
}

/** A root with the example user database, for `--root`. */
export function rootWithUsers(): string {
  const root = tempDir();
  cpSync(join(EXAMPLE_ROOT, 'etc'), join(root, 'etc'), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  return root;
}

export interface RunOptions {
  /** Added to this process's environment. */
  env?: Record<string, string>;
  input?: string;
  cwd?: string;
  /** Milliseconds, then SIGTERM (the code is then -1). */
  timeout?: number;
}

/** The one process runner of the tests: runs a command to its end; never throws on a non-zero exit. (Async, on a private bus, as another user: runOnBus in test/dbus/harness.ts.) */
export function run(cmd: string, args: string[], opts: RunOptions = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...opts.env }, input: opts.input, cwd: opts.cwd, timeout: opts.timeout, maxBuffer: 1 << 28 });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A fresh btrfs on a loop device over a sparse image of `size` in a new temp folder (root); detach() frees the device. */
export function btrfsLoop(prefix: string, size: string): { dir: string; device: string; detach(): void } {
  const dir = tempDir(prefix);
  const img = join(dir, 'img');
  const made = run('sh', ['-c', 'truncate -s "$1" "$2" && losetup -f --show "$2"', 'sh', size, img]);
  const device = made.stdout.trim();
  if (made.code !== 0 || !/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup failed: ${made.stderr}`);
  const mkfs = run('mkfs.btrfs', ['-q', '-f', device]);
  if (mkfs.code !== 0) {
    run('losetup', ['-d', device]);
    throw new Error(`mkfs.btrfs ${device} failed: ${mkfs.stderr}`);
  }
  return { dir, device, detach: () => void run('losetup', ['-d', device]) };
}

/** The build's impermanence-prepare, named in generated units (so that systemd-analyze verify finds it). */
export const PREPARE = join(REPO, 'dist', 'impermanence-prepare.js');
export const CTL = join(REPO, 'dist', 'impermanencectl.js');
export const ctl = (...args: string[]) => run(process.execPath, [CTL, ...args], { env: { IMPERMANENCE_PREPARE: PREPARE } });
export const generator = (args: string[], env: Record<string, string>) =>
  run(process.execPath, [join(REPO, 'dist', 'impermanence-generator.js'), ...args], { env: { IMPERMANENCE_PREPARE: PREPARE, ...env } });

/** The messages of the InvalidConfig that `fn` throws (the test fails if it throws none). */
export function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidConfig) return err.problems.map((p) => p.message);
    throw err;
  }
  throw new Error('expected InvalidConfig');
}
