import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, rmdirSync, rmSync, symlinkSync, writeSync, type Dirent } from 'node:fs';
import type { GeneratorOutput, SourceStat } from './plan';

/**
 * Writes the whole output into `dir`, all or nothing: each file is created exclusively (the
 * folder is shared with other generators: a name already there is never replaced), and on any
 * failure (a full or read-only filesystem, a name taken) everything this call created is
 * removed again before the error is thrown, so `dir` is left as it was. Files are written in
 * the order given, and the planner gives impermanence.target and the link that pulls it in
 * last: a generator killed half-way leaves units that nothing starts. (Writing into a temporary
 * folder and moving the files into place would cover a kill too, but costs two more system
 * calls a file: about a third more time at 10,000 entries on these machines.)
 */
export function writeOutput(dir: string, output: GeneratorOutput): void {
  const placed: string[] = [];
  const made: string[] = [];
  const folders = new Set<string>();
  const parent = (name: string) => {
    const slash = name.lastIndexOf('/');
    if (slash === -1 || folders.has(name.slice(0, slash))) return;
    const d = name.slice(0, slash);
    for (let i = d.indexOf('/'); ; i = d.indexOf('/', i + 1)) {
      const sub = i === -1 ? d : d.slice(0, i);
      if (!folders.has(sub)) {
        try {
          mkdirSync(`${dir}/${sub}`);
          made.push(`${dir}/${sub}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !lstatSync(`${dir}/${sub}`).isDirectory()) throw err;
        }
        folders.add(sub);
      }
      if (i === -1) break;
    }
  };
  try {
    for (const [name, content] of output.files) {
      parent(name);
      const fd = openSync(`${dir}/${name}`, 'wx', 0o644);
      placed.push(`${dir}/${name}`); // ours from here: removed again on failure
      try {
        writeSync(fd, content);
      } finally {
        closeSync(fd);
      }
    }
    for (const [name, target] of output.links) {
      parent(name);
      symlinkSync(target, `${dir}/${name}`);
      placed.push(`${dir}/${name}`);
    }
  } catch (err) {
    for (const f of placed.reverse()) rmSync(f, { force: true });
    for (const d of made.reverse()) {
      try {
        rmdirSync(d); // only if empty: other generators write into the same folders
      } catch {
        // left as another generator filled it
      }
    }
    throw err;
  }
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
