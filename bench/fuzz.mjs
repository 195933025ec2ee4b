// The config fuzzer at scale (the unit test runs 1,000 cases): random valid and broken config
// files through `impermanencectl check` and the generator, in process, with systemd-analyze
// verify on every unit written. Prints the figures; exits 1 on any crash, partial output,
// disagreement or unit that does not verify.
//   npm run bench:fuzz            (FUZZ_CASES=10000 FUZZ_SEED=1 by default)
import { build } from 'esbuild';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname;
const cases = Number(process.env.FUZZ_CASES ?? 10000);
const seed = Number(process.env.FUZZ_SEED ?? 1);
const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'impermanence-fuzz-'));
try {
  // The fuzzer is TypeScript shared with the unit test: bundle it for Node first.
  const bundle = join(scratch, 'fuzz.cjs');
  await build({ entryPoints: [join(here, '..', 'test', 'fuzz', 'config-fuzz.ts')], outfile: bundle, bundle: true, platform: 'node', target: 'node20', format: 'cjs', logLevel: 'warning', external: ['unix-dgram', '@jellybrick/dbus-next'] });
  const { fuzzConfigs } = createRequire(import.meta.url)(bundle);
  const f = await fuzzConfigs({ cases, seed, base: join(scratch, 'cases'), prepare: join(here, '..', 'dist', 'impermanence-prepare.js') });
  console.log(`config fuzz, seed ${seed}: ${f.cases} cases in ${f.seconds.toFixed(1)} s (${(f.seconds * 1000 / f.cases).toFixed(1)} ms a case)`);
  console.log(`  outcomes: ${f.valid} valid, ${f.invalid} invalid, ${f.notActivated} with entries not activated`);
  console.log(`  crashes ${f.crashes}, partial outputs ${f.partialOutputs}, check/generator disagreements ${f.disagreements}, problem lines naming no file ${f.badLines}`);
  console.log(`  systemd-analyze verify: ${f.unitsVerified} units in ${f.verifyRuns} runs, ${f.verifyFailures} failing`);
  console.log(`  seconds by phase: ${JSON.stringify(Object.fromEntries(Object.entries(f.phases).map(([k, v]) => [k, Number(v.toFixed(1))])))}`);
  for (const e of f.examples) console.log(`  ${e}`);
  process.exitCode = f.examples.length ? 1 : 0;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
