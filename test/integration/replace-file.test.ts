/**
 * Files we own are replaced whole or not at all (issue 13.14): the user's notify.toml (edited by
 * `impermanencectl notify on|off` and by the agent's Ignore), the agent's state file and its
 * drift report. On a real full filesystem (a small tmpfs, mounted in a private mount namespace so
 * the host is untouched, then filled up) a failed write leaves the old file byte for byte.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { readNotifyConfig, setEnabled } from '../../src/config/notify';
import { removeStaleTemps, replaceFile } from '../../src/shared/replace-file';
import { REPO, tempDir } from '../helpers';

jest.setTimeout(60_000);

const CTL = join(REPO, 'dist', 'impermanencectl.js');

/**
 * A notify.toml of exactly two tmpfs pages that ends inside an [[ignore]] table, without a
 * newline: cut by one byte, it no longer parses. `enable = true` becomes `enable = false`, one
 * byte longer: on a full disk, the edited file needs a page there is not.
 */
function twoPages(): string {
  const head = '# my settings\nenable = true\nscope = "home"\n';
  const tail = '\n[[ignore]]\npath = "~/.cache/thing"';
  return head + '#'.repeat(8192 - head.length - tail.length - 1) + '\n' + tail;
}

/**
 * Runs `commands` (sh) in a private mount namespace where $D is a 1 MiB tmpfs holding `files`
 * (relative path → text), filled up before the commands run. $OUT is a host folder to copy
 * results to; "$@" is the argument list given. Returns the shell's output and $OUT.
 */
function onFullTmpfs(files: Record<string, string>, commands: string, args: string[] = []) {
  const d = tempDir();
  const out = tempDir();
  const seed = tempDir();
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(seed, name, '..'), { recursive: true });
    writeFileSync(join(seed, name), text);
  }
  const script = `set -u
D="$1"; OUT="$2"; SEED="$3"; shift 3
mount -t tmpfs -o size=1m,mode=0755 tmpfs "$D" || exit 99
cp -a "$SEED/." "$D/"
dd if=/dev/zero of="$D/fill" bs=4096 2>/dev/null
${commands}`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', d, out, seed, ...args], { encoding: 'utf8' });
  if (r.status === 99) throw new Error(`cannot mount a tmpfs: ${r.stderr}`);
  return { ...r, out };
}

describe('a full disk', () => {
  it('impermanencectl notify off fails with a clear message and leaves notify.toml byte-identical', () => {
    const before = twoPages();
    const r = onFullTmpfs(
      { 'config/impermanence/notify.toml': before },
      `XDG_CONFIG_HOME="$D/config" "$@" notify off 2> "$OUT/stderr"; echo $? > "$OUT/code"
cp "$D/config/impermanence/notify.toml" "$OUT/after.toml"
ls -A "$D/config/impermanence" > "$OUT/ls"
XDG_CONFIG_HOME="$D/config" "$@" notify status > "$OUT/status"
rm "$D/fill"
XDG_CONFIG_HOME="$D/config" "$@" notify off > /dev/null && cp "$D/config/impermanence/notify.toml" "$OUT/freed.toml"`,
      [process.execPath, CTL],
    );
    const got = (name: string) => readFileSync(join(r.out, name), 'utf8');
    expect(got('code').trim()).toBe('1');
    expect(got('stderr')).toMatch(/^impermanencectl notify: cannot write \S+\/impermanence\/notify\.toml \(ENOSPC: no space left on device, write\); it is unchanged\n$/);
    expect(got('after.toml')).toBe(before);
    expect(got('ls')).toBe('notify.toml\n'); // no temporary file left behind
    expect(got('status')).toMatch(/^drift notifications are on for you/);
    // With room again, the same edit goes through and keeps every other line.
    expect(got('freed.toml')).toBe(before.replace('enable = true', 'enable = false'));
  });

  it("the agent's Ignore and its state file keep the old file whole when the disk is full", () => {
    // The agent's own edits, bundled from the sources for a node run inside the namespace.
    const driver = join(tempDir(), 'driver.js');
    buildSync({
      stdin: {
        contents: `import { appendIgnore } from './src/config/notify';
import { replaceFile } from './src/shared/replace-file';
const [what, file, arg] = process.argv.slice(2);
try {
  if (what === 'ignore') appendIgnore(file, [arg], '/home/bird');
  else replaceFile(file, arg, { mode: 0o600 });
  console.log('written');
} catch (err) {
  console.log((err as Error).message);
}`,
        resolveDir: REPO,
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      outfile: driver,
      logLevel: 'error',
    });
    const config = twoPages();
    const told = JSON.stringify({ boot: 'x', told: ['a'.repeat(5000)] });
    const r = onFullTmpfs(
      { 'config/notify.toml': config, 'run/impermanence-notify.json': told },
      `"$@" ignore "$D/config/notify.toml" /home/bird/.local/share/junk
"$@" told "$D/run/impermanence-notify.json" '{"boot":"x","told":["more than before"]}'
cp "$D/config/notify.toml" "$D/run/impermanence-notify.json" "$OUT/"
ls -A "$D/config" "$D/run" > "$OUT/ls"`,
      [process.execPath, driver],
    );
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/^cannot write \S+ \(ENOSPC: no space left on device, write\); it is unchanged$/);
    expect(readFileSync(join(r.out, 'notify.toml'), 'utf8')).toBe(config);
    expect(readFileSync(join(r.out, 'impermanence-notify.json'), 'utf8')).toBe(told);
    expect(readFileSync(join(r.out, 'ls'), 'utf8')).not.toMatch(/\.tmp/);
  });
});

describe('replacing a file', () => {
  it('names its temporary file with its PID; a leftover of a process that is gone is removed, others stay', () => {
    const dir = tempDir();
    const file = join(dir, '50-local.toml');
    writeFileSync(file, '# mine\n');
    const gone = spawnSync('true').pid!; // has exited: its PID runs nothing (until reused, when the file stays)
    const stale = `.50-local.toml.${gone}-0123456789ab.tmp`;
    const running = `.50-local.toml.${process.pid}-0123456789ab.tmp`;
    for (const n of [stale, running, '.other.toml.1-0123456789ab.tmp', '.50-local.toml.x.tmp']) writeFileSync(join(dir, n), 'half');
    expect(removeStaleTemps(file)).toEqual([stale]);
    expect(readdirSync(dir).sort()).toEqual(['.50-local.toml.x.tmp', running, '.other.toml.1-0123456789ab.tmp', '50-local.toml'].sort());
    expect(readFileSync(file, 'utf8')).toBe('# mine\n');
  });

  it('keeps a symlinked config a symlink, and its mode', () => {
    const dir = tempDir();
    const dotfiles = join(dir, 'dotfiles');
    mkdirSync(dotfiles);
    mkdirSync(join(dir, 'impermanence'));
    writeFileSync(join(dotfiles, 'notify.toml'), '# mine\nenable = true\n');
    chmodSync(join(dotfiles, 'notify.toml'), 0o640);
    const link = join(dir, 'impermanence', 'notify.toml');
    symlinkSync('../dotfiles/notify.toml', link);
    setEnabled(link, false);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe('../dotfiles/notify.toml');
    expect(readFileSync(join(dotfiles, 'notify.toml'), 'utf8')).toBe('# mine\nenable = false\n');
    expect(statSync(join(dotfiles, 'notify.toml')).mode & 0o777).toBe(0o640);
    expect(readNotifyConfig(link, '/home/bird').enable).toBe(false);
    expect(readdirSync(dotfiles)).toEqual(['notify.toml']);
  });

  it('gives a new file the mode asked for, whatever the umask', () => {
    const file = join(tempDir(), 'state.json');
    const umask = process.umask(0o077);
    try {
      replaceFile(file, '{}', { mode: 0o644 });
    } finally {
      process.umask(umask);
    }
    expect(statSync(file).mode & 0o777).toBe(0o644);
    expect(readFileSync(file, 'utf8')).toBe('{}');
  });
});
