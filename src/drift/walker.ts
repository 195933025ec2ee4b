import { spawn } from 'node:child_process';
import { constants, lstatSync } from 'node:fs';
import { closedChain, commonDir, count, groupOf, type Group } from './groups';
import { looseFiles } from './walk';
import { eachLine, unescapeLine } from './helper';

/** The closed folders of one walk kept from the walker's lines; past it, the others are looked at here. */
const MAX_CLOSED = 100_000;

export interface NativeWalk {
  host: (logical: string) => string;
  since: number;
  known: Set<string>;
  skips: { exact: string[]; globs: string[] };
  signal?: AbortSignal;
  /** For tests: counts the characters of the folder paths and path components looked up while grouping (see below). */
  lookups?: { chars: number };
}

/** The closed folders kept, as a tree of path components: a path's closed ancestors are found by going down its components only as far as some closed folder lies below, not by looking up every prefix of it. */
interface ClosedNode {
  children?: Map<string, ClosedNode>;
  st?: { uid: number; gid: number; mode: number };
}

/** How many components path has ("/" none, "/a/b" two). */
function depthOf(path: string): number {
  let n = 0;
  if (path !== '/') for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) n++;
  return n;
}

/**
 * The same walk and grouping as walk(), by impermanence-walk: it walks one filesystem by file
 * descriptors (never following a symlink, even one swapped in during the walk), and prints what
 * it counted per folder as it goes. Folders are grouped here as walk() groups files, line by line
 * as they come, while the walk goes on; the files right inside a known folder, each a group of
 * its own, are listed here at the end (those folders are few and small).
 */
export async function walkNative(binary: string, w: NativeWalk): Promise<{ groups: Map<string, Group>; scanned: number }> {
  const child = spawn(binary, [w.host('/'), String(w.since)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const abort = () => child.kill('SIGTERM');
  w.signal?.addEventListener('abort', abort);
  child.stdin!.on('error', () => undefined); // it may exit before reading: its exit code says why
  child.stdin!.end([...w.skips.exact, ...w.skips.globs.map((g) => `glob ${g}`)].join('\n') + '\n');
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number>((resolve) => {
    child.once('error', (err) => {
      stderr += err.message;
      resolve(-1);
    });
    child.once('exit', (c) => resolve(c ?? -1));
  });

  const groups = new Map<string, Group>();
  const knownDirs: string[] = [];
  // The folders not everyone may list, as the walker found them ("closed" lines, each before
  // any line for it or below it): any other folder it entered is open to all, so no stat of
  // ours per folder. Past MAX_CLOSED of them (a huge tree costs no more memory) the rest are
  // not kept, and a folder not kept is looked at here, once each (forgotten past 100,000).
  // Each line costs about its own length (a deep tree prints long lines: looking up every prefix
  // of each cost depth x length per line, minutes at 4,000 levels): the closed ancestors are found
  // in closedTree, and groupOf sees no more of the path than known folders can decide.
  const closed = new Map<string, { uid: number; gid: number; mode: number }>();
  const closedTree: ClosedNode = {};
  let closedFull = false;
  const counter = w.lookups ?? { chars: 0 };
  // groupOf(path) depends on the first (deepest known folder's depth + 2) components only, and
  // on whether there are more; a path cut after one more component groups the same.
  let knownDepth = 0;
  for (const k of w.known) knownDepth = Math.max(knownDepth, depthOf(k));
  const groupPath = (dir: string) => {
    let end = 0;
    for (let c = 0; c < knownDepth + 3; c++) {
      end = dir.indexOf('/', end + 1);
      if (end < 0) return dir;
    }
    return dir.slice(0, end);
  };
  const modes = new Map<string, { uid: number; gid: number; mode: number } | null>();
  const folderMode = (p: string) => {
    counter.chars += p.length;
    const c = closed.get(p);
    if (c || !closedFull) return c;
    let m = modes.get(p);
    if (m === undefined) {
      if (modes.size >= 100_000) modes.clear();
      const st = lstatSync(w.host(p), { throwIfNoEntry: false });
      modes.set(p, (m = st?.isDirectory() ? { uid: st.uid, gid: st.gid, mode: st.mode } : null));
    }
    return m ?? undefined;
  };
  let scanned = 0;
  // One line: FILES \t BYTES \t PATH, closed \t MODE UID GID \t PATH, or total \t SCANNED \t -.
  const line = (text: string, start: number, end: number) => {
    const t1 = text.indexOf('\t', start);
    const t2 = t1 < 0 ? -1 : text.indexOf('\t', t1 + 1);
    if (t2 < 0 || t2 >= end) return;
    const a = text.slice(start, t1);
    if (a === 'total') {
      scanned = Number(text.slice(t1 + 1, t2));
      return;
    }
    const raw = text.slice(t2 + 1, end);
    const dir = raw.includes('\\') ? unescapeLine(raw) : raw;
    if (a === 'closed') {
      if (closed.size >= MAX_CLOSED) closedFull = true;
      else {
        const [mode, uid, gid] = text.slice(t1 + 1, t2).split(' ').map(Number);
        const st = { uid: uid!, gid: gid!, mode: mode! | constants.S_IFDIR };
        closed.set(dir, st);
        let node = closedTree;
        for (let pos = 0; pos < dir.length - 1; ) {
          let end = dir.indexOf('/', pos + 1);
          if (end < 0) end = dir.length;
          const children = (node.children ??= new Map());
          const name = dir.slice(pos + 1, end);
          let next = children.get(name);
          if (!next) children.set(name, (next = {}));
          node = next;
          pos = end;
        }
        node.st = st;
      }
      return;
    }
    counter.chars += dir.length;
    if (w.known.has(dir)) {
      knownDirs.push(dir);
      return;
    }
    const key = groupOf(groupPath(dir), w.known, () => true);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { files: 0, bytes: 0, isDirectory: true }));
    // The folders from the group's down to this one that not everyone may list (see DriftItem.closed).
    let chain = -1;
    if (closedFull) {
      // Folders not kept may be closed too: each is looked at (folderMode).
      for (let end = key.length; ; end = dir.indexOf('/', end + 1)) {
        const last = end < 0 || end >= dir.length;
        const p = last ? dir : dir.slice(0, end);
        const st = folderMode(p);
        if (st) chain = closedChain(g, p, st, chain);
        if (last) break;
      }
    } else {
      // Down closedTree along dir's components, from "/" (counted only when the group is "/").
      if (closedTree.st && key.length <= 1) chain = closedChain(g, '/', closedTree.st, chain);
      let node = closedTree;
      for (let pos = 0; node.children && pos < dir.length - 1; ) {
        let end = dir.indexOf('/', pos + 1);
        if (end < 0) end = dir.length;
        const name = dir.slice(pos + 1, end);
        counter.chars += name.length;
        const next = node.children.get(name);
        if (!next) break;
        node = next;
        pos = end;
        if (node.st && end >= key.length) chain = closedChain(g, dir.slice(0, end), node.st, chain);
      }
    }
    count(g, chain, Number(a), Number(text.slice(t1 + 1, t2)));
    g.common = commonDir(g.common, dir);
  };
  eachLine(child.stdout!, line);
  const ended = new Promise<void>((resolve) => child.stdout!.once('close', resolve));
  const code = await exited;
  await ended;
  w.signal?.removeEventListener('abort', abort);
  if (w.signal?.aborted) throw new Error('scan cancelled');
  if (code !== 0) throw new Error(`impermanence-walk failed (${code}): ${stderr.trim()}`);

  // The files right inside a known folder: a group each, or one for all of them (see looseFiles).
  const skipped = new Set(w.skips.exact);
  for (const dir of knownDirs) for (const [key, g] of await looseFiles(w.host('/'), dir, w.since, (p) => skipped.has(p))) groups.set(key, g);
  return { groups, scanned };
}
