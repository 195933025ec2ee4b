/** What the boot tests share: the package installed into a fresh root, and commands that must succeed. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { Container, ExecOptions } from './nspawn';

const REPO = path.join(__dirname, '..', '..');

/** Installs the build (npm run build) into a fresh root as a package would: packaging/install.sh. */
export function installPackage(root: string): void {
  const r = spawnSync(path.join(REPO, 'packaging', 'install.sh'), [root], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`install.sh failed: ${r.stderr}`);
}

/** A shell script in the container that must succeed: its output, or an error with all it printed. */
export async function sh(c: Container, script: string, opts: ExecOptions = {}): Promise<string> {
  const r = await c.sh(script, opts);
  if (r.code !== 0) throw new Error(`in container: ${script}\nexit ${r.code}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}
