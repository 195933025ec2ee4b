import { linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, symlinkSync, writeFileSync, type Dirent } from 'node:fs';
import type { GeneratorOutput, SourceStat } from './plan';

/**
 * Writes the whole output into `dir`, all or nothing. Everything is written first into a hidden
 * temporary folder inside `dir` (same filesystem), then hard-linked into place, each name
 * refused if it exists (the output folder is shared with other generators), and the temporary
 * folder removed. A failure at any step (a full or read-only filesystem, a name taken) removes
 * what was placed and the folders made, then throws: `dir` is left as it was. A generator
 * killed while writing leaves only the hidden folder, which systemd does not load.
 */
export function writeOutput(dir: string, output: GeneratorOutput): void {
  const tmp = mkdtempSync(`${dir}/.impermanence-`);
  const placed: string[] = [];
  const made: string[] = [];
  try {
    const folders = new Set<string>();
    const parent = (name: string) => {
      const slash = name.lastIndexOf('/');
      if (slash === -1) return;
      const d = name.slice(0, slash);
      if (folders.has(d)) return;
      mkdirSync(`${tmp}/${d}`, { recursive: true });
      for (let i = d.indexOf('/'); ; i = d.indexOf('/', i + 1)) {
        folders.add(i === -1 ? d : d.slice(0, i));
        if (i === -1) break;
      }
    };
    for (const [name, content] of output.files) {
      parent(name);
      writeFileSync(`${tmp}/${name}`, content, { flag: 'wx', mode: 0o644 });
    }
    for (const [name, target] of output.links) {
      parent(name);
      symlinkSync(target, `${tmp}/${name}`);
    }
    for (const d of [...folders].sort()) {
      try {
        mkdirSync(`${dir}/${d}`);
        made.push(`${dir}/${d}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !lstatSync(`${dir}/${d}`).isDirectory()) throw err;
      }
    }
    // link(2) neither replaces a name nor follows a symlink.
    for (const name of [...output.files.keys(), ...output.links.keys()]) {
      linkSync(`${tmp}/${name}`, `${dir}/${name}`);
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
  } finally {
    rmSync(tmp, { recursive: true, force: true });
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
