import { loadConfig } from './load';
import { systemPresets } from './presets';
import { resolveConfig, type ResolvedConfig } from './resolve';
import { UserDb } from './userdb';

/**
 * Reads, checks and resolves the config in `dirs` against the user database under `root`.
 * `required`: folders that must exist (those named with impermanence.config=). Throws InvalidConfig.
 */
export function readConfig(dirs: readonly string[], root = '/', required: readonly string[] = []): ResolvedConfig {
  return resolveConfig(loadConfig(dirs, required), UserDb.read(root), systemPresets(root));
}
