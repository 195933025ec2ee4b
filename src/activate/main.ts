import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { escapePath } from '../config/unit-name';
import type { PreparePlan } from '../generator/plan';
import { adoptAll, MOUNT_EARLY_HINT, recordShadowed, storageProblem } from './prepare';

/**
 * impermanence-prepare PLANS-DIR STORAGE: run by impermanence-prepare@<storage>.service at boot,
 * once the storage is mounted and before any bind mount from it (which require it). Exits 1,
 * so that nothing is mounted from this storage root, when the storage is not a mounted
 * filesystem of its own or something could not be adopted; what it says shows in
 * `systemctl status`.
 */
function main(argv: string[]): number {
  const [plansDir, storage] = argv;
  if (argv.length !== 2 || !plansDir || !storage?.startsWith('/')) {
    process.stderr.write('usage: impermanence-prepare PLANS-DIR STORAGE\n');
    return 2;
  }
  const say = (level: number, text: string) => process.stderr.write(`<${level}>${text}\n`);
  const name = escapePath(storage);
  let plan: PreparePlan;
  try {
    plan = JSON.parse(readFileSync(`${plansDir}/${name}.json`, 'utf8')) as PreparePlan;
  } catch (err) {
    say(3, `impermanence: cannot read the plan for ${storage}: ${(err as Error).message}`);
    return 1;
  }
  const problem = storageProblem(storage);
  if (problem) {
    say(3, `impermanence: ${problem}; ${MOUNT_EARLY_HINT}`);
    return 1;
  }
  // Parents, sources and mount points, with their declared owner and mode where created. A
  // rule that fails fails its own mount later; the others go on.
  const tmpfiles = spawnSync('systemd-tmpfiles', ['--create', plan.tmpfiles], { stdio: 'inherit' });
  if (tmpfiles.status !== 0) say(4, `impermanence: systemd-tmpfiles --create ${plan.tmpfiles} exited ${tmpfiles.status ?? tmpfiles.signal}`);
  const result = adoptAll(plan);
  for (const path of result.adopted) say(5, `impermanence: adopted ${path} into ${storage}: it had content on the root and none in storage`);
  for (const s of result.shadowed) {
    say(4, `impermanence: ${s.path}: ${s.files} files on the root are hidden under the mount of ${s.source}, which does not hold them`);
  }
  for (const p of result.problems) say(3, `impermanence: ${p}`);
  try {
    recordShadowed(name, result.shadowed);
  } catch (err) {
    say(4, `impermanence: cannot record shadowed content: ${(err as Error).message}`);
  }
  if (result.problems.length) {
    say(3, `impermanence: nothing is mounted from ${storage}, so that what is on the root is not hidden; fix the above and restart this unit`);
    return 1;
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
