import { loadConfig } from './load';
import { systemPresets } from './presets';
import { resolveConfig, type ResolvedConfig } from './resolve';
import { UserDb } from './userdb';

/**
 * Reads, checks and resolves the config in `dirs` against the user database under `root` (the
 * storage copies of /etc/passwd and /etc/group when the config persists them: UserDb.read).
 * `required`: folders that must exist (those named with impermanence.config=). Throws InvalidConfig.
 */
export function readConfig(dirs: readonly string[], root = '/', required: readonly string[] = []): ResolvedConfig {
  const loaded = loadConfig(dirs, required);
  return resolveConfig(loaded, UserDb.read(root, loaded), systemPresets(root));
}
