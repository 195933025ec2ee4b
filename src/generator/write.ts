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
 * share a few parents), and only files present are lstat'ed, for their owner and mode. A source
 * below a symlinked folder inside its storage (one a user could have planted in a folder they
 * own) is reported as a symlink, so that it is never bind-mounted.
 */
export function sourceStatter(): (path: string, storage?: string) => SourceStat | undefined {
  const folders = new Map<string, Map<string, Dirent> | null>();
  const realFolders = new Map<string, boolean>();
  const isRealFolder = (dir: string): boolean => {
    let real = realFolders.get(dir);
    if (real === undefined) {
      const st = lstatSync(dir, { throwIfNoEntry: false });
      realFolders.set(dir, (real = !st || st.isDirectory())); // missing: nothing can be followed there
    }
    return real;
  };
  const symlink: SourceStat = { type: 'symlink', uid: -1, gid: -1, mode: -1 };
  const belowSymlink: SourceStat = { type: 'below-symlink', uid: -1, gid: -1, mode: -1 };
  return (path, storage) => {
    const slash = path.lastIndexOf('/');
    const parent = path.slice(0, slash) || '/';
    if (storage && parent.startsWith(storage + '/')) {
      for (let i = parent.indexOf('/', storage.length + 1); ; i = parent.indexOf('/', i + 1)) {
        if (!isRealFolder(i === -1 ? parent : parent.slice(0, i))) return belowSymlink;
        if (i === -1) break;
      }
    }
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
    if (dirent.isSymbolicLink()) return symlink;
    if (!dirent.isFile()) return { type: 'other', uid: -1, gid: -1, mode: -1 };
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st?.isFile()) return undefined; // changed under us: treat as absent, which symlinks it
    return { type: 'file', uid: st.uid, gid: st.gid, mode: st.mode };
  };
}

/** Looks up a path on the root as the planner wants it (see PlanOptions.statRoot); a symlink is never followed. */
export function statOnRoot(path: string): SourceStat | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return undefined;
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
  return { type, uid: st.uid, gid: st.gid, mode: st.mode };
}
