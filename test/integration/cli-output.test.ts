/**
 * impermanencectl's output arrives whole whatever it is written to (issue 13.9): a pipe that
 * reads slowly, a file, a terminal. Large outputs come from a config of thousands of entries.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir, tree } from '../helpers';

jest.setTimeout(60_000);

const CTL = join(REPO, 'dist', 'impermanencectl.js');
const ENTRIES = 5000;

/** `[persistence."/persistent"] directories = [...]` with `n` entries made by `path(i)`. */
function bigConfig(n: number, path: (i: number) => string): string {
  const lines = Array.from({ length: n }, (_, i) => `  ${JSON.stringify(path(i))},`);
  return tree({ 'a.toml': `[persistence."/persistent"]\ndirectories = [\n${lines.join('\n')}\n]\n` });
}

/**
 * Runs impermanencectl with stdout and stderr on pipes that a slow reader empties: after each
 * chunk it stops reading for a moment, so the writer finds the pipe full again and again.
 */
function throughSlowPipes(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CTL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const read = (stream: NodeJS.ReadableStream, into: Buffer[]) =>
      stream.on('data', (chunk: Buffer) => {
        into.push(chunk);
        stream.pause();
        setTimeout(() => stream.resume(), 2);
      });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    read(child.stdout, out);
    read(child.stderr, err);
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }));
  });
}

/** The same command with stdout redirected to a file by a shell (Node writes files synchronously). */
function toFile(args: string[]): Buffer {
  const file = join(tempDir(), 'out');
  const r = spawnSync('sh', ['-c', 'f="$1"; shift; exec "$@" > "$f"', 'sh', file, process.execPath, CTL, ...args]);
  expect(r.status).toBe(0);
  return readFileSync(file);
}

describe('impermanencectl output on a pipe, a file and a terminal', () => {
  const config = bigConfig(ENTRIES, (i) => `/srv/d${i}`);

  it('generate --out - delivers every byte to a slow pipe, and exits 0', async () => {
    const reference = toFile(['generate', '--config', config, '--out', '-']);
    expect(reference.length).toBeGreaterThan(1_000_000);
    const r = await throughSlowPipes(['generate', '--config', config, '--out', '-']);
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBe(reference.length);
    expect(r.stdout.equals(reference)).toBe(true);
  });

  it('generate --out - --json is valid JSON on a slow pipe, with every unit', async () => {
    const r = await throughSlowPipes(['generate', '--config', config, '--out', '-', '--json']);
    expect(r.code).toBe(0);
    const data = JSON.parse(r.stdout.toString('utf8')) as { files: string[]; contents: Record<string, string> };
    expect(data.files.filter((f) => f.endsWith('.mount'))).toHaveLength(ENTRIES);
    expect(Object.keys(data.contents).filter((f) => f.endsWith('.mount'))).toHaveLength(ENTRIES);
  });

  it('check with thousands of problems gets every line to a slow pipe, and exits 1', async () => {
    const bad = bigConfig(2999, (i) => `relative${i}`);
    const r = await throughSlowPipes(['check', '--config', bad]);
    expect(r.code).toBe(1);
    const lines = r.stderr.toString('utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(2999);
    expect(lines[2998]).toMatch(/directories\[2998\]: path "relative2998" is relative/);
  });

  it('a terminal gets every line too', () => {
    const lines = toFile(['generate', '--config', config, '--out', '-']).toString('utf8').split('\n').length;
    // script(1) gives the command a pseudo-terminal; its copy of the output has CRLF line ends.
    const r = spawnSync('script', ['-qec', `"${process.execPath}" "${CTL}" generate --config "${config}" --out -`, '/dev/null'], { maxBuffer: 1 << 30 });
    expect(r.status).toBe(0);
    expect(r.stdout.toString('utf8').split('\r\n').length).toBe(lines);
  });

  it('a reader that leaves early (| head) ends it quietly with 0', () => {
    const r = spawnSync('sh', ['-c', '"$@" | head -n 1', 'sh', process.execPath, CTL, 'generate', '--config', config, '--out', '-'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^# .*\.mount\n$/);
    expect(r.stderr).toBe('');
  });
});
