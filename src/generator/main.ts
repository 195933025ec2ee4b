import { InvalidConfig } from '../config/errors';
import { configFolders } from '../config/load';
import { readConfig } from '../config/read';
import { planConfigError, planUnits } from './plan';
import { folderSink, sourceStatter, statOnRoot } from './write';

/**
 * impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd.generator(7)).
 * Runs at every boot and daemon-reload, before anything is mounted but / (and /usr, and what
 * the initrd mounted, such as the storage). It talks to no other process and writes only into
 * NORMAL-DIR. IMPERMANENCE_CONFIG=DIR[:DIR…] replaces the config folders (as SYSTEMD_FSTAB does
 * for systemd-fstab-generator), for tests and benchmarks; IMPERMANENCE_PREPARE names the
 * impermanence-prepare program the units run (tests point it at the build).
 */
function main(argv: string[]): number {
  const normalDir = argv[0];
  if (!normalDir || !normalDir.startsWith('/')) {
    process.stderr.write('usage: impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR]\n');
    return 1;
  }
  const { dirs, required } = configFolders(process.env.IMPERMANENCE_CONFIG?.split(':').filter(Boolean), '/');
  const out = folderSink(normalDir);
  try {
    // Throws before writing anything if the config is invalid.
    const config = readConfig(dirs, '/', required);
    planUnits(config, { outputDir: normalDir, statSource: sourceStatter(), statRoot: statOnRoot, prepare: process.env.IMPERMANENCE_PREPARE }, out);
  } catch (err) {
    if (!(err instanceof InvalidConfig)) throw err;
    const problems = err.problems.map((p) => p.message);
    for (const p of problems) process.stderr.write(`<3>impermanence-generator: ${p}\n`);
    planConfigError(problems, out);
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
