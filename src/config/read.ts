import { loadConfig } from './load';
import { resolveConfig, type ResolvedConfig } from './resolve';
import { UserDb } from './userdb';

/** Reads, checks and resolves the config in `dirs` against the user database under `root`. Throws InvalidConfig. */
export function readConfig(dirs: readonly string[], root = '/'): ResolvedConfig {
  return resolveConfig(loadConfig(dirs), UserDb.read(root));
}
