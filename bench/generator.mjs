// Benchmark: impermanence-generator beside systemd's own systemd-fstab-generator on the
// equivalent fstab (SYSTEMD_FSTAB=file), same machine, same run, both writing into a tmpfs as
// they do at boot (/run). Prints the median wall time of each and the ratio.
//   npm run bench            (RUNS=9 ENTRIES=100,1000,10000 to change the defaults)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FSTAB_GENERATOR = ['/usr/lib/systemd/system-generators/systemd-fstab-generator', '/lib/systemd/system-generators/systemd-fstab-generator'].find(existsSync);
const GENERATOR = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', 'dist', 'impermanence-generator.js');
const RUNS = Number(process.env.RUNS ?? 7);
const SIZES = (process.env.ENTRIES ?? '100,1000,10000').split(',').map(Number);
if (!FSTAB_GENERATOR) throw new Error('systemd-fstab-generator not found: install systemd');

const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'impermanence-bench-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function time(cmd, args, env) {
  const out = join(scratch, 'out');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out);
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, [...args, out, out, out], { env: { ...process.env, ...env }, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return seconds;
}

try {
  console.log(`impermanence-generator vs systemd-fstab-generator (${RUNS} runs each, median wall time)`);
  console.log('entries  impermanence  fstab-generator  ratio (ours/theirs)');
  for (const n of SIZES) {
    const config = join(scratch, `config-${n}`);
    mkdirSync(config, { recursive: true });
    const paths = Array.from({ length: n }, (_, i) => `/srv/bench/d${String(i).padStart(5, '0')}`);
    writeFileSync(join(config, 'bench.toml'), `[persistence."/persist"]\ndirectories = [\n${paths.map((p) => `  "${p}",`).join('\n')}\n]\n`);
    const fstab = join(scratch, `fstab-${n}`);
    writeFileSync(fstab, paths.map((p) => `/persist${p} ${p} none bind 0 0\n`).join(''));
    const ours = [];
    const theirs = [];
    for (let i = 0; i < RUNS; i++) {
      // Interleaved, so that a noisy neighbour slows both alike.
      ours.push(time(process.execPath, [GENERATOR], { IMPERMANENCE_CONFIG: config }));
      theirs.push(time(FSTAB_GENERATOR, [], { SYSTEMD_FSTAB: fstab, SYSTEMD_PROC_CMDLINE: '' }));
    }
    const a = median(ours);
    const b = median(theirs);
    console.log(`${String(n).padStart(7)}  ${a.toFixed(3).padStart(10)} s  ${b.toFixed(3).padStart(13)} s  ${(a / b).toFixed(2).padStart(6)}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
