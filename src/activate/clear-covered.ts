import { closeSync, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, rmdirSync, statSync, unlinkSync, constants, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';
import { at, copyTree, makeTempDir, openChild, placeInto, removeTempDir, removeTree, runWith, succeeded, syncFileSystem, type TempDir } from './as-root';
import { tempBeside } from './prepare';

/**
 * After persist has copied a path into storage and mounted storage's copy over it, the root's
 * copy is hidden under the mount: it was moved, not copied, so it is cleared. But a program may
 * have written there after the copy was made and before the mount covered it (persist refuses
 * only the writers it sees when it starts), so nothing is cleared that storage does not hold the
 * same (name, type, mode, owner, size, modification time: what cp -a keeps):
 *
 * - what storage lacks is moved into it, in its place (visible through the mount at once), by
 *   the same copy as adoption (root's temporary folder, synced, renamed or linked, never over
 *   anything);
 * - what storage holds differently (changed on the root after the copy) is set aside in storage,
 *   in a root-only folder beside the source (`NAME.impermanence-unsaved-TIME`), and named;
 * - what cannot be either (another filesystem mounted there, a copy that failed, a file changed
 *   again while this ran) stays where it is, hidden under the mount, and is named: unpersist shows
 *   it again (as PATH.impermanence-hidden-TIME).
 *
 * The root's copy is reached through a descriptor opened before the mount (the kernel resolves
 * names below it in the covered folder, not in the mount), storage's through a descriptor of its
 * folder reached without a symlink; every name is looked up in a folder held open (as-root.ts),
 * and each thing is deleted alone (unlink, rmdir of an emptied folder), after its comparison.
 */

/** What clearing left where, by path relative to the persisted path. */
export interface Cleared { moved: string[]; aside: string[]; kept: string[]; asideDir?: string; problem?: string }

/** Whether `a` and `b` (at paths `pa`, `pb`) are the same as far as cp -a keeps: type, mode, owner, size, times, a symlink's target. */
export function sameEntry(a: Stats, b: Stats, pa?: string, pb?: string): boolean {
  const same = a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && (a.isDirectory() || (a.size === b.size && Math.trunc(a.mtimeMs) === Math.trunc(b.mtimeMs)));
  if (!same || !a.isSymbolicLink()) return same;
  return pa !== undefined && pb !== undefined && readlinkSync(pa) === readlinkSync(pb);
}

/** A descriptor of what stands at `path` before the mount covers it (never through a symlink), or undefined. */
export function openCovered(path: string, kind: 'directory' | 'file'): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | (kind === 'directory' ? constants.O_DIRECTORY : 0));
  } catch {
    return undefined;
  }
  // Reached through a symlink in a parent: not the folder the mount will cover.
  if (readlinkSync(at(fd)) !== path) {
    closeSync(fd);
    return undefined;
  }
  return fd;
}

/**
 * Clears the root's copy held by `covered` (see the top), now under the mount at `path`, against
 * storage's copy `source` in the storage folder held by `storageDir`.
 */
export function clearCovered(covered: number, path: string, source: string, storageDir: number, kind: 'directory' | 'file'): Cleared {
  const out: Cleared = { moved: [], aside: [], kept: [] };
  const self = fstatSync(covered);
  const now = statSync(path);
  if (now.dev === self.dev && now.ino === self.ino) return out; // not covered: not ours to clear
  const clearing = new Clearing(source, storageDir, self.dev, out);
  try {
    if (kind === 'file') clearing.file(covered);
    else {
      let store: number;
      try {
        store = openChild(storageDir, basename(source));
      } catch (err) {
        out.problem = `${source}: ${(err as Error).message}`;
        out.kept.push('.');
        return out;
      }
      try {
        clearing.folder(covered, store, '', 'save');
      } finally {
        closeSync(store);
      }
    }
  } finally {
    clearing.close();
  }
  for (const list of [out.moved, out.aside, out.kept]) list.sort();
  return out;
}

class Clearing {
  private temp: TempDir | undefined;
  private aside: number | undefined;

  constructor(
    private readonly source: string,
    private readonly storageDir: number,
    private readonly dev: number,
    private readonly out: Cleared,
  ) {}

  /** A covered file: emptied through its descriptor (it stays: the mount is on it), its content set aside first if storage's differs. */
  file(fd: number): void {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size === 0) return;
    const name = basename(this.source);
    const there = lstatSync(at(this.storageDir, name), { throwIfNoEntry: false });
    if (!there || !sameEntry(st, there)) {
      try {
        const into = this.asideFolder('');
        succeeded('cp', copyTree('/proc/self/fd/3', `/proc/self/fd/4/${name}`, [fd, into], true));
        syncFileSystem(into);
      } catch (err) {
        this.keep(name, err);
        return;
      }
      this.out.aside.push(name);
    }
    const w = openSync(at(fd), constants.O_WRONLY);
    try {
      ftruncateSync(w, 0);
    } finally {
      closeSync(w);
    }
  }

  /**
   * The covered folder `c` against `s`, its place in storage (or, `drop`, against the copy just
   * made of it): what is the same is deleted; in `save`, what differs is saved first, in `drop` kept.
   */
  folder(c: number, s: number, rel: string, mode: 'save' | 'drop'): void {
    const toStorage: string[] = [];
    const toAside: string[] = [];
    for (const name of readdirSync(at(c))) {
      const r = rel ? `${rel}/${name}` : name;
      try {
        const cs = lstatSync(at(c, name), { throwIfNoEntry: false });
        if (!cs) continue;
        if (cs.dev !== this.dev) {
          this.keep(r, new Error('another filesystem is mounted there'));
          continue;
        }
        const ss = lstatSync(at(s, name), { throwIfNoEntry: false });
        if (cs.isDirectory() && ss?.isDirectory()) {
          this.within(c, s, name, r, mode);
        } else if (!cs.isDirectory() && ss && sameEntry(cs, ss, at(c, name), at(s, name))) {
          unlinkSync(at(c, name));
        } else if (mode === 'drop') {
          this.keep(r, new Error('changed while this ran'));
        } else {
          (ss ? toAside : toStorage).push(name);
        }
      } catch (err) {
        this.keep(r, err);
      }
    }
    const relOf = (name: string) => (rel ? `${rel}/${name}` : name);
    if (toStorage.length) {
      // Absent from storage: copied into its place there, never over anything that appeared meanwhile.
      try {
        const taken = this.intoStorage(c, toStorage, s);
        for (const name of toStorage) {
          if (taken.includes(name)) {
            toAside.push(name);
          } else {
            this.out.moved.push(relOf(name));
            this.drop(c, s, name, rel);
          }
        }
      } catch (err) {
        for (const name of toStorage) this.keep(relOf(name), err);
      }
    }
    if (toAside.length) {
      let a: number | undefined;
      try {
        a = this.asideFolder(rel);
        copyNames(c, toAside, a);
        syncFileSystem(a);
        for (const name of toAside) {
          this.out.aside.push(relOf(name));
          this.drop(c, a, name, rel);
        }
      } catch (err) {
        for (const name of toAside) this.keep(relOf(name), err);
      } finally {
        if (a !== undefined && a !== this.aside) closeSync(a);
      }
    }
  }

  /** The folder `name` in both `c` and `s`: cleared, then removed from `c` if that emptied it. */
  private within(c: number, s: number, name: string, r: string, mode: 'save' | 'drop'): void {
    const cc = openChild(c, name);
    try {
      const sc = openChild(s, name);
      try {
        this.folder(cc, sc, r, mode);
      } finally {
        closeSync(sc);
      }
    } finally {
      closeSync(cc);
    }
    try {
      rmdirSync(at(c, name));
    } catch {
      // something in it is kept (and named)
    }
  }

  /** `name` in `c`, just copied to `name` in `copy`: deleted from `c` where it is the same as the copy. */
  private drop(c: number, copy: number, name: string, rel: string): void {
    const r = rel ? `${rel}/${name}` : name;
    try {
      const cs = lstatSync(at(c, name));
      const ks = lstatSync(at(copy, name));
      if (cs.isDirectory() && ks.isDirectory()) this.within(c, copy, name, r, 'drop');
      else if (sameEntry(cs, ks, at(c, name), at(copy, name))) unlinkSync(at(c, name));
      else this.keep(r, new Error('changed while this ran'));
    } catch (err) {
      this.keep(r, err);
    }
  }

  /** `names` from `c` copied into the storage folder `s`, each under its own name; returns those whose name was taken there meanwhile. */
  private intoStorage(c: number, names: string[], s: number): string[] {
    this.temp ??= makeTempDir(this.storageDir, `${basename(tempBeside(this.source, 'adopt'))}.`);
    const temp = this.temp;
    try {
      copyNames(c, names, temp.fd);
    } catch (err) {
      for (const n of readdirSync(at(temp.fd))) removeTree(temp.fd, n);
      throw err;
    }
    syncFileSystem(temp.fd);
    const taken = names.filter((n) => !placeInto(temp, n, s, n));
    for (const n of taken) removeTree(temp.fd, n);
    return taken;
  }

  /** The folder for `rel` in this run's root-only aside folder in storage, made as needed; the caller closes it unless it is the top. */
  private asideFolder(rel: string): number {
    if (this.aside === undefined) {
      const name = `${basename(this.source)}.impermanence-unsaved-${Date.now()}`;
      mkdirSync(at(this.storageDir, name), { mode: 0o700 }); // fails rather than use anything there
      this.aside = openChild(this.storageDir, name);
      this.out.asideDir = `${dirname(this.source)}/${name}`;
    }
    let fd = this.aside;
    for (const part of rel.split('/').filter(Boolean)) {
      try {
        mkdirSync(at(fd, part), { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const next = openChild(fd, part);
      if (fd !== this.aside) closeSync(fd);
      fd = next;
    }
    return fd;
  }

  private keep(r: string, err: unknown): void {
    if (!this.out.kept.includes(r)) this.out.kept.push(r);
    this.out.problem ??= `${r}: ${(err as Error).message}`;
  }

  close(): void {
    if (this.temp) {
      try {
        removeTempDir(this.temp);
      } catch {
        // a leftover of ours, root-only: the next persist of this path removes it
      }
    }
    if (this.aside !== undefined) closeSync(this.aside);
  }
}

/** `cp -a` of `names` in the folder held by `from` into the folder held by `into`, in batches; throws what cp said if one failed. */
function copyNames(from: number, names: string[], into: number): void {
  for (let i = 0; i < names.length; i += 200) {
    const batch = names.slice(i, i + 200).map((n) => `/proc/self/fd/3/${n}`);
    succeeded('cp', runWith(['cp', '-a', '--target-directory=/proc/self/fd/4', '--', ...batch], [from, into]));
  }
}
