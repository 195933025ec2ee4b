import { writeSync } from 'node:fs';
import { runGenerator } from './run';

/**
 * impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (systemd.generator(7)).
 * Runs at every boot and daemon-reload, before anything is mounted but / (and /usr, and what
 * the initrd mounted, such as the storage). It talks to no other process and writes only into
 * NORMAL-DIR. IMPERMANENCE_CONFIG=DIR[:DIR…] replaces the config folders (as SYSTEMD_FSTAB does
 * for systemd-fstab-generator), for tests and benchmarks; IMPERMANENCE_PREPARE names the
 * impermanence-prepare program the units run (tests point it at the build). See run.ts.
 */
declare const VERSION: string;

const HELP = `Usage: impermanence-generator NORMAL-DIR [EARLY-DIR LATE-DIR]

A systemd generator (systemd.generator(7)): run by systemd at boot and at every daemon-reload, it
turns the impermanence config into bind .mount units, tmpfiles.d rules and impermanence.target in
NORMAL-DIR, or into impermanence-config-error.service when the config is bad. To see what it
would write, run: impermanencectl generate --out -. See impermanence-generator(8).

  -h, --help   show this help and exit
  --version    show the version and exit
`;

const argv = process.argv.slice(2);
if (argv[0] === '--help' || argv[0] === '-h') process.stdout.write(HELP);
else if (argv[0] === '--version') process.stdout.write(`impermanence-generator ${VERSION}\n`);
else if (argv[0]?.startsWith('-')) {
  process.stderr.write(`impermanence-generator: unknown option ${JSON.stringify(argv[0]).slice(1, -1)}; see 'impermanence-generator --help'\n`);
  process.exitCode = 2;
} else {
  // Under systemd, stderr goes to the kernel log or the journal, where "<N>" is the priority; a
  // person running it at a terminal gets the bare lines. Written to fd 2 directly: process.stderr
  // would load Node's stream machinery at every boot for lines that are rarely written.
  // Whether it is a terminal is asked at the first line (node:tty loads the stream machinery too).
  let tty: boolean | undefined;
  process.exitCode = runGenerator(argv, process.env, (line) => toStderr((tty ??= (require('node:tty') as typeof import('node:tty')).isatty(2)) ? line.replace(/^<\d>/, '') : line));
}

/** Writes all of `text` to fd 2; through process.stderr if fd 2 will not take it now (EAGAIN: a non-blocking pipe). */
function toStderr(text: string): void {
  const data = Buffer.from(text);
  let done = 0;
  try {
    while (done < data.length) done += writeSync(2, data, done);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') process.stderr.write(data.subarray(done));
    // else: nowhere to say it (stderr closed): the units written say it
  }
}
