// Benchmark: a full drift scan (impermanencectl diff --offline) on a generated tree, beside the
// method people use today, `rsync -amvxx --dry-run --no-links ROOT/ STORAGE/`, and beside
// `find ROOT -xdev` and `find ROOT -xdev -printf '%s %C@ %p'` (the same walk and a stat per file,
// as ours does), in the same run, on a tmpfs. Prints median wall times and ratios with the targets.
//   npm run bench:drift         (FILES=1000000 RUNS=3 by default; BASELINE=path/to/impermanencectl.js
//                               adds another build, with its impermanence-walk beside it, to the same run)
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { measurer } from './measure.mjs';

const FILES = Number(process.env.FILES ?? 1_000_000);
const RUNS = Number(process.env.RUNS ?? 3);
const CTL = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'dist', 'impermanencectl.js');
const BASELINE = process.env.BASELINE;
const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'impermanence-bench-drift-'));
/** The absolute path of a program on PATH (the measuring helper execs it), or undefined. */
const which = (name) => (process.env.PATH ?? '/usr/bin:/bin').split(':').map((d) => join(d, name)).find((p) => p.startsWith('/') && existsSync(p));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const measure = measurer(scratch);
/** { wall, cpu } in seconds of one run (children's CPU included: the walker's threads). */
function time(cmd, args) {
  const r = measure(cmd, args, {}, true);
  if (r.code !== 0 && !(cmd === process.execPath && r.code === 3)) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r;
}

try {
  const root = join(scratch, 'root');
  const storage = join(root, 'persistent');
  const config = join(scratch, 'config');
  mkdirSync(storage, { recursive: true });
  mkdirSync(config);
  writeFileSync(join(config, 'bench.toml'), '[persistence."/persistent"]\ndirectories = ["/var/lib/kept"]\n');
  // 100 × 100 folders of FILES / 10,000 small files each: what a few busy days leave on a root.
  const perDir = Math.max(1, Math.round(FILES / 10_000));
  const made = Date.now();
  let n = 0;
  for (let a = 0; a < 100 && n < FILES; a++) {
    for (let b = 0; b < 100 && n < FILES; b++) {
      const dir = join(root, `srv${a}`, `d${b}`);
      mkdirSync(dir, { recursive: true });
      for (let f = 0; f < perDir && n < FILES; f++, n++) writeFileSync(join(dir, `f${f}`), 'x');
    }
  }
  console.log(`tree: ${n.toLocaleString('en')} files in ${((Date.now() - made) / 1000).toFixed(1)} s (tmpfs)`);
  const rsyncTarget = join(scratch, 'storage-for-rsync');
  mkdirSync(rsyncTarget);
  const hasRsync = which('rsync') !== undefined;
  const load = loadavg()[0];
  const ours = [];
  const before = [];
  const rsync = [];
  const find = [];
  const findStat = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(time(process.execPath, [CTL, 'diff', '--root', root, '--config', config, '--since', 'all', '--json']));
    if (BASELINE) before.push(time(process.execPath, [BASELINE, 'diff', '--root', root, '--config', config, '--since', 'all', '--json']));
    if (hasRsync) rsync.push(time(which('rsync'), ['-amvxx', '--dry-run', '--no-links', `${root}/`, `${rsyncTarget}/`]));
    find.push(time(which('find'), [root, '-xdev']));
    findStat.push(time(which('find'), [root, '-xdev', '-printf', '%s %C@ %p\n']));
  }
  const m = (runs) => ({ wall: median(runs.map((r) => r.wall)), cpu: median(runs.map((r) => r.cpu)) });
  const a = m(ours);
  const row = (name, runs, ratio) => {
    const x = m(runs);
    const r = ratio(x);
    console.log(`  ${name.padEnd(32)} ${x.wall.toFixed(2).padStart(6)} s ${x.cpu.toFixed(2).padStart(6)} s   ${r}`);
  };
  console.log(`full drift scan of ${n.toLocaleString('en')} files, ${RUNS} runs each, interleaved, medians (load average ${load.toFixed(1)} before, ${loadavg()[0].toFixed(1)} after)`);
  console.log(`  ${''.padEnd(32)}   wall    CPU`);
  row('impermanencectl diff', ours, () => '');
  if (BASELINE) row('baseline build', before, (x) => `baseline/ours = ${(x.wall / a.wall).toFixed(2)}× wall, ${(x.cpu / a.cpu).toFixed(2)}× CPU (${BASELINE})`);
  if (hasRsync) row('rsync --dry-run', rsync, (x) => `rsync/ours = ${(x.wall / a.wall).toFixed(2)}× wall (target ≥ 2.5×), ${(x.cpu / a.cpu).toFixed(2)}× CPU`);
  else console.log('  rsync                 not installed (apt-get install rsync)');
  row('find -xdev', find, (x) => `ours/find = ${(a.wall / x.wall).toFixed(2)}× wall, ${(a.cpu / x.cpu).toFixed(2)}× CPU (no stat per file: for scale)`);
  row("find -xdev -printf '%s %C@ %p'", findStat, (x) => `ours/find-printf = ${(a.wall / x.wall).toFixed(2)}× wall (target ≤ 1.0×), ${(a.cpu / x.cpu).toFixed(2)}× CPU`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
