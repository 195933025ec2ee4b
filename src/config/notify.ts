import { mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse } from 'smol-toml';
import * as z from 'zod/mini';
import { replaceFile } from '../shared/replace-file';

/**
 * The user's own settings for impermanence-notify, in $XDG_CONFIG_HOME/impermanence/notify.toml:
 *
 *   enable = true            # false: the agent exits at once (impermanencectl notify off)
 *   scope = "all"            # "home": only drift inside your home; "all": also the system
 *                            # paths you may see
 *   details = ["xdg-open"]   # opens the drift report (a text file) for "Details"
 *   [[ignore]]               # one table per ignored path and everything below it
 *   path = "~/.cache/foo"    # ("Ignore" in a notification appends one)
 *
 * Edited by appending or by replacing one line: comments stay. Each edit replaces the file
 * whole (replaceFile).
 */
export interface NotifyConfig {
  enable: boolean;
  scope: 'all' | 'home';
  details: string[];
  ignore: string[];
}

const Schema = z.strictObject({
  enable: z.optional(z.boolean()),
  scope: z.optional(z.enum(['all', 'home'])),
  details: z.optional(z.array(z.string()).check(z.minLength(1))),
  ignore: z.optional(z.array(z.strictObject({ path: z.string().check(z.minLength(1)) }))),
});

export const DEFAULTS: NotifyConfig = { enable: true, scope: 'all', details: ['xdg-open'], ignore: [] };

/** The user's home: $HOME when it is absolute, else the password database's. */
export function userHome(env: NodeJS.ProcessEnv): string {
  return env.HOME?.startsWith('/') ? env.HOME : homedir();
}

/** Where the agent's config lives for a user whose home is `home`. */
export function configPath(env: NodeJS.ProcessEnv, home: string): string {
  const base = env.XDG_CONFIG_HOME?.startsWith('/') ? env.XDG_CONFIG_HOME : join(home, '.config');
  return join(base, 'impermanence', 'notify.toml');
}

/** `~` and `~/x` as paths in `home`; absolute paths as they are. */
export function expandHome(path: string, home: string): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return join(home, path.slice(2));
  return path;
}

/** A path as its user would write it: `~` and `~/x` inside `home` (expandHome's inverse). */
export function tildePath(path: string, home: string): string {
  if (path === home) return '~';
  return path.startsWith(home + '/') ? '~' + path.slice(home.length) : path;
}

/** Reads the config; a missing file is the defaults. Throws with the file and the problem. */
export function readNotifyConfig(file: string, home: string): NotifyConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...DEFAULTS };
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = parse(text);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = Schema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.join('.') || '(top)';
    if (issue.code === 'unrecognized_keys') {
      throw new Error(`${file}: ${where}: unknown setting ${issue.keys.map((k) => JSON.stringify(k)).join(', ')} (known: enable, scope, details, ignore; in [[ignore]]: path)`);
    }
    throw new Error(`${file}: ${where}: ${issue.message}`);
  }
  const c = parsed.data;
  const ignore = (c.ignore ?? []).map((i) => expandHome(i.path, home).replace(/(.)\/+$/, '$1'));
  const relative = ignore.find((p) => !p.startsWith('/'));
  if (relative) throw new Error(`${file}: ignore: ${JSON.stringify(relative)} is not absolute (start it with / or ~/)`);
  return { enable: c.enable ?? DEFAULTS.enable, scope: c.scope ?? DEFAULTS.scope, details: c.details ?? DEFAULTS.details, ignore };
}

/** Appends ignored paths (shown with ~ when in `home`) in one edit, creating the file if needed. */
export function appendIgnore(file: string, paths: string[], home: string): void {
  editConfig(file, (text) => text + paths.map((p) => `\n[[ignore]]\npath = ${JSON.stringify(tildePath(p, home))}\n`).join(''));
}

/** Sets `enable = …`: replaces that line if there is one (before any table), else adds it on top. */
export function setEnabled(file: string, enable: boolean): void {
  editConfig(file, (text) => {
    const lines = text.split('\n');
    const firstTable = lines.findIndex((l) => /^\s*\[/.test(l));
    const top = firstTable < 0 ? lines.length : firstTable;
    const at = lines.slice(0, top).findIndex((l) => /^\s*enable\s*=/.test(l));
    if (at >= 0) lines[at] = `enable = ${enable}`;
    else lines.splice(0, 0, `enable = ${enable}`);
    return lines.join('\n');
  });
}

const HEADER = '# impermanence-notify: drift notifications (see impermanence-notify --help)\n';

/**
 * Edits the file as text (a new one starts with a comment saying what it is) and replaces it
 * whole: a full disk or a crash leaves the old file, never a cut one. A symlinked config (dotfile
 * managers) stays a symlink, its mode stays.
 */
function editConfig(file: string, edit: (text: string) => string): void {
  mkdirSync(dirname(file), { recursive: true });
  let text = HEADER;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file}: ${(err as Error).message}`);
  }
  replaceFile(file, edit(text), { mode: 0o644 });
}
