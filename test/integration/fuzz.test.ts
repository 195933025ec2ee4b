import { fuzzConfigs } from '../fuzz/config-fuzz';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PREPARE, tempDir } from '../helpers';

/**
 * 1,000 random config files (valid and broken) through `check` and the generator, in process,
 * with systemd-analyze verify on every unit written (test/fuzz/config-fuzz.ts). FUZZ_CASES and
 * FUZZ_SEED change the run; `npm run bench:fuzz` runs 10,000.
 */
describe('config fuzz', () => {
  it('never crashes, never leaves partial output, check and the generator agree, every unit verifies', async () => {
    const cases = Number(process.env.FUZZ_CASES ?? 1000);
    const seed = Number(process.env.FUZZ_SEED ?? 1);
    // On a tmpfs when there is one, as /run is at boot: the cases are thousands of small files.
    const base = existsSync('/dev/shm') ? mkdtempSync(join('/dev/shm', 'impermanence-fuzz-')) : tempDir('impermanence-fuzz-');
    let f;
    try {
      f = await fuzzConfigs({ cases, seed, base, prepare: PREPARE });
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
    console.log(
      `config fuzz (seed ${seed}): ${f.cases} cases (${f.valid} valid, ${f.invalid} invalid, ${f.notActivated} with entries not activated) in ${f.seconds.toFixed(1)} s; ` +
        `crashes ${f.crashes}, partial outputs ${f.partialOutputs}, check/generator disagreements ${f.disagreements}, problem lines naming no file ${f.badLines}; ` +
        `${f.unitsVerified} units verified in ${f.verifyRuns} systemd-analyze runs, ${f.verifyFailures} failing; seconds by phase ${JSON.stringify(Object.fromEntries(Object.entries(f.phases).map(([k, v]) => [k, Number(v.toFixed(1))])))}` +
        (f.examples.length ? `\n${f.examples.join('\n')}` : ''),
    );
    expect(f.cases).toBe(cases);
    expect(f.examples).toEqual([]);
    expect({ crashes: f.crashes, partial: f.partialOutputs, disagreements: f.disagreements, badLines: f.badLines, verifyFailures: f.verifyFailures }).toEqual({
      crashes: 0, partial: 0, disagreements: 0, badLines: 0, verifyFailures: 0,
    });
    // The mix is worth something: plenty of each outcome.
    expect(f.valid).toBeGreaterThan(cases / 20);
    expect(f.invalid).toBeGreaterThan(cases / 10);
    expect(f.unitsVerified).toBeGreaterThan(cases);
  }, 300_000);
});
