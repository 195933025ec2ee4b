// Benchmark: impermanence-generator beside systemd's own systemd-fstab-generator on the
// equivalent fstab (SYSTEMD_FSTAB=file) and beside `node -e 0` (Node's own start-up, the floor),
// same machine, same run, interleaved, both generators writing into a tmpfs as they do at boot
// (/run). The generator is executed as systemd executes it (its shebang line, with its V8 flags).
// Prints the median wall time, CPU time and peak RSS of each, and the ratios with their targets.
//   npm run bench            (RUNS=9 ENTRIES=100,1000,10000 to change the defaults; GENERATOR=path
//                            to measure another build)
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { measurer } from './measure.mjs';

const FSTAB_GENERATOR = ['/usr/lib/systemd/system-generators/systemd-fstab-generator', '/lib/systemd/system-generators/systemd-fstab-generator'].find(existsSync);
const GENERATOR = process.env.GENERATOR ?? join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'dist', 'impermanence-generator.js');
const RUNS = Number(process.env.RUNS ?? 7);
const SIZES = (process.env.ENTRIES ?? '100,1000,10000').split(',').map(Number);
if (!FSTAB_GENERATOR) throw new Error('systemd-fstab-generator not found: install systemd');

const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'impermanence-bench-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = join(scratch, 'out');

const measure = measurer(scratch);

/** { wall, cpu } in seconds and rss in MiB of one run of cmd (an absolute path) with args. */
function run(cmd, args, env) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out);
  const r = measure(cmd, args, env);
  if (r.code !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return r;
}

try {
  console.log(`impermanence-generator vs systemd-fstab-generator and node -e 0 (${RUNS} runs each, interleaved, medians)`);
  console.log('entries  wall: ours   fstab-gen  node -e 0  ours/fstab ours/node | CPU: ours  fstab-gen  node -e 0  ours/fstab ours/node | peak RSS: ours  fstab-gen');
  for (const n of SIZES) {
    const config = join(scratch, `config-${n}`);
    mkdirSync(config, { recursive: true });
    const paths = Array.from({ length: n }, (_, i) => `/srv/bench/d${String(i).padStart(5, '0')}`);
    writeFileSync(join(config, 'bench.toml'), `[persistence."/persist"]\ndirectories = [\n${paths.map((p) => `  "${p}",`).join('\n')}\n]\n`);
    const fstab = join(scratch, `fstab-${n}`);
    writeFileSync(fstab, paths.map((p) => `/persist${p} ${p} none bind 0 0\n`).join(''));
    const ours = [];
    const theirs = [];
    const floor = [];
    for (let i = 0; i < RUNS; i++) {
      // Interleaved, so that a noisy neighbour slows all alike.
      ours.push(run(GENERATOR, [out, out, out], { IMPERMANENCE_CONFIG: config }));
      theirs.push(run(FSTAB_GENERATOR, [out, out, out], { SYSTEMD_FSTAB: fstab, SYSTEMD_PROC_CMDLINE: '' }));
      floor.push(run(process.execPath, ['-e', '0'], {}));
    }
    const m = (runs, key) => median(runs.map((r) => r[key]));
    const cols = (key) => {
      const [a, b, f] = [m(ours, key), m(theirs, key), m(floor, key)];
      return `${a.toFixed(3).padStart(7)} s ${b.toFixed(3).padStart(7)} s ${f.toFixed(3).padStart(7)} s  ${(a / b).toFixed(2).padStart(7)}x ${(a / f).toFixed(2).padStart(7)}x`;
    };
    console.log(`${String(n).padStart(7)}  ${cols('wall')}  |  ${cols('cpu')}  |  ${m(ours, 'rss').toFixed(1).padStart(5)} MiB ${m(theirs, 'rss').toFixed(1).padStart(5)} MiB`);
  }
  console.log('targets: at 100 entries ours/node ≤ 1.15x; at 10,000 entries ours/fstab ≤ 1.00x and peak RSS ≤ 60 MiB');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
