import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type * as z from 'zod/mini';
import { configDirsFromCmdline } from './cmdline';
import { ConfigError, InvalidConfig, keyPath } from './errors';
import { ConfigFileSchema, knownKeysAt, type ConfigFile } from './schema';

/** Where the config lives, highest priority first (tmpfiles.d's order). */
export const CONFIG_DIRS = ['/etc/impermanence/persist.d', '/run/impermanence/persist.d', '/usr/lib/impermanence/persist.d'];

/** The config folders to read, and those of them that must exist (see configFolders). */
export interface ConfigFolders { dirs: string[]; required: string[] }

/**
 * The config folders the generator, the daemon and the CLI read: the `given` ones (--config)
 * if any; on the running system the kernel command line's first, then the system folders; for
 * another root (an image), that root's system folders. Folders named with impermanence.config=
 * must exist: they live on the storage, and a missing one means the storage is not there.
 */
export function configFolders(given: readonly string[] | undefined, root: string): ConfigFolders {
  if (given?.length) return { dirs: given.map((d) => resolve(d)), required: [] };
  if (root !== '/') return { dirs: CONFIG_DIRS.map((d) => join(root, d)), required: [] };
  const cmdline = configDirsFromCmdline();
  return { dirs: [...cmdline, ...CONFIG_DIRS], required: cmdline };
}

export interface LoadedFile { file: string; config: ConfigFile }

/**
 * The config files in effect, in the order they apply: the drop-in rules of tmpfiles.d and
 * sysusers.d. Files are *.toml or *.json; a file in an earlier directory hides one of the same
 * name in a later directory; a file that is empty or a symlink to /dev/null masks that name;
 * the files in effect are taken in lexical order of their names.
 */
export function findConfigFiles(dirs: readonly string[], required: readonly string[] = []): string[] {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && required.includes(dir)) {
        // A folder named on the kernel command line lives on the storage: missing, it most
        // likely means the storage is not mounted yet, and an empty config would persist nothing.
        throw new InvalidConfig([new ConfigError(dir, undefined, `impermanence.config= names this folder, but it ${code === 'ENOENT' ? 'does not exist' : 'is not a folder'}. Is the storage that holds it mounted? It must be mounted by the initrd: x-initrd.mount in /etc/fstab, or rd.systemd.mount-extra= on the kernel command line`)]);
      }
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw new InvalidConfig([new ConfigError(dir, undefined, `cannot read directory: ${(err as Error).message}`)]);
    }
    for (const name of names) {
      if (!/\.(toml|json)$/.test(name) || name.startsWith('.') || byName.has(name)) continue;
      byName.set(name, join(dir, name));
    }
  }
  return [...byName.keys()]
    .sort()
    .map((name) => byName.get(name)!)
    .filter((file) => !isMasked(file));
}

function isMasked(file: string): boolean {
  try {
    if (realpathSync(file) === '/dev/null') return true;
    return statSync(file).size === 0;
  } catch {
    return false; // a dangling link is reported when the file is read
  }
}

/** Parses one config file's text (TOML, or JSON for *.json) and checks its shape. */
export function parseConfigText(file: string, text: string): ConfigFile {
  let data: unknown;
  if (file.endsWith('.json')) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      const at = jsonLocation(text, err as Error);
      // Node 20 quotes the start of the text ("… is not valid JSON"): the location says where.
      const what = (err as Error).message.replace(/ in JSON at position \d+.*$/s, '').replace(/, ".*" is not valid JSON$/s, '');
      throw new InvalidConfig([new ConfigError(file, undefined, `invalid JSON: ${what}`, at?.line, at?.column)]);
    }
  } else {
    try {
      data = parseToml(text);
    } catch (err) {
      if (err instanceof TomlError) {
        const what = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
        throw new InvalidConfig([new ConfigError(file, undefined, `invalid TOML: ${what}`, err.line, err.column)]);
      }
      // Not a syntax error the parser names (say, arrays nested past the stack): still this file's problem.
      throw new InvalidConfig([new ConfigError(file, undefined, `invalid TOML: ${(err as Error).message}`)]);
    }
  }
  const result = ConfigFileSchema.safeParse(data);
  if (!result.success) throw new InvalidConfig(flatten(result.error.issues, []).map((issue) => issueToError(file, issue)));
  return result.data;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

export function loadConfigFile(file: string): LoadedFile {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(file)) {
    // Units name their config file (SourcePath=), one line each: such a name cannot be written there.
    throw new InvalidConfig([new ConfigError(file, undefined, 'the file name contains a control character; rename the file')]);
  }
  let text: string;
  try {
    text = UTF8.decode(readFileSync(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_ENCODING_INVALID_ENCODED_DATA') {
      // Read as UTF-8 leniently, a path would name something else than the file on disk.
      throw new InvalidConfig([new ConfigError(file, undefined, 'is not valid UTF-8 (TOML and JSON files must be)')]);
    }
    throw new InvalidConfig([new ConfigError(file, undefined, `cannot read: ${(err as Error).message}`)]);
  }
  return { file, config: parseConfigText(file, text) };
}

/** Reads every file in effect; all problems in all files are reported together. */
export function loadConfig(dirs: readonly string[], required: readonly string[] = []): LoadedFile[] {
  const problems: ConfigError[] = [];
  const loaded: LoadedFile[] = [];
  for (const file of findConfigFiles(dirs, required)) {
    try {
      loaded.push(loadConfigFile(file));
    } catch (err) {
      if (!(err instanceof InvalidConfig)) throw err;
      problems.push(...err.problems);
    }
  }
  if (problems.length) throw new InvalidConfig(problems);
  return loaded;
}

function jsonLocation(text: string, err: Error): { line: number; column: number } | undefined {
  const m = / at position (\d+)/.exec(err.message);
  if (!m) return undefined;
  const before = text.slice(0, Number(m[1]));
  return { line: before.split('\n').length, column: before.length - before.lastIndexOf('\n') };
}

/**
 * An entry is `path | table`: when neither fits, report the table's own problems if the entry
 * was a table, and otherwise that it should be one or the other.
 */
function flatten(issues: z.core.$ZodIssue[], prefix: PropertyKey[]): z.core.$ZodIssue[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path];
    if (issue.code !== 'invalid_union' || issue.errors.length !== 2) return [{ ...issue, path }];
    const asTable = issue.errors[1]!;
    const notATable = asTable.length === 1 && asTable[0]!.code === 'invalid_type' && asTable[0]!.path.length === 0;
    if (notATable) {
      const key = path.at(-2) === 'files' ? 'file' : 'directory';
      return [{ code: 'custom', path, message: `expected a path or a table with "${key}"`, input: undefined } as z.core.$ZodIssue];
    }
    return flatten(asTable, path);
  });
}

function issueToError(file: string, issue: z.core.$ZodIssue): ConfigError {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  const where = path.length ? keyPath(path) : undefined;
  if (issue.code === 'unrecognized_keys') {
    const problems = issue.keys.map((key) => {
      const hint = closest(key, knownKeysAt(issue.path));
      return `unknown option ${JSON.stringify(key)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`;
    });
    return new ConfigError(file, where, problems.join('; '));
  }
  if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input')) {
    return new ConfigError(file, where, `expected ${issue.expected}`);
  }
  return new ConfigError(file, where, issue.message);
}

/** The known option nearest to a misspelled one (edit distance at most 3), if any. */
export function closest(key: string, candidates: string[]): string | undefined {
  if (key.length > 64) return undefined; // no option is that long, and the distance costs length × length
  let best: string | undefined;
  let bestDistance = 4;
  for (const known of candidates) {
    const d = editDistance(key.toLowerCase(), known.toLowerCase());
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
