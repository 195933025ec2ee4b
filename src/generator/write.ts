import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, symlinkSync, writeSync, type Dirent } from 'node:fs';
import type { GeneratorOutput, OutputSink, SourceStat } from './plan';

/** Writes the generator's output straight into a folder (which systemd hands us empty). */
export function folderSink(dir: string): OutputSink {
  const made = new Set<string>();
  const parent = (name: string) => {
    const slash = name.lastIndexOf('/');
    if (slash === -1) return;
    const d = `${dir}/${name.slice(0, slash)}`;
    if (!made.has(d)) {
      mkdirSync(d, { recursive: true });
      made.add(d);
    }
  };
  mkdirSync(dir, { recursive: true });
  return {
    file(name, content) {
      parent(name);
      const fd = openSync(`${dir}/${name}`, 'wx', 0o644);
      try {
        writeSync(fd, content);
      } finally {
        closeSync(fd);
      }
    },
    link(name, target) {
      parent(name);
      symlinkSync(target, `${dir}/${name}`);
    },
  };
}

export function writeOutput(dir: string, output: GeneratorOutput): void {
  const sink = folderSink(dir);
  for (const [name, content] of output.files) sink.file(name, content);
  for (const [name, target] of output.links) sink.link(name, target);
}

/**
 * Looks up storage sources as the planner wants them; a symlink is never followed. Each parent
 * folder is read once (one readdir instead of an lstat per entry: thousands of entries usually
 * share a few parents), and only files present are lstat'ed, for their owner and mode.
 */
export function sourceStatter(): (path: string) => SourceStat | undefined {
  const folders = new Map<string, Map<string, Dirent> | null>();
  return (path) => {
    const slash = path.lastIndexOf('/');
    const parent = path.slice(0, slash) || '/';
    let folder = folders.get(parent);
    if (folder === undefined) {
      try {
        folder = new Map(readdirSync(parent, { withFileTypes: true }).map((d) => [d.name, d]));
      } catch {
        folder = null;
      }
      folders.set(parent, folder);
    }
    const dirent = folder?.get(path.slice(slash + 1));
    if (!dirent) return undefined;
    if (dirent.isDirectory()) return { type: 'directory', uid: -1, gid: -1, mode: -1 };
    if (dirent.isSymbolicLink()) return { type: 'symlink', uid: -1, gid: -1, mode: -1 };
    if (!dirent.isFile()) return { type: 'other', uid: -1, gid: -1, mode: -1 };
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st?.isFile()) return undefined; // changed under us: treat as absent, which symlinks it
    return { type: 'file', uid: st.uid, gid: st.gid, mode: st.mode };
  };
}
