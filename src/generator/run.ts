import { mkdirSync } from 'node:fs';
import { InvalidConfig, oneLine } from '../config/errors';
import { configFolders } from '../config/load';
import { readConfig } from '../config/read';
import { planConfigError, planFailure, planUnits } from './plan';
import { OutputWriter, sourceStatter, statOnRoot } from './write';

/**
 * impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd.generator(7)), callable in
 * process (main.ts is the program; tests and the fuzz bench call this). The planner decides
 * everything before it renders a file, and each file is written as it is rendered (OutputWriter:
 * the output is never held whole in memory), all or nothing. Whatever fails — an invalid config,
 * a storage path that cannot be looked up, a bug, a full or read-only output folder — what was
 * written is taken back and the generator leaves impermanence-config-error.service, which fails
 * and says why; it exits non-zero only when even that unit cannot be written. `log` gets
 * kmsg-style lines (`<3>…`).
 */
export function runGenerator(argv: readonly string[], env: NodeJS.ProcessEnv, log: (line: string) => void): number {
  const normalDir = argv[0];
  if (!normalDir || !normalDir.startsWith('/')) {
    log('usage: impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR]\n');
    return 1;
  }
  const say = (text: string) => log(`<3>impermanence-generator: ${oneLine(text, 4096)}\n`);
  const out = new OutputWriter(normalDir);
  let why: string;
  try {
    mkdirSync(normalDir, { recursive: true }); // systemd makes it; tests may not
    try {
      const { dirs, required } = configFolders(env.IMPERMANENCE_CONFIG?.split(':').filter(Boolean), '/');
      const config = readConfig(dirs, '/', required);
      const problems = planUnits(config, { outputDir: normalDir, statSource: sourceStatter(), statRoot: statOnRoot, prepare: env.IMPERMANENCE_PREPARE }, out);
      for (const p of problems) say(p.message);
      return 0;
    } catch (err) {
      if (out.failed) throw err;
      out.undo(); // nothing of a half-rendered output is kept
      if (err instanceof InvalidConfig) {
        const problems = err.problems.map((p) => p.message);
        for (const p of problems) say(p);
        planConfigError(problems, out);
      } else {
        const problem = `internal error, please report it: ${(err as Error)?.stack ?? String(err)}`;
        say(problem);
        planFailure('impermanence: the generator failed, nothing was persisted', [problem.split('\n')[0]!], out);
      }
      return 0;
    }
  } catch (err) {
    out.undo();
    why = `cannot write the units into ${normalDir}: ${(err as Error).message}; nothing was persisted`;
    say(why);
  }
  const failed = new OutputWriter(normalDir);
  try {
    planFailure('impermanence: its units could not be written, nothing was persisted', [why], failed);
    return 0;
  } catch (err) {
    failed.undo();
    say(`cannot write impermanence-config-error.service either: ${(err as Error).message}`);
    return 1;
  }
}
