import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { InvalidConfig } from '../config/errors';
import { importNix, ImportError } from '../config/import-nix';
import { parseConfigText } from '../config/load';
import { resolveConfig } from '../config/resolve';
import { UserDb } from '../config/userdb';
import { printable, printablePath } from '../shared/printable';

type Print = (s: string) => void;


/**
 * `impermanencectl import nix FILE.json`: NixOS's environment.persistence, as `nix eval --json`
 * prints it, into our TOML (on standard output, or a new file with --out). What cannot be carried
 * over is named on standard error and in comments at the top. The result is checked as `check`
 * would check it alone (users and homes from --root's /etc/passwd): exit 0 when it passes, 1 when
 * it does not (the problems follow the notes; the TOML is still written, to be fixed by hand).
 */
export function importCommand(args: string[], values: { out?: string; root?: string }, out: Print, err: Print): number {
  const [format, input, ...extra] = args;
  if (format !== 'nix' || input === undefined || extra.length) {
    const what = format !== undefined && format !== 'nix' ? `unknown format ${JSON.stringify(printable(format))}: only "nix" is known` : 'import needs nix FILE.json|-';
    err(`impermanencectl import: ${what}; see 'impermanencectl import --help'\n`);
    return 2;
  }
  const root = values.root ?? '/';
  if (values.root !== undefined && !statSync(root, { throwIfNoEntry: false })?.isDirectory()) {
    err(`impermanencectl import: --root ${printablePath(root)}: not a folder\n`);
    return 2;
  }
  const shown = input === '-' ? 'standard input' : input;
  let data: unknown;
  try {
    const text = readFileSync(input === '-' ? 0 : input, 'utf8');
    data = JSON.parse(text);
  } catch (e) {
    const what = e instanceof SyntaxError ? `invalid JSON: ${e.message.replace(/, ".*" is not valid JSON$/s, '')}` : (e as Error).message;
    err(`impermanencectl import: ${printablePath(shown)}: ${printable(what)}\n`);
    return 1;
  }
  const users = UserDb.read(root);
  let result;
  try {
    result = importNix(data, { source: input === '-' ? 'standard input' : basename(input), users });
  } catch (e) {
    if (!(e instanceof ImportError)) throw e;
    err(`impermanencectl import: ${printablePath(shown)}: ${printable(e.message)}\n`);
    return 1;
  }
  for (const n of result.notes) err(`note: ${printable(n)}\n`);

  // What check would say of this file alone.
  const name = values.out ?? 'imported.toml';
  let problems: string[] = [];
  try {
    resolveConfig([{ file: name, config: parseConfigText(name, result.text) }], users);
  } catch (e) {
    if (!(e instanceof InvalidConfig)) throw e;
    problems = e.problems.map((p) => p.message);
  }

  if (values.out === undefined) out(result.text);
  else {
    try {
      writeFileSync(values.out, result.text, { flag: 'wx', mode: 0o644 }); // never over a file
    } catch (e) {
      const exists = (e as NodeJS.ErrnoException).code === 'EEXIST';
      err(`impermanencectl import: cannot write ${printablePath(values.out)}: ${exists ? 'it exists; give a new file name' : (e as Error).message}\n`);
      return 1;
    }
    err(`wrote ${printablePath(values.out)}\n`);
  }
  if (problems.length) {
    for (const p of problems) err(`${printablePath(p)}\n`);
    err('impermanencectl import: the imported config does not pass check (above); fix it before use\n');
    return 1;
  }
  return 0;
}
