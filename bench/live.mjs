// Benchmark: live drift. The real daemon on a private bus over a sandbox root on tmpfs; a client
// subscribed to DriftAppeared. First the daemon idle: its RSS, and its wake-ups over IDLE_S (60)
// seconds (context switches of all its threads, /proc/PID/task/*/status: no timer may wake it).
// Then the latency from a write (a new folder with a file, after a quiet spell longer than the
// daemon's 100 ms coalescing window) to the signal naming it, p50/p99 over 100 writes, with a CPU
// hog (a busy shell loop per core) running beside it (HOG=0: without); then a burst of 100,000
// files in one folder: the daemon's peak RSS, and whether the drift it reports counts every file
// (nothing lost).
// Then the same again with the root on a btrfs subvolume (mounted with subvol=, as seeds 001 and
// 002 lay it out). Each run is in a private mount namespace (it re-executes itself under
// unshare -m), the root on a filesystem of its own: the CPU hogs are the load; other processes'
// writes (fanotify marks the whole filesystem) and mounts (the mount table is watched) are not.
// The daemon is started as systemd starts it: the file itself (its first line gives node its flags).
//   npm run bench:live   (root; needs dbus-daemon; btrfs-progs for the btrfs row, BTRFS=0 skips it)
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sessionBus, Message, MessageType } from '@jellybrick/dbus-next';
import { REPO, inMountNamespace, scratchDir, sleep, startBus, startDaemon, writeSandbox } from './sandbox.mjs';

const WRITES = Number(process.env.WRITES ?? 100);
const BURST = Number(process.env.BURST ?? 100_000);
inMountNamespace(import.meta.url, 'BENCH_LIVE_NS');
const scratch = scratchDir('live');
const pids = [];
// '' (tmpfs) or 'btrfs-subvol' (set for the re-executed run, inside its own mount namespace).
const FS = process.env.BENCH_LIVE_FS ?? '';
const label = FS ? ` [root on a btrfs subvolume]` : ' [root on tmpfs]';
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

try {
  const root = join(scratch, 'root');
  if (FS === 'btrfs-subvol') {
    // The image on a disk-backed folder, like the ext4 loop images of the tests; mounted only in this namespace.
    const imgDir = mkdtempSync('/tmp/impermanence-bench-live-btrfs-');
    const img = join(imgDir, 'img');
    mkdirSync(root);
    const mk = spawnSync('sh', ['-c', `set -e; truncate -s 2G "$1"; mkfs.btrfs -q -f "$1"; mount -o loop "$1" "$2"; btrfs -q subvolume create "$2/@root"; umount "$2"; mount -o loop,subvol=@root "$1" "$2"; rm "$1"`, 'sh', img, root], { encoding: 'utf8' });
    rmSync(imgDir, { recursive: true, force: true }); // the loop device keeps the image until the namespace goes
    if (mk.status !== 0) throw new Error(`btrfs setup failed: ${mk.stderr}`);
  } else {
    mkdirSync(root);
    const mk = spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', root], { encoding: 'utf8' });
    if (mk.status !== 0) throw new Error(`tmpfs setup failed: ${mk.stderr}`);
  }
  writeSandbox(root, '[persistence."/persistent"]\ndirectories = ["/var/log"]\n');
  mkdirSync(join(root, 'var/log'), { recursive: true });
  const { child: bus, address } = await startBus(scratch);
  pids.push(bus);

  // Idle: a daemon over its own tmpfs, mounted in a mount namespace of its own, so that no other
  // process's writes (fanotify marks the whole filesystem) and no other mount (the mount table
  // is watched) reach it: what wakes it then is its own timers. Started as systemd starts it (the
  // file itself: its first line gives node its flags). Its threads' context switches
  // (/proc/PID/task/*/status) are counted over IDLE_S seconds after its first look.
  if (!FS) {
    const idleRoot = join(scratch, 'idle');
    mkdirSync(idleRoot);
    const d = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs "$1" && cp -a "$2/." "$1" && exec "$3" --root "$1" --bus "$4"', 'sh',
      idleRoot, root, join(REPO, 'dist/impermanenced.js'), address], { stdio: ['ignore', 'ignore', 'pipe'] });
    pids.push(d);
    let idleLog = '';
    d.stderr.on('data', (x) => (idleLog += x));
    for (let i = 0; i < 400 && !idleLog.includes('Serving'); i++) await sleep(25);
    if (!idleLog.includes('Watching')) throw new Error(`the idle daemon is not watching live:\n${idleLog}`);
    await sleep(3000); // its first look is done
    const IDLE_S = Number(process.env.IDLE_S ?? 60);
    const switches = () => {
      let n = 0;
      for (const t of readdirSync(`/proc/${d.pid}/task`)) {
        const st = readFileSync(`/proc/${d.pid}/task/${t}/status`, 'utf8');
        n += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)[1]) + Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)[1]);
      }
      return n;
    };
    const before = switches();
    await sleep(IDLE_S * 1000);
    const wakeups = switches() - before;
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.pid}/status`, 'utf8'))[1]) / 1024;
    console.log(`daemon idle: ${wakeups} wake-ups in ${IDLE_S} s (target 0); RSS ${rss.toFixed(1)} MiB (target ≤ 45 MiB)`);
    d.kill('SIGTERM');
    await new Promise((r) => d.once('exit', r));
  }

  const { child: daemon, log } = startDaemon(root, address);
  pids.push(daemon);
  const client = sessionBus({ busAddress: address });
  await new Promise((r) => client.once('connect', r));
  for (let i = 0; i < 200 && !log().includes('for drift as it happens'); i++) await sleep(25);
  if (!log().includes('for drift as it happens')) throw new Error(`the daemon is not watching live:\n${log()}`);
  await client.call(new Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's',
    body: ["type='signal',interface='org.impermanence.Manager',member='DriftAppeared'"] }));
  const hogs = process.env.HOG === '0' ? [] : Array.from({ length: 2 }, () => spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
  pids.push(...hogs);
  const seen = new Map(); // path → time
  let lastBurstCount = 0;
  client.on('message', (m) => {
    if (m.type !== MessageType.SIGNAL || m.member !== 'DriftAppeared') return;
    const now = performance.now();
    for (const [, path, , files] of m.body[0]) {
      if (!seen.has(path)) seen.set(path, now);
      if (path === '/srv/burst') lastBurstCount = files;
    }
  });

  const latencies = [];
  for (let i = 0; i < WRITES; i++) {
    await sleep(120); // a quiet spell: writes closer together are coalesced (one signal per 100 ms)
    const dir = join(root, 'srv', `app${i}`);
    mkdirSync(dir, { recursive: true });
    const t = performance.now();
    writeFileSync(join(dir, 'state'), 'x');
    for (let k = 0; k < 400 && !seen.has(`/srv/app${i}`); k++) await sleep(2);
    if (!seen.has(`/srv/app${i}`)) throw new Error(`no DriftAppeared for /srv/app${i}`);
    latencies.push(seen.get(`/srv/app${i}`) - t);
  }
  console.log(`live drift${label}${hogs.length ? `, beside ${hogs.length} CPU hogs` : ''}: write → DriftAppeared over ${WRITES} writes: p50 ${pct(latencies, 50).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms (target p99 ≤ 30 ms)`);
  for (const h of hogs) h.kill('SIGTERM');

  // The burst: one process writes BURST files as fast as it can, while we sample the daemon's RSS.
  let peak = 0;
  const sample = setInterval(() => {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'));
    if (m) peak = Math.max(peak, Number(m[1]));
  }, 20);
  const t0 = performance.now();
  const writer = spawnSync('sh', ['-c', `mkdir -p "$1" && cd "$1" && seq 1 ${BURST} | xargs touch`, 'sh', join(root, 'srv/burst')]);
  if (writer.status !== 0) throw new Error('burst writer failed');
  const written = performance.now() - t0;
  // The last DriftAppeared for /srv/burst is the one after the burst settles; GetDrift tells the final count.
  let final = 0;
  for (let k = 0; k < 300; k++) {
    const reply = await client.call(new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member: 'GetDrift', signature: 'a{sv}', body: [{}] }));
    final = (reply.body[0].find((r) => r[1] === '/srv/burst') ?? [])[3] ?? 0;
    if (final === BURST) break;
    await sleep(50);
  }
  clearInterval(sample);
  console.log(`burst${label}: ${BURST.toLocaleString('en')} files written in ${(written / 1000).toFixed(1)} s; drift reports ${final.toLocaleString('en')} of them (${final === BURST ? 'none lost' : 'LOST ' + (BURST - final)}); daemon peak RSS ${(peak / 1024).toFixed(0)} MiB (target ≤ 100 MiB, none lost)`);
  client.disconnect();
} finally {
  for (const p of pids.reverse()) p.kill('SIGTERM');
  await sleep(200);
  spawnSync('umount', [join(scratch, 'root')]);
  rmSync(scratch, { recursive: true, force: true });
}

if (!FS && process.env.BTRFS !== '0') {
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', process.execPath, new URL(import.meta.url).pathname], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_LIVE_FS: 'btrfs-subvol' },
  });
  if (r.status !== 0) process.exitCode = r.status ?? 1;
}
