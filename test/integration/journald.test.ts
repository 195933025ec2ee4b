/**
 * The journald client against a real systemd-journald in private mount/PID/network namespaces
 * (test/journald/with-journald.sh); its encoding and fallbacks without journald are unit tests
 * (test/unit/journal.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from '../helpers';

const WITH_JOURNALD = join(REPO, 'test', 'journald', 'with-journald.sh');
const JOURNALD = '/lib/systemd/systemd-journald';

// ---------------------------------------------------------------------------------------------
// A real systemd-journald in private mount/PID/network namespaces (test/journald/with-journald.sh).

const canRunJournald =
  process.platform === 'linux' && process.getuid?.() === 0 && existsSync(JOURNALD) && existsSync('/usr/bin/unshare');

/** Runs in the namespace: logs with the bundled module, then reports what happened. */
const EMIT = String.raw`
const fs = require('node:fs');
const j = require(process.env.JOURNAL_MODULE);
const out = process.env.OUT;
const t0 = process.hrtime.bigint();
const logger = j.createLogger();
const report = { mode: logger.mode };
logger.log(j.LOG_INFO, 'persisted /var/lib/foo', { IMPERMANENCE_PATH: '/var/lib/foo', IMPERMANENCE_KIND: 'ephemeral' });
logger.log(j.LOG_NOTICE, 'first line\nsecond line ✓', { IMPERMANENCE_PATH: '/var/lib/multi', NOTE: 'value\nwith newline' });
logger.log(j.LOG_WARNING, 'disk nearly full', { IMPERMANENCE_PATH: '/var/lib/bar' });
logger.log(j.LOG_DEBUG, 'renamed fields', {
  'impermanence.path-x': '/x', _PID: 'spoof', '9lives': 'cat', MESSAGE: 'ignored', PRIORITY: 0, SYSLOG_IDENTIFIER: 'other',
  SKIPPED: undefined, FLAG: true, COUNT: 42, CASE: 'renamed',
});
logger.log(j.LOG_INFO, 'M'.repeat(300 * 1024), { CASE: 'big-message' });
logger.log(j.LOG_INFO, 'huge field', { CASE: 'big-field', BLOB: 'b'.repeat(200 * 1024) });
report.sendUs = Number(process.hrtime.bigint() - t0) / 1000;
logger.close();
const loose = j.createLogger({ maxDatagramBytes: 1 << 20 });
loose.log(j.LOG_INFO, 'L'.repeat(500 * 1024), { CASE: 'emsgsize' });
loose.close();
// A synchronous burst, to see how much the kernel queue (net.unix.max_dgram_qlen) takes.
const burst = j.createLogger({ identifier: 'burst' });
const t1 = process.hrtime.bigint();
for (let i = 0; i < 200; i++) burst.log(j.LOG_INFO, 'burst ' + i, { CASE: 'burst' });
report.burstUs = Number(process.hrtime.bigint() - t1) / 1000;
burst.close();
report.totalUs = Number(process.hrtime.bigint() - t0) / 1000;
fs.writeFileSync(out + '/emit.json', JSON.stringify(report));
`;

/** Runs in the namespace after EMIT: waits for journald, then queries it. */
const QUERY = String.raw`
set -eu
J="journalctl -D $JOURNAL_DIR --no-pager --all -o json"
echo "$JOURNALD_STARTUP_MS" >"$OUT/startup_ms"
NODE_PATH=${REPO}/node_modules node "$OUT/emit.js" 2>"$OUT/emit.stderr"
journalctl --sync
# Wait until journald has written what the kernel accepted: 5 entries from the first logger
# (the huge-field one and the EMSGSIZE one went to stderr) and the burst minus its stderr lines.
want_burst=$(( 200 - $(grep -c 'CASE=burst' "$OUT/emit.stderr" || true) ))
polls=0
for _ in $(seq 500); do
  polls=$((polls + 1))
  n=$($J SYSLOG_IDENTIFIER=impermanenced | wc -l)
  b=$($J SYSLOG_IDENTIFIER=burst | wc -l)
  [ "$n" -ge 5 ] && [ "$b" -ge "$want_burst" ] && break
  sleep 0.01
done
$J IMPERMANENCE_PATH=/var/lib/foo >"$OUT/foo.json"
$J SYSLOG_IDENTIFIER=impermanenced >"$OUT/all.json"
$J SYSLOG_IDENTIFIER=impermanenced -p warning >"$OUT/warning.json"
$J SYSLOG_IDENTIFIER=burst >"$OUT/burst.json"
echo "$polls" >"$OUT/polls"
cp "$JOURNALD_LOG" "$OUT/journald.log"
echo "$JOURNALD_PID" >"$OUT/journald.pid"
`;

type Entry = Record<string, string | number[] | undefined>;
const parse = (file: string): Entry[] =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Entry);
/** journalctl -o json writes non-printable values as byte arrays. */
const text = (v: string | number[] | undefined): string | undefined =>
  Array.isArray(v) ? Buffer.from(v).toString('utf8') : v;

(canRunJournald ? describe : describe.skip)('a real systemd-journald', () => {
  let out: string;
  let ran: { code: number | null; stderr: string; ms: number };
  let journaldsBefore: string;
  const journaldPids = () => spawnSync('pgrep', ['-x', 'systemd-journal'], { encoding: 'utf8' }).stdout.trim();

  beforeAll(() => {
    out = tempDir();
    // The compiled module, bundled as the daemon would ship it; unix-dgram stays a real require.
    const esbuild = require('esbuild') as typeof import('esbuild');
    esbuild.buildSync({
      entryPoints: [join(REPO, 'src', 'shared', 'journal.ts')],
      bundle: true,
      platform: 'node',
      format: 'cjs',
      external: ['unix-dgram'],
      outfile: join(out, 'journal.js'),
      logLevel: 'error',
    });
    writeFileSync(join(out, 'emit.js'), EMIT);
    writeFileSync(join(out, 'query.sh'), QUERY);
    journaldsBefore = journaldPids();
    const t0 = Date.now();
    const r = spawnSync(WITH_JOURNALD, ['/bin/bash', join(out, 'query.sh')], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, OUT: out, JOURNAL_MODULE: join(out, 'journal.js') },
    });
    ran = { code: r.status, stderr: r.stderr, ms: Date.now() - t0 };
  }, 40_000);

  it('ran journald and the emitter cleanly, and left nothing behind', () => {
    expect(ran).toMatchObject({ code: 0 });
    const emit = JSON.parse(readFileSync(join(out, 'emit.json'), 'utf8')) as Record<string, unknown>;
    expect(emit.mode).toBe('journal');
    // Our journald was PID 2 of its own PID namespace and is gone with it: the host's
    // set of journald processes (if any) is what it was before.
    expect(readFileSync(join(out, 'journald.pid'), 'utf8').trim()).toMatch(/^\d+$/);
    expect(journaldPids()).toBe(journaldsBefore);
    const timings = {
      journaldStartupMs: Number(readFileSync(join(out, 'startup_ms'), 'utf8')),
      wholeRunMs: ran.ms,
      firstLoggerUs: emit.sendUs,
      burst200Us: emit.burstUs,
      journalctlPollsAfterSync: Number(readFileSync(join(out, 'polls'), 'utf8')),
    };
    console.log(`journald timings: ${JSON.stringify(timings)}`);
  });

  it('finds exactly the IMPERMANENCE_PATH=/var/lib/foo entry with its fields', () => {
    const entries = parse(join(out, 'foo.json'));
    expect(entries).toHaveLength(1);
    const e = entries[0]!;
    expect(e).toMatchObject({
      MESSAGE: 'persisted /var/lib/foo',
      PRIORITY: '6',
      SYSLOG_IDENTIFIER: 'impermanenced',
      IMPERMANENCE_PATH: '/var/lib/foo',
      IMPERMANENCE_KIND: 'ephemeral',
    });
    expect(Number(e._PID)).toBeGreaterThan(0); // trusted fields from the kernel credentials
  });

  it('round-trips a multi-line message and a multi-line field', () => {
    const e = parse(join(out, 'all.json')).find((x) => x.IMPERMANENCE_PATH === '/var/lib/multi');
    expect(e).toBeDefined();
    expect(text(e!.MESSAGE)).toBe('first line\nsecond line ✓');
    expect(text(e!.NOTE)).toBe('value\nwith newline');
    expect(e!.PRIORITY).toBe('5');
  });

  it('filters by priority: -p warning finds the warning only', () => {
    const entries = parse(join(out, 'warning.json'));
    expect(entries.map((x) => [x.MESSAGE, x.PRIORITY])).toEqual([['disk nearly full', '4']]);
  });

  it('renames invalid field names and ignores MESSAGE/PRIORITY overrides', () => {
    const e = parse(join(out, 'all.json')).find((x) => x.CASE === 'renamed');
    expect(e).toMatchObject({
      MESSAGE: 'renamed fields',
      PRIORITY: '7',
      SYSLOG_IDENTIFIER: 'impermanenced',
      IMPERMANENCE_PATH_X: '/x',
      PID: 'spoof',
      F_9LIVES: 'cat',
      FLAG: 'true',
      COUNT: '42',
    });
    expect(e!._PID).not.toBe('spoof');
    expect(e).not.toHaveProperty('SKIPPED');
  });

  it('truncates an oversized MESSAGE and says so', () => {
    const e = parse(join(out, 'all.json')).find((x) => x.CASE === 'big-message');
    expect(e).toBeDefined();
    const msg = text(e!.MESSAGE)!;
    expect(msg.endsWith('… [truncated]')).toBe(true);
    expect(msg.startsWith('MMMM')).toBe(true);
    expect(Buffer.byteLength(msg)).toBeLessThanOrEqual(128 * 1024);
    expect(e!.MESSAGE_TRUNCATED).toBe(String(300 * 1024));
  });

  it('writes entries that cannot be sent to stderr, whole and one line each', () => {
    const all = parse(join(out, 'all.json'));
    expect(all.find((x) => x.CASE === 'big-field')).toBeUndefined();
    expect(all.find((x) => x.CASE === 'emsgsize')).toBeUndefined();
    const lines = readFileSync(join(out, 'emit.stderr'), 'utf8').split('\n').filter((l) => l !== '');
    const big = lines.filter((l) => !l.includes('CASE=burst'));
    expect(big).toEqual([
      `<6>huge field CASE=big-field BLOB=${'b'.repeat(200 * 1024)}`,
      `<6>${'L'.repeat(500 * 1024)} CASE=emsgsize`,
    ]);
  });

  it('loses nothing in a synchronous burst: what the journal does not take goes to stderr', () => {
    const journal = parse(join(out, 'burst.json'));
    const stderr = readFileSync(join(out, 'emit.stderr'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('CASE=burst'));
    console.log(`burst of 200: ${journal.length} via the journal socket, ${stderr.length} via stderr`);
    const seen = new Set([
      ...journal.map((x) => String(x.MESSAGE)),
      ...stderr.map((l) => l.replace(/^<6>/, '').replace(/ CASE=burst$/, '')),
    ]);
    expect(journal.length + stderr.length).toBe(200);
    expect(seen.size).toBe(200);
  });
});
