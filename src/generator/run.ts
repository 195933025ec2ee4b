import { mkdirSync } from 'node:fs';
import { InvalidConfig, oneLine } from '../config/errors';
import { configFolders } from '../config/load';
import { readConfig } from '../config/read';
import { collect, planConfigError, planFailure, planUnits, type GeneratorOutput } from './plan';
import { sourceStatter, statOnRoot, writeOutput } from './write';

/**
 * impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd.generator(7)), callable in
 * process (main.ts is the program; tests and the fuzz bench call this). Renders everything in
 * memory, then writes it all or nothing (writeOutput). Whatever fails — an invalid config, a
 * storage path that cannot be looked up, a bug, a full or read-only output folder — the
 * generator leaves impermanence-config-error.service, which fails and says why; it exits
 * non-zero only when even that unit cannot be written. `log` gets kmsg-style lines (`<3>…`).
 */
export function runGenerator(argv: readonly string[], env: NodeJS.ProcessEnv, log: (line: string) => void): number {
  const normalDir = argv[0];
  if (!normalDir || !normalDir.startsWith('/')) {
    log('usage: impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR]\n');
    return 1;
  }
  const say = (text: string) => log(`<3>impermanence-generator: ${oneLine(text, 4096)}\n`);
  let output: GeneratorOutput = collect();
  try {
    const { dirs, required } = configFolders(env.IMPERMANENCE_CONFIG?.split(':').filter(Boolean), '/');
    const config = readConfig(dirs, '/', required);
    const out = collect();
    const problems = planUnits(config, { outputDir: normalDir, statSource: sourceStatter(), statRoot: statOnRoot, prepare: env.IMPERMANENCE_PREPARE }, out);
    for (const p of problems) say(p.message);
    output = out;
  } catch (err) {
    const failed = collect(); // nothing of a half-rendered output is kept
    if (err instanceof InvalidConfig) {
      const problems = err.problems.map((p) => p.message);
      for (const p of problems) say(p);
      planConfigError(problems, failed);
    } else {
      const problem = `internal error, please report it: ${(err as Error)?.stack ?? String(err)}`;
      say(problem);
      planFailure('impermanence: the generator failed, nothing was persisted', [problem.split('\n')[0]!], failed);
    }
    output = failed;
  }
  let why: string;
  try {
    mkdirSync(normalDir, { recursive: true }); // systemd makes it; tests may not
    if (output.files.size === 0 && output.links.size === 0) return 0;
    writeOutput(normalDir, output);
    return 0;
  } catch (err) {
    why = `cannot write the units into ${normalDir}: ${(err as Error).message}; nothing was persisted`;
    say(why);
  }
  try {
    const failed = collect();
    planFailure('impermanence: its units could not be written, nothing was persisted', [why], failed);
    writeOutput(normalDir, failed);
    return 0;
  } catch (err) {
    say(`cannot write impermanence-config-error.service either: ${(err as Error).message}`);
    return 1;
  }
}
