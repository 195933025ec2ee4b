import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, InvalidConfig } from './errors';
import { checkShape, closest, parseDocument } from './load';
import { PresetSchema, type PresetDecl } from './schema';

/**
 * Presets: what a kind of machine or program needs persisted, shipped in
 * /usr/share/impermanence/presets/NAME.toml and included by name:
 *
 *   [persistence."/persistent"]
 *   include = ["base", "ssh", "networkmanager"]        # their system paths
 *   users.bird.include = ["gnome", "firefox"]          # their paths in bird's home
 *
 * /etc/impermanence/presets/NAME.toml replaces the shipped preset of that name (as a drop-in does).
 */
export const PRESET_DIRS = ['/etc/impermanence/presets', '/usr/share/impermanence/presets'];

/** A preset name: a file name without .toml. */
const NAME = /^[a-z0-9][a-z0-9_-]*$/;

export interface Preset { name: string; file: string; decl: PresetDecl }

/** Finds and reads presets by name. */
export interface PresetSource {
  /** The preset, undefined when there is none of that name; throws InvalidConfig for a broken preset file. */
  get(name: string): Preset | undefined;
  /** The names available, sorted (for the error about an unknown one). */
  names(): string[];
  /** Where presets are looked for, for that error. */
  readonly dirs: readonly string[];
}

/** The presets installed under `root` (or in $IMPERMANENCE_PRESETS_PATH, colon-separated, first wins). */
export function systemPresets(root = '/'): PresetSource {
  const fromEnv = process.env.IMPERMANENCE_PRESETS_PATH;
  const dirs = fromEnv ? fromEnv.split(':').filter(Boolean) : PRESET_DIRS.map((d) => join(root, d));
  return presetsIn(dirs);
}

/** Presets in these folders, the first one holding a name wins. Files are read once, when first asked for. */
export function presetsIn(dirs: readonly string[]): PresetSource {
  const cache = new Map<string, Preset | undefined>();
  return {
    dirs,
    get(name) {
      if (!NAME.test(name)) return undefined;
      if (cache.has(name)) return cache.get(name);
      let found: Preset | undefined;
      for (const dir of dirs) {
        const file = join(dir, `${name}.toml`);
        let text: string;
        try {
          text = readFileSync(file, 'utf8');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT' || code === 'ENOTDIR') continue;
          throw new InvalidConfig([new ConfigError(file, undefined, `cannot read preset: ${(err as Error).message}`)]);
        }
        found = { name, file, decl: checkShape(file, parseDocument(file, text), PresetSchema, presetKeysAt) };
        break;
      }
      cache.set(name, found);
      return found;
    },
    names() {
      const all = new Set<string>();
      for (const dir of dirs) {
        let names: string[] = [];
        try { names = readdirSync(dir); } catch { /* absent */ }
        for (const n of names) if (n.endsWith('.toml') && NAME.test(n.slice(0, -5))) all.add(n.slice(0, -5));
      }
      return [...all].sort();
    },
  };
}

function presetKeysAt(path: ReadonlyArray<PropertyKey>): string[] {
  const last = path.at(-1);
  const parent = path.at(-2);
  if (last === 'home') return ['directories', 'files'];
  if (last === 'parentDirectory') return ['user', 'group', 'mode'];
  if (parent === 'directories') return ['directory', 'user', 'group', 'mode', 'hideMount', 'allowTrash', 'persistentStoragePath', 'parentDirectory', 'mountOptions'];
  if (parent === 'files') return ['file', 'parentDirectory', 'method', 'persistentStoragePath', 'mountOptions'];
  return Object.keys(PresetSchema.shape);
}

/** Why `name` cannot be included: unknown (with the nearest known name), or nothing for this place. */
export function unknownPresetProblem(source: PresetSource, name: string): string {
  const names = source.names();
  const hint = closest(name, names);
  const list = names.length ? `; presets: ${names.join(', ')}` : `; there are no presets in ${source.dirs.join(' or ')}`;
  return `unknown preset ${JSON.stringify(name)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}${list}`;
}
