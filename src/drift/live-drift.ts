import { EventEmitter } from 'node:events';
import { parentsOf } from '../config/paths';
import type { ResolvedConfig } from '../config/resolve';
import { UserDb } from '../config/userdb';
import { bootTime } from './boot';
import { looseDir, looseKey } from './groups';
import { RootLayout } from './layout';
import { LiveWatcher, type LiveChange } from './live';
import { readMountPoints } from './mountinfo';
import { PathWatch } from './path-watch';
import { foldNested, rank, type DriftItem, type DriftReport } from './report';
import { attributeDrift, entryDrift, storageDrift, storageWalks, type StorageWalk } from './scan';

export interface LiveDriftOptions {
  /** The root watched: "/" or a sandbox's folder. */
  root: string;
  /** Config folders (host paths): not orphans when kept in storage. */
  configDirs: string[];
  /** impermanence-fanotify, for the writes on the root; none: ephemeral drift is known from scans only. */
  watcher?: string;
  /** impermanence-pathwatch, for mount changes and inotify on the persisted paths and storage; none: those are seen by scans only. */
  pathWatcher?: string;
}

export interface LiveDriftEvents {
  /** The drift as it stands now: publish it. */
  drift: [report: DriftReport];
  /** The mounts changed or an entry's path was written to: read the entries' status again (before the next 'drift'). */
  entries: [];
  /** Events were lost (a kernel queue overflowed): only a full scan since `since` knows now. */
  rescan: [since: number];
  log: [level: 'info' | 'warning', message: string];
}

/** What changed, waiting to be looked at: write groups, whether entries or storage roots changed, or events lost. */
interface Pending extends LiveChange { storages: Set<string> }

/**
 * Live drift: keeps the drift report current between scans. Writes on the root (fanotify, one
 * mark for the filesystem: live.ts) are grouped (groups.ts) and each group written to is
 * re-measured; the mount table (polled for POLLPRI, no timer) and the folders holding persisted
 * paths and storage (inotify: path-watch.ts) tell when entries were unmounted or replaced, and
 * when storage gained orphans or a declared folder's owner or mode changed. Changes are
 * looked at one batch at a time: what comes meanwhile is merged into the next batch, never a
 * backlog.
 *
 * When the kernel's inotify watch limit is reached, the paths past it are not watched (a warning
 * says which): what changes there is seen by the next scan.
 */
export class LiveDrift extends EventEmitter<LiveDriftEvents> {
  private writes: LiveWatcher | undefined;
  private paths: PathWatch | undefined;
  private config: ResolvedConfig | undefined;
  private layout: RootLayout | undefined;
  private storages: StorageWalk[] = [];
  /** Writes since this time (seconds since the epoch) count: the boot. */
  private liveSince = 0;
  /** The drift last published. */
  private current: DriftReport = { items: [], scanned: 0, since: 0 };
  /** The ephemeral items, by group (a loose file: by its path). */
  private readonly items = new Map<string, DriftItem>();
  /** Keys of items that are files right inside a known folder, each an item of its own (at most LOOSE_FILES_MAX per folder). */
  private readonly looseItems = new Set<string>();
  private pending: Pending | undefined;
  private busy = false;
  /** Groups written to while a publishing scan ran: the scan may have passed them already. */
  private scanning = false;
  private readonly touched = new Set<string>();
  /** Times events were lost (a kernel queue overflowed), and how many of those a finished full scan started after (-1: no full scan yet). */
  private overflows = 0;
  private covered = -1;
  private scanFrom = 0;
  /** Some persisted paths or storage folders are not watched (the inotify watch limit, or errors). */
  private pathsPartial = false;
  /** Resolved when the changes queued are all looked at (see settled). */
  private idle: Array<() => void> = [];

  constructor(private readonly opts: LiveDriftOptions) {
    super();
  }

  /** Whether the writes on the root are watched (the ephemeral items are current). */
  get watchingWrites(): boolean {
    return this.writes !== undefined;
  }

  /** Since when writes count. */
  get since(): number {
    return this.liveSince;
  }

  /**
   * Starts watching. Resolves whether the writes are watched: false (and scans still work) where
   * the filesystem or the kernel does not allow it. Mounts and storage are watched either way.
   */
  async start(): Promise<boolean> {
    this.liveSince = bootTime();
    if (this.opts.pathWatcher) {
      const paths = new PathWatch(this.opts.pathWatcher);
      paths.on('mounts', () => {
        this.rebuildLayout();
        this.sendWatches();
        this.queue({ entries: true });
      });
      paths.on('change', (p) => this.pathChanged(p));
      paths.on('overflow', () => this.queue({ overflow: true }));
      paths.on('watching', (n, failed, limit) => {
        this.pathsPartial = Boolean(limit || failed);
        if (limit) this.emit('log', 'warning', `The kernel's inotify watch limit (fs.inotify.max_user_watches) was reached at ${limit}: the persisted paths and storage folders past it are not watched (${n} are); what changes there is seen by scans only`);
        else if (failed) this.emit('log', 'warning', `${failed} persisted path or storage folder(s) could not be watched; what changes there is seen by scans only`);
      });
      paths.on('stopped', (code, why) => {
        if (this.paths === paths) this.emit('log', 'warning', `Watching mounts and storage stopped (exit ${code}${why ? ': ' + why : ''}); scans still see them`);
        this.paths = undefined;
      });
      if (await paths.start()) {
        this.paths = paths;
        this.sendWatches();
      }
    }
    if (!this.opts.watcher) return false;
    const live = new LiveWatcher({
      binary: this.opts.watcher,
      root: this.opts.root,
      groupOf: (p) => this.layout?.groupOf(p),
      isEntry: (p) => this.layout?.isEntry(p) ?? false,
    });
    live.on('change', (c) => this.queue(c));
    let stopped = '';
    live.on('stopped', (code, why) => {
      stopped = `exit ${code}${why ? ': ' + why : ''}`;
      if (this.writes === live) {
        this.writes = undefined;
        this.emit('log', 'warning', `Live drift watching stopped (${stopped}); scans still work`);
      }
    });
    if (!(await live.start())) {
      this.emit('log', 'warning', `No live drift watching on ${this.opts.root} (${stopped || 'the watcher did not start'}); scans still work`);
      return false;
    }
    this.writes = live;
    this.emit('log', 'info', `Watching ${this.opts.root} for drift as it happens`);
    return true;
  }

  /**
   * Why the drift kept live may miss something now (undefined: it misses nothing a full scan
   * since boot would find): then only a full scan knows.
   */
  get unsure(): string | undefined {
    if (!this.writes) return 'the writes on the root are not watched';
    if (!this.paths) return 'mounts and storage are not watched';
    if (this.pathsPartial) return 'some persisted paths or storage folders are not watched (the inotify watch limit, or errors)';
    if (this.covered < 0) return 'the first full scan is not done';
    if (this.covered < this.overflows) return 'events were lost (a kernel queue overflowed) since the last full scan';
    return undefined;
  }

  /**
   * A barrier for an answer from the live drift: resolves once every write on the root whose
   * system call returned before this call is in the drift published (the watcher's "sync", then
   * the batches queued looked at). Resolves why it cannot answer from the live drift, or
   * undefined when it can (see unsure).
   */
  async sync(timeoutMs: number): Promise<string | undefined> {
    const writes = this.writes;
    if (this.unsure || !writes) return this.unsure;
    if (!(await writes.sync(timeoutMs))) return `the write watcher did not answer within ${timeoutMs} ms`;
    await this.settled();
    return this.unsure;
  }

  /** Resolves when no batch of changes waits or is being looked at. */
  private settled(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  stop(): void {
    const { writes, paths } = this;
    this.writes = undefined;
    this.paths = undefined;
    writes?.stop();
    paths?.stop();
  }

  /**
   * The config in effect (at start and after every reload). The ephemeral items stay (clearing
   * them would make the next change report every other one resolved): they are grouped by the
   * old config until the next scan regroups them.
   */
  configure(config: ResolvedConfig): void {
    this.config = config;
    this.rebuildLayout();
    this.sendWatches();
  }

  /** The drift just published (by a scan or by this): what the next live report starts from. */
  published(report: DriftReport): void {
    this.current = report;
  }

  /** A publishing scan starts: the groups written to from now on are re-measured after it (see fromScan). */
  scanStarted(): void {
    this.scanning = true;
    this.scanFrom = this.overflows;
    this.touched.clear();
  }

  /**
   * A publishing scan's report, made current: the ephemeral items go on from what it found, with
   * the groups written to while it ran (which it may have passed already) measured again.
   */
  async fromScan(report: DriftReport): Promise<DriftReport> {
    this.scanning = false;
    this.covered = this.scanFrom;
    this.items.clear();
    this.looseItems.clear();
    for (const i of report.items) {
      if (i.kind !== 'ephemeral') continue;
      if (i.loose) {
        this.items.set(looseKey(i.path), i);
        continue;
      }
      const group = this.layout?.groupOf(i.path);
      if (group && looseDir(group) !== undefined) {
        this.items.set(i.path, i);
        this.looseItems.add(i.path);
      } else if (group) this.items.set(group, i);
    }
    const touched = [...this.touched];
    this.touched.clear();
    if (!touched.length || !this.layout || !this.writes) return report;
    for (const group of touched) await this.remeasure(this.layout, group);
    return { ...report, items: rank(foldNested([...report.items.filter((i) => i.kind !== 'ephemeral'), ...this.items.values()])) };
  }

  private rebuildLayout(): void {
    if (!this.config) return;
    this.layout = new RootLayout(this.config, this.opts.root, readMountPoints(), UserDb.read(this.opts.root));
    this.storages = storageWalks(this.layout, this.opts.configDirs);
  }

  /** The folders watched with inotify: those holding entries (on the root), and those in storage holding declared paths. */
  private sendWatches(): void {
    const { layout, paths, config } = this;
    if (!layout || !paths || !config) return;
    const dirs = new Set<string>();
    for (const e of config.entries) dirs.add(layout.host(parentsOf(e.path).pop() ?? '/'));
    for (const s of this.storages) for (const d of s.known) dirs.add(layout.host(d === '/' ? s.storage : s.storage + d));
    paths.watch(dirs);
  }

  /** A change seen by inotify at host path `p`: in a storage root (its orphans and attributes), or an entry's path. */
  private pathChanged(p: string): void {
    const layout = this.layout;
    if (!layout) return;
    for (const s of this.storages) {
      const h = layout.host(s.storage);
      if (p === h || p.startsWith(h + '/')) {
        this.queue({ storages: new Set([s.storage]) });
        return;
      }
    }
    const root = this.opts.root;
    const logical = root === '/' ? p : p === root ? '/' : p.startsWith(root + '/') ? p.slice(root.length) : undefined;
    if (logical !== undefined && (layout.isEntry(logical) || layout.known.has(logical))) this.queue({ entries: true });
  }

  private queue(c: Partial<Pending>): void {
    const p = (this.pending ??= { groups: new Set(), entries: false, overflow: false, storages: new Set() });
    for (const g of c.groups ?? []) p.groups.add(g);
    for (const s of c.storages ?? []) p.storages.add(s);
    p.entries ||= c.entries ?? false;
    if (c.overflow) this.overflows++;
    p.overflow ||= c.overflow ?? false;
    if (this.busy) return;
    this.busy = true;
    void (async () => {
      try {
        while (this.pending) {
          const next = this.pending;
          this.pending = undefined;
          await this.update(next).catch((err: Error) => this.emit('log', 'warning', `Live drift update failed: ${err.message}`));
        }
      } finally {
        this.busy = false;
        for (const resolve of this.idle.splice(0)) resolve();
      }
    })();
  }

  private async update(c: Pending): Promise<void> {
    if (c.overflow) {
      this.emit('rescan', this.liveSince);
      return;
    }
    const { layout, config } = this;
    if (!layout || !config) return;
    for (const group of c.groups) {
      if (this.scanning) this.touched.add(group);
      await this.remeasure(layout, group);
    }
    if (c.entries) this.emit('entries');
    const last = this.current.items;
    const isEntryItem = (i: DriftItem) => i.kind !== 'ephemeral' && i.kind !== 'orphan' && i.kind !== 'attributes';
    const entries = c.entries ? entryDrift(config, this.opts.root, readMountPoints()) : last.filter(isEntryItem);
    const ephemeral = this.writes ? [...this.items.values()] : last.filter((i) => i.kind === 'ephemeral');
    let orphans = last.filter((i) => i.kind === 'orphan');
    let attributes = last.filter((i) => i.kind === 'attributes');
    if (c.storages.size) {
      const inChanged = (path: string) => [...c.storages].some((s) => path === s || path.startsWith(s + '/'));
      orphans = orphans.filter((i) => !inChanged(i.path));
      for (const s of this.storages) if (c.storages.has(s.storage)) orphans.push(...(await storageDrift(layout, s)));
      attributes = attributeDrift(config, this.opts.root, UserDb.read(this.opts.root));
    }
    this.emit('drift', { items: rank(foldNested([...entries, ...ephemeral, ...orphans, ...attributes])), scanned: this.current.scanned, since: this.current.since || this.liveSince });
  }

  /**
   * Replaces the items of `group` (and below it) by what is in it now. The files right inside a
   * known folder (looseKey) are re-measured together: an item each, or one for all.
   */
  private async remeasure(layout: RootLayout, group: string): Promise<void> {
    const dir = looseDir(group);
    if (dir !== undefined) {
      this.items.delete(group);
      for (const key of [...this.looseItems]) {
        if ((key.slice(0, key.lastIndexOf('/')) || '/') !== dir) continue;
        this.items.delete(key);
        this.looseItems.delete(key);
      }
      for (const [key, item] of await layout.measure(group, this.liveSince)) {
        if (!item) continue;
        this.items.set(key, item);
        if (key !== group) this.looseItems.add(key);
      }
      return;
    }
    for (const key of [...this.items.keys()]) {
      if (key !== group && !key.startsWith(group + '/')) continue;
      this.items.delete(key);
      this.looseItems.delete(key);
    }
    const measured = await layout.measure(group, this.liveSince);
    for (const [key, item] of measured) if (item) this.items.set(key, item);
    // A child of a known folder that is gone may have been one of its loose files.
    if (!measured.get(group) && layout.isTopGroup(group)) {
      const loose = looseKey(group.slice(0, group.lastIndexOf('/')) || '/');
      if (this.items.has(loose)) await this.remeasure(layout, loose);
    }
  }
}
