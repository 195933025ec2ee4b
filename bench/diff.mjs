// Benchmark: `impermanencectl diff` through the daemon on a big root, answered from the live watch
// versus a full walk (--rescan). The real daemon on a private bus, its root a tmpfs of FILES
// (1,000,000) files written since boot, in a private mount namespace (the run re-executes itself
// under unshare -m: nothing is mounted on the host). After the daemon's first look:
//   - Scan {} right after a write (a new folder with a file): the live answer, barrier included,
//     RUNS (21) times; the write must be in the answer;
//   - GetDrift {} (no barrier): what the barrier adds;
//   - Scan {rescan: true}: the full walk, RESCANS (3) times;
//   - the CLI end to end (impermanencectl diff, default and --rescan), beside `node -e 0`, the floor
//     of any Node program's start-up.
// Prints medians with the target: the live answer ≤ 50 ms on 1,000,000 files.
//   npm run bench:diff      (root; needs dbus-daemon; FILES= to scale)
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Message, MessageType, sessionBus, Variant } from '@jellybrick/dbus-next';
import { inMountNamespace, REPO, scratchDir, sleep, startBus, startDaemon, writeSandbox } from './sandbox.mjs';

const FILES = Number(process.env.FILES ?? 1_000_000);
const RUNS = Number(process.env.RUNS ?? 21);
const RESCANS = Number(process.env.RESCANS ?? 3);
const TARGET_MS = 50;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${x.toFixed(1)} ms`;

inMountNamespace(import.meta.url, 'BENCH_DIFF_NS');

const scratch = scratchDir('diff');
const pids = [];
try {
  const root = join(scratch, 'root');
  mkdirSync(root);
  // Its own tmpfs: fanotify marks the whole filesystem, so no other process's writes reach the daemon.
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=4g,nr_inodes=${FILES + 100_000}`, 'impermanence-bench-diff', root], { encoding: 'utf8' });
  if (m.status !== 0) throw new Error(`mount: ${m.stderr}`);
  writeSandbox(root, '[persistence."/persistent"]\ndirectories = ["/var/log"]\n');
  mkdirSync(join(root, 'var/log'), { recursive: true });

  // 100 × 100 folders of FILES / 10,000 empty files each (empty: no page of memory per file).
  const made = Date.now();
  const perDir = Math.max(1, Math.round(FILES / 10_000));
  let n = 0;
  for (let a = 0; a < 100 && n < FILES; a++) {
    for (let b = 0; b < 100 && n < FILES; b++) {
      const dir = join(root, 'srv', `a${a}`, `b${b}`);
      mkdirSync(dir, { recursive: true });
      for (let f = 0; f < perDir && n < FILES; f++, n++) closeSync(openSync(join(dir, `f${f}`), 'w'));
    }
  }
  console.log(`tree: ${n.toLocaleString('en')} files in ${((Date.now() - made) / 1000).toFixed(1)} s (tmpfs, private mount namespace)`);

  const { child: bus, address } = await startBus(scratch);
  pids.push(bus);

  const { child: daemon, log } = startDaemon(root, address);
  pids.push(daemon);
  const walks = () => (log().match(/Full drift scan: \d+ files walked/g) ?? []).length;
  const firstLook = Date.now();
  while (walks() < 1) {
    if (daemon.exitCode !== null) throw new Error(`impermanenced exited ${daemon.exitCode}:\n${log()}`);
    if (Date.now() - firstLook > 600_000) throw new Error(`no first look in 10 min:\n${log()}`);
    await sleep(50);
  }
  if (!log().includes('Watching')) throw new Error(`the daemon is not watching live:\n${log()}`);
  console.log(`daemon's first look (a full walk): ${((Date.now() - firstLook) / 1000).toFixed(1)} s`);

  const client = sessionBus({ busAddress: address });
  const call = async (member, options) => {
    const reply = await client.call(new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member, signature: 'a{sv}', body: [options] }));
    if (reply.type === MessageType.ERROR) throw new Error(`${member}: ${reply.errorName}: ${reply.body[0]}`);
    return reply.body[0];
  };
  const timed = async (member, options) => {
    const t = performance.now();
    const rows = await call(member, options);
    return { rows, ms: performance.now() - t };
  };

  await call('GetDrift', {});
  const walksBefore = walks();
  const live = [];
  const plain = [];
  for (let i = 0; i < RUNS; i++) {
    mkdirSync(join(root, `var/lib/bench-${i}`), { recursive: true });
    writeFileSync(join(root, `var/lib/bench-${i}/state`), 'x');
    const { rows, ms: t } = await timed('Scan', {});
    if (!rows.some((r) => r[1] === `/var/lib/bench-${i}`)) throw new Error(`the write right before Scan is not in its answer (run ${i})`);
    live.push(t);
    await sleep(150); // past the watcher's 100 ms window: each run starts quiet
    plain.push((await timed('GetDrift', {})).ms);
  }
  if (walks() !== walksBefore) throw new Error(`Scan walked the root while the live watch ran:\n${log()}`);

  const rescan = [];
  for (let i = 0; i < RESCANS; i++) rescan.push((await timed('Scan', { rescan: new Variant('b', true) })).ms);
  if (walks() !== walksBefore + RESCANS) throw new Error(`Scan {rescan: true} did not walk each time (${walks() - walksBefore} walks for ${RESCANS})`);

  client.disconnect();

  const wall = (args) => {
    const t = performance.now();
    const r = spawnSync(args[0], args.slice(1), { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: address }, encoding: 'utf8' });
    if (r.status !== 0 && r.status !== 3) throw new Error(`${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    return performance.now() - t;
  };
  const ctl = [process.execPath, join(REPO, 'dist/impermanencectl.js'), 'diff', '-q'];
  const cliLive = [];
  const nodeFloor = [];
  const cliRescan = [];
  for (let i = 0; i < 7; i++) {
    nodeFloor.push(wall([process.execPath, '-e', '0']));
    cliLive.push(wall(ctl));
  }
  for (let i = 0; i < RESCANS; i++) cliRescan.push(wall([...ctl, '--rescan']));

  const l = median(live);
  const r = median(rescan);
  console.log(`diff through the daemon on ${n.toLocaleString('en')} files, medians (${RUNS} live runs, each after a write; ${RESCANS} walks)`);
  console.log(`  Scan {} (live, barrier included):  ${ms(l)}   target ≤ ${TARGET_MS} ms: ${l <= TARGET_MS ? 'met' : 'NOT met'}`);
  console.log(`  GetDrift {} (no barrier):          ${ms(median(plain))}   (the barrier adds ≈ ${ms(Math.max(0, l - median(plain)))})`);
  console.log(`  Scan {rescan: true} (a full walk): ${ms(r)}   (${(r / l).toFixed(0)}× the live answer)`);
  console.log(`  impermanencectl diff:              ${ms(median(cliLive))}   (node -e 0: ${ms(median(nodeFloor))}, the start-up floor of any Node program)`);
  console.log(`  impermanencectl diff --rescan:     ${ms(median(cliRescan))}`);
} finally {
  for (const p of pids.reverse()) p.kill('SIGTERM');
  await sleep(200);
  spawnSync('umount', [join(scratch, 'root')]);
  rmSync(scratch, { recursive: true, force: true });
}
