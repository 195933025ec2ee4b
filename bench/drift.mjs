// Benchmark: a full drift scan (impermanencectl diff --offline) on a generated tree, beside the
// method people use today, `rsync -amvxx --dry-run --no-links ROOT/ STORAGE/`, and beside
// `find ROOT -xdev` and `find ROOT -xdev -printf '%s %C@ %p'` (the same walk and a stat per file,
// as ours does), in the same run, on a tmpfs. Prints median wall times and ratios with the targets.
//   npm run bench:drift         (FILES=1000000 RUNS=3 by default)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILES = Number(process.env.FILES ?? 1_000_000);
const RUNS = Number(process.env.RUNS ?? 3);
const CTL = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'dist', 'impermanencectl.js');
const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'impermanence-bench-drift-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function time(cmd, args) {
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 30 });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0 && !(cmd === process.execPath && r.status === 3)) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return seconds;
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
  const hasRsync = spawnSync('rsync', ['--version']).status === 0;
  const ours = [];
  const rsync = [];
  const find = [];
  const findStat = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(time(process.execPath, [CTL, 'diff', '--root', root, '--config', config, '--since', 'all', '--json']));
    if (hasRsync) rsync.push(time('rsync', ['-amvxx', '--dry-run', '--no-links', `${root}/`, `${rsyncTarget}/`]));
    find.push(time('find', [root, '-xdev']));
    findStat.push(time('find', [root, '-xdev', '-printf', '%s %C@ %p\n']));
  }
  const a = median(ours);
  const f = median(find);
  console.log(`full drift scan, ${RUNS} runs each, median wall time`);
  console.log(`  impermanencectl diff  ${a.toFixed(2)} s`);
  if (hasRsync) {
    const r = median(rsync);
    console.log(`  rsync --dry-run       ${r.toFixed(2)} s   rsync/ours = ${(r / a).toFixed(2)}× (target ≥ 2.5×)`);
  } else console.log('  rsync                 not installed (apt-get install rsync)');
  console.log(`  find -xdev            ${f.toFixed(2)} s   ours/find = ${(a / f).toFixed(2)}× (no stat per file: for scale)`);
  const fs = median(findStat);
  console.log(`  find -xdev -printf '%s %C@ %p'  ${fs.toFixed(2)} s   ours/find-printf = ${(a / fs).toFixed(2)}× (target ≤ 1.0×)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
