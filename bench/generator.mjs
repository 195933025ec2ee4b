// Benchmark: impermanence-generator beside systemd's own systemd-fstab-generator on the
// equivalent fstab (SYSTEMD_FSTAB=file) and beside `node -e 0` (Node's own start-up, the floor),
// same machine, same run, interleaved, both generators writing into a tmpfs as they do at boot
// (/run). The generator is executed as systemd executes it (its shebang line, with its V8 flags).
// Prints the median wall time of each, the ratios with their targets, and the median peak RSS.
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
const out = join(scratch, 'out');

function fresh() {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out);
}

function time(cmd, args, env) {
  fresh();
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return seconds;
}

/**
 * Peak RSS (MiB) of one run: the kernel's ru_maxrss of the child, read by a tiny C helper built
 * here with cc (Node has no RUSAGE_CHILDREN, and a forked python or node would count its own
 * pages copied before exec).
 */
const RSS_HELPER = join(scratch, 'maxrss');
const helperSource = `#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
  (void)argc;
  pid_t p = fork();
  if (p == 0) { execv(argv[1], argv + 1); _exit(127); }
  int st; struct rusage ru;
  if (p < 0 || wait4(p, &st, 0, &ru) < 0) return 1;
  printf("%ld\\n", ru.ru_maxrss);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}`;
writeFileSync(`${RSS_HELPER}.c`, helperSource);
const haveHelper = spawnSync('cc', ['-O2', '-o', RSS_HELPER, `${RSS_HELPER}.c`]).status === 0;
function peakRss(cmd, args, env) {
  if (!haveHelper) return NaN;
  fresh();
  const r = spawnSync(RSS_HELPER, [cmd, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return Number(r.stdout.trim()) / 1024;
}

try {
  console.log(`impermanence-generator vs systemd-fstab-generator and node -e 0 (${RUNS} runs each, interleaved, medians)`);
  console.log('entries  impermanence  fstab-generator  node -e 0   ours/fstab  ours/node   peak RSS ours / fstab');
  for (const n of SIZES) {
    const config = join(scratch, `config-${n}`);
    mkdirSync(config, { recursive: true });
    const paths = Array.from({ length: n }, (_, i) => `/srv/bench/d${String(i).padStart(5, '0')}`);
    writeFileSync(join(config, 'bench.toml'), `[persistence."/persist"]\ndirectories = [\n${paths.map((p) => `  "${p}",`).join('\n')}\n]\n`);
    const fstab = join(scratch, `fstab-${n}`);
    writeFileSync(fstab, paths.map((p) => `/persist${p} ${p} none bind 0 0\n`).join(''));
    const ours = [GENERATOR, [out, out, out], { IMPERMANENCE_CONFIG: config }];
    const theirs = [FSTAB_GENERATOR, [out, out, out], { SYSTEMD_FSTAB: fstab, SYSTEMD_PROC_CMDLINE: '' }];
    const a = [];
    const b = [];
    const floor = [];
    for (let i = 0; i < RUNS; i++) {
      // Interleaved, so that a noisy neighbour slows all alike.
      a.push(time(...ours));
      b.push(time(...theirs));
      floor.push(time(process.execPath, ['-e', '0'], {}));
    }
    const rssA = median([0, 1, 2].map(() => peakRss(...ours)));
    const rssB = median([0, 1, 2].map(() => peakRss(...theirs)));
    const [ma, mb, mf] = [median(a), median(b), median(floor)];
    console.log(
      `${String(n).padStart(7)}  ${ma.toFixed(3).padStart(10)} s  ${mb.toFixed(3).padStart(13)} s  ${mf.toFixed(3).padStart(7)} s  ${(ma / mb).toFixed(2).padStart(9)}x  ${(ma / mf).toFixed(2).padStart(8)}x   ${rssA.toFixed(1).padStart(5)} / ${rssB.toFixed(1)} MiB`,
    );
  }
  console.log('targets: at 100 entries ours/node ≤ 1.15x; at 10,000 entries ours/fstab ≤ 1.00x and peak RSS ≤ 60 MiB');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
