import { runGenerator } from './run';

/**
 * impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd.generator(7)).
 * Runs at every boot and daemon-reload, before anything is mounted but / (and /usr, and what
 * the initrd mounted, such as the storage). It talks to no other process and writes only into
 * NORMAL-DIR. IMPERMANENCE_CONFIG=DIR[:DIR…] replaces the config folders (as SYSTEMD_FSTAB does
 * for systemd-fstab-generator), for tests and benchmarks; IMPERMANENCE_PREPARE names the
 * impermanence-prepare program the units run (tests point it at the build). See run.ts.
 */
process.exitCode = runGenerator(process.argv.slice(2), process.env, (line) => process.stderr.write(line));
