// The benchmarks' way to time a program: a tiny C helper built here with cc, which forks, execs
// and waits for it (wait4): wall time, CPU time (user + system, children included: steadier than
// wall on a busy shared machine) and peak RSS, all from the kernel. Node has no RUSAGE_CHILDREN,
// and a forked python or node would count as the child's peak its own pages copied before exec.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SOURCE = `#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  (void)argc;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  pid_t p = fork();
  if (p == 0) {
    int null = open("/dev/null", O_RDWR);
    if (getenv("MEASURE_QUIET") && null >= 0) { dup2(null, 0); dup2(null, 1); }
    execv(argv[1], argv + 1);
    _exit(127);
  }
  int st; struct rusage ru;
  if (p < 0 || wait4(p, &st, 0, &ru) < 0) return 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%ld %ld %ld %d\\n", (long)((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000),
    (long)(ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec), ru.ru_maxrss,
    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  return 0;
}
`;

/**
 * Builds the helper into `scratch` and returns measure(cmd, args, env, quiet): { wall, cpu } in
 * seconds, rss in MiB and the exit code of one run of cmd (an absolute path); quiet: its stdin
 * and stdout are /dev/null (stderr is kept for errors).
 */
export function measurer(scratch) {
  const helper = join(scratch, 'measure');
  writeFileSync(`${helper}.c`, SOURCE);
  const cc = spawnSync('cc', ['-O2', '-o', helper, `${helper}.c`], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot build the measuring helper (needs cc): ${cc.stderr}`);
  return (cmd, args, env = {}, quiet = false) => {
    const r = spawnSync(helper, [cmd, ...args], { env: { ...process.env, ...env, ...(quiet ? { MEASURE_QUIET: '1' } : {}) }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 20 });
    if (r.status !== 0) throw new Error(`${cmd} could not be measured: ${r.stderr}`);
    const [wall, cpu, rss, code] = r.stdout.trim().split('\n').pop().split(' ').map(Number);
    return { wall: wall / 1e6, cpu: cpu / 1e6, rss: rss / 1024, code, stderr: r.stderr };
  };
}
