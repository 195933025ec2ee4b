import { lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { GeneratorOutput, SourceStat } from './plan';

/** Writes the generator's output into `dir` (which systemd hands us empty). */
export function writeOutput(dir: string, output: GeneratorOutput): void {
  const made = new Set<string>();
  const ensureDir = (d: string) => {
    if (made.has(d)) return;
    mkdirSync(d, { recursive: true });
    made.add(d);
  };
  ensureDir(dir);
  for (const [name, content] of output.files) {
    const path = join(dir, name);
    if (name.includes('/')) ensureDir(dirname(path));
    writeFileSync(path, content, { mode: 0o644 });
  }
  for (const [name, target] of output.links) {
    const path = join(dir, name);
    ensureDir(dirname(path));
    symlinkSync(target, path);
  }
}

/** lstat of a storage source, as the planner wants it; a symlink is never followed. */
export function statSource(path: string): SourceStat | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return undefined;
  const type = st.isDirectory() ? 'directory' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
  return { type, uid: st.uid, gid: st.gid, mode: st.mode };
}
