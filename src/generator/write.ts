import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, rmdirSync, rmSync, symlinkSync, writeSync, type Dirent } from 'node:fs';
import { isInside } from '../config/paths';
import type { GeneratorOutput, OutputSink, SourceStat } from './plan';

/**
 * An OutputSink that writes each file into `dir` as it is produced, so that the output is never
 * held whole in memory (10,000 units are about 10 MB of strings), and that can take it all back:
 * each file is created exclusively (the folder is shared with other generators: a name already
 * there is never replaced), and `undo()` removes everything this writer created, so `dir` is left
 * as it was. A write that fails sets `failed` before it throws. The planner gives
 * impermanence.target and the link that pulls it in last: a generator killed half-way leaves
 * units that nothing starts. (Writing into a temporary folder and moving the files into place
 * would cover a kill too, but costs two more system calls a file: about a third more time at
 * 10,000 entries on these machines.)
 */
export class OutputWriter implements OutputSink {
  failed = false;
  private readonly placed: string[] = [];
  private readonly made: string[] = [];
  private readonly folders = new Set<string>();

  constructor(private readonly dir: string) {}

  file(name: string, content: string): void {
    try {
      this.parent(name);
      const path = `${this.dir}/${name}`;
      const fd = openSync(path, 'wx', 0o644);
      this.placed.push(path); // ours from here: removed again by undo()
      try {
        writeSync(fd, content);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  link(name: string, target: string): void {
    try {
      this.parent(name);
      symlinkSync(target, `${this.dir}/${name}`);
      this.placed.push(`${this.dir}/${name}`);
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  /** Removes every file, link and folder this writer created. */
  undo(): void {
    for (const f of this.placed.splice(0).reverse()) rmSync(f, { force: true });
    for (const d of this.made.splice(0).reverse()) {
      try {
        rmdirSync(d); // only if empty: other generators write into the same folders
      } catch {
        // left as another generator filled it
      }
    }
    this.folders.clear();
  }

  private parent(name: string): void {
    const slash = name.lastIndexOf('/');
    if (slash === -1 || this.folders.has(name.slice(0, slash))) return;
    const d = name.slice(0, slash);
    for (let i = d.indexOf('/'); ; i = d.indexOf('/', i + 1)) {
      const sub = i === -1 ? d : d.slice(0, i);
      if (!this.folders.has(sub)) {
        try {
          mkdirSync(`${this.dir}/${sub}`);
          this.made.push(`${this.dir}/${sub}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !lstatSync(`${this.dir}/${sub}`).isDirectory()) throw err;
        }
        this.folders.add(sub);
      }
      if (i === -1) break;
    }
  }
}

/** Writes an output rendered in memory into `dir`, all or nothing (see OutputWriter). */
export function writeOutput(dir: string, output: GeneratorOutput): void {
  const writer = new OutputWriter(dir);
  try {
    for (const [name, content] of output.files) writer.file(name, content);
    for (const [name, target] of output.links) writer.link(name, target);
  } catch (err) {
    writer.undo();
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
  // By storage root, then parent folder: whether a folder on the way is a symlink.
  const belowLink = new Map<string, Map<string, boolean>>();
  return (path, storage) => {
    const slash = path.lastIndexOf('/');
    const parent = path.slice(0, slash) || '/';
    if (storage && isInside(parent, storage)) {
      let known = belowLink.get(storage);
      if (!known) belowLink.set(storage, (known = new Map()));
      let below = known.get(parent);
      if (below === undefined) {
        below = false;
        for (let i = parent.indexOf('/', storage.length + 1); !below; i = parent.indexOf('/', i + 1)) {
          below = !isRealFolder(i === -1 ? parent : parent.slice(0, i));
          if (i === -1) break;
        }
        known.set(parent, below);
      }
      if (below) return belowSymlink;
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
