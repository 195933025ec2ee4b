import { EventEmitter } from 'node:events';
import { lstatSync, readFileSync } from 'node:fs';
import { InvalidConfig } from '../config/errors';
import { readConfig } from '../config/read';
import type { Entry, ResolvedConfig } from '../config/resolve';
import { UserDb } from '../config/userdb';
import { bootTime } from '../drift/boot';
import { LiveWatcher, type LiveChange } from '../drift/live';
import { foldNested, rank, type DriftItem, type DriftReport } from '../drift/report';
import { looseDir, looseKey } from '../drift/groups';
import { RootLayout } from '../drift/layout';
import { entryDrift, scanDrift } from '../drift/scan';
import { entryObjectPath } from './bus-path';
import { LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, type Logger } from './journal';
import { readMountPoints } from '../drift/mountinfo';
import { entryStatus, generatedMounts, type EntryStatus } from '../drift/state';

export type ManagerState = 'ok' | 'degraded' | 'invalid-config';

/** How old the entries' status read from the system may be when asked for (see Manager.entries). */
export const STATUS_MAX_AGE_MS = 1000;

export interface ManagerOptions {
  /** Config folders, highest priority first. */
  configDirs: string[];
  /** Those of them that must exist (named with impermanence.config=). */
  requiredConfigDirs?: string[];
  /** The root the entries live under: "/" on a real system, a folder for a sandbox (demo, tests). */
  root: string;
  version: string;
  /** impermanence-fanotify, for live drift; none: scans only. */
  watcher?: string;
  /** impermanence-walk, for fast scans; none: the walk in Node. */
  walker?: string;
}

export interface EntryView { entry: Entry; objectPath: string; status: EntryStatus }

export interface ReloadResult { ok: boolean; problems: string[]; added: EntryView[]; removed: EntryView[] }

/** What changed between two scans: emitted as 'drift'. */
export interface DriftChange { appeared: DriftItem[]; resolved: DriftItem[]; report: DriftReport }

export class ScanCancelled extends Error {}
/** A user asked for more scans than may wait (see MAX_QUEUED_SCANS_PER_USER). */
export class ScanBusy extends Error {}

const NOTHING_PERSISTED: ResolvedConfig = { files: [], storages: [], entries: [], driftIgnore: [] };

/** Scans of one user (not root) that may wait while another of theirs runs. */
export const MAX_QUEUED_SCANS_PER_USER = 4;

/** A scan asked for: running, or waiting its turn. */
interface ScanRequest {
  since: number;
  publish: boolean;
  /** The bus name that asked (may cancel it), and its user (0: root, or the daemon itself). */
  owner: string;
  uid: number;
  onProgress?: (scanned: number) => void;
  promise: Promise<DriftReport>;
  resolve: (report: DriftReport) => void;
  reject: (err: Error) => void;
  controller: AbortController;
}

/**
 * The engine: the config in effect and how each entry stands. No D-Bus here: the front end
 * (dbus.ts) translates. Emits 'reloaded' (ReloadResult) after every reload.
 */
export class Manager extends EventEmitter {
  private config: ResolvedConfig | undefined;
  private views = new Map<string, EntryView>(); // by object path
  private sorted: EntryView[] = []; // the same, by path
  private problems: string[] = [];
  private lastReport: DriftReport = { items: [], scanned: 0, since: 0 };
  private running: ScanRequest | undefined;
  /** Scans waiting their turn, oldest first. */
  private readonly waiting: ScanRequest[] = [];
  /** When each user's last scan started (a counter), to take turns between users. */
  private readonly lastTurn = new Map<number, number>();
  private turns = 0;
  // Live drift: the watcher, the layout it groups by, and the ephemeral items it keeps current.
  private live: LiveWatcher | undefined;
  private layout: RootLayout | undefined;
  private readonly liveItems = new Map<string, DriftItem>(); // by group (a loose file: by its path)
  /** Keys of liveItems that are files right inside a known folder, each an item of its own (at most LOOSE_FILES_MAX per folder). */
  private readonly looseItems = new Set<string>();
  /** Live changes are handled one at a time; those that come meanwhile are merged into one. */
  private liveBusy = false;
  private livePending: LiveChange | undefined;
  private liveSince = 0;
  /** Groups written to while a scan ran: the scan may have passed them already. */
  private readonly touchedDuringScan = new Set<string>();
  private firstLook: Promise<unknown> = Promise.resolve();
  private mountPoll: NodeJS.Timeout | undefined;
  private mountinfo = '';
  /** When the entries' status was last read from the system (Date.now()). */
  private statusAt = -Infinity;
  private gen = 0;

  constructor(
    private readonly opts: ManagerOptions,
    private readonly log: Logger,
  ) {
    super();
  }

  get version(): string {
    return this.opts.version;
  }

  get root(): string {
    return this.opts.root;
  }

  get state(): ManagerState {
    return this.stateOf(this.entries());
  }

  /** The state, from entries whose status was just read (to read the system once per call). */
  stateOf(views: EntryView[]): ManagerState {
    if (this.problems.length) return 'invalid-config';
    return views.every((v) => v.status.state === 'mounted' || v.status.state === 'linked') ? 'ok' : 'degraded';
  }

  get configFiles(): string[] {
    return this.config?.files ?? [];
  }

  get configProblems(): string[] {
    return this.problems;
  }

  get storageRoots(): string[] {
    return this.config?.storages.map((s) => s.path) ?? [];
  }

  /**
   * Changes whenever what the entries are or how they stand changed (a reload, a mount, a
   * symlink replaced): what the front end computed from them (per caller) is stale then.
   */
  get generation(): number {
    return this.gen;
  }

  /**
   * Every entry, sorted by path, its status at most STATUS_MAX_AGE_MS old: reading the system
   * (mountinfo, a readlink per file entry) is not done per call, however many calls come.
   * Mount changes and writes to entry paths seen live refresh it at once.
   */
  entries(): EntryView[] {
    if (Date.now() - this.statusAt > STATUS_MAX_AGE_MS) this.refresh();
    return this.sorted;
  }

  /** The entry at an object path, its status as last read (for existence and visibility checks). */
  find(objectPath: string): EntryView | undefined {
    return this.views.get(objectPath);
  }

  /** The entry at an object path, its status at most STATUS_MAX_AGE_MS old. */
  entry(objectPath: string): EntryView | undefined {
    const view = this.views.get(objectPath);
    if (view && Date.now() - this.statusAt > STATUS_MAX_AGE_MS) this.refresh();
    return view;
  }

  /**
   * Re-reads the config. A config that fails to load changes nothing but the problems: the
   * last good config stays in effect (it is what the generator activated at boot).
   */
  reload(): ReloadResult {
    let config: ResolvedConfig;
    try {
      config = readConfig(this.opts.configDirs, this.opts.root, this.opts.requiredConfigDirs);
    } catch (err) {
      if (!(err instanceof InvalidConfig)) throw err;
      this.problems = err.problems.map((p) => p.message);
      this.gen++;
      for (const p of err.problems) {
        this.log.log(LOG_ERR, `Invalid configuration: ${p.message}`, { CONFIG_FILE: p.file, IMPERMANENCE_ENTRY: p.entry });
      }
      const result = { ok: false, problems: this.problems, added: [], removed: [] };
      this.emit('reloaded', result);
      return result;
    }
    this.problems = [];
    this.config = config;
    const next = new Map<string, EntryView>();
    for (const entry of config.entries) {
      const objectPath = entryObjectPath(entry.path);
      next.set(objectPath, { entry, objectPath, status: { method: 'bind', state: 'unmounted', unit: '' } });
    }
    const removed = [...this.views.values()].filter((v) => !next.has(v.objectPath));
    const added = [...next.values()].filter((v) => !this.views.has(v.objectPath));
    this.views = next;
    this.sorted = [...next.values()].sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    this.gen++;
    this.refresh();
    this.rebuildLayout();
    // The live items stay (clearing them would make the next live change report every other one
    // resolved); they are grouped by the old config, so a new first look regroups them afresh.
    if (this.live) this.lookFirst();
    this.log.log(LOG_INFO, `Loaded ${config.entries.length} entries from ${config.files.length} config file(s)`, {
      IMPERMANENCE_CONFIG_FILES: config.files.join(' '),
    });
    for (const v of this.views.values()) {
      if (v.status.state !== 'mounted' && v.status.state !== 'linked') {
        this.log.log(LOG_WARNING, `${v.entry.path} is ${v.status.state}: writes there are lost at reboot`, {
          IMPERMANENCE_PATH: v.entry.path,
          IMPERMANENCE_STATE: v.status.state,
          IMPERMANENCE_STORAGE: v.entry.storage,
        });
      }
    }
    const result = { ok: true, problems: [], added, removed };
    this.emit('reloaded', result);
    return result;
  }

  get drift(): DriftReport {
    return this.lastReport;
  }

  /**
   * A full drift scan. One runs at a time, so no one can start walks in parallel; a caller asking
   * for a scan that is running or waiting (same `since`, same `publish`) joins it. Root's scans
   * (and the daemon's own) go first; users take turns after them, each with at most one scan
   * running and MAX_QUEUED_SCANS_PER_USER waiting (more: ScanBusy), so no user can make root wait
   * for more than the one scan running. `publish`: the report becomes the current drift
   * (GetDrift, DriftCount, the 'drift' event and a journal entry per new item); for other callers
   * the report is only returned. `owner` (a bus name) may cancel the scan it asked for.
   */
  scan(since: number | undefined, owner: string, publish = true, onProgress?: (scanned: number) => void, uid = 0): Promise<DriftReport> {
    const when = since ?? bootTime();
    const same = (r: ScanRequest) => r.since === when && r.publish === publish;
    if (this.running && same(this.running)) return this.running.promise;
    const joined = this.waiting.find(same);
    if (joined) return joined.promise;
    if (uid !== 0) {
      const queued = this.waiting.filter((r) => r.uid === uid).length;
      if (queued >= MAX_QUEUED_SCANS_PER_USER) {
        return Promise.reject(new ScanBusy(`uid ${uid} already has ${queued} scans waiting (at most ${MAX_QUEUED_SCANS_PER_USER}); try again when one is done`));
      }
    }
    let resolve!: (report: DriftReport) => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<DriftReport>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.waiting.push({ since: when, publish, owner, uid, onProgress, promise, resolve, reject, controller: new AbortController() });
    this.nextScan();
    return promise;
  }

  /** Starts the next scan if none runs: root's first (oldest first), then the user whose turn is the oldest. */
  private nextScan(): void {
    if (this.running || !this.waiting.length) return;
    let pick = this.waiting.findIndex((r) => r.uid === 0);
    if (pick < 0) {
      // Each user's oldest waiting scan; of those, the one of the user whose last turn is oldest.
      const seen = new Set<number>();
      let best = Infinity;
      for (const [i, r] of this.waiting.entries()) {
        if (seen.has(r.uid)) continue;
        seen.add(r.uid);
        const turn = this.lastTurn.get(r.uid) ?? -1;
        if (turn < best) {
          best = turn;
          pick = i;
        }
      }
    }
    const request = this.waiting.splice(pick, 1)[0]!;
    if (request.uid !== 0) this.lastTurn.set(request.uid, ++this.turns);
    // Users with nothing waiting any more need no turn kept.
    for (const u of this.lastTurn.keys()) if (u !== request.uid && !this.waiting.some((r) => r.uid === u)) this.lastTurn.delete(u);
    this.running = request;
    this.runScan(request).then(request.resolve, request.reject).finally(() => {
      if (this.running === request) this.running = undefined;
      this.nextScan();
    });
  }

  private async runScan(request: ScanRequest): Promise<DriftReport> {
    const { controller, publish, onProgress } = request;
    let report = await scanDrift({
      root: this.opts.root,
      // With no valid config (invalid since boot), the generator activated nothing: everything
      // written since boot is lost, and the scan says so.
      config: this.config ?? NOTHING_PERSISTED,
      users: UserDb.read(this.opts.root),
      mountPoints: readMountPoints(),
      since: request.since,
      configDirs: this.opts.configDirs,
      walker: this.opts.walker,
      signal: controller.signal,
      onProgress: (n) => {
        onProgress?.(n);
        this.emit('progress', n);
      },
    }).catch((err: Error) => {
      if (controller.signal.aborted) throw new ScanCancelled('the scan was cancelled');
      throw err;
    });
    if (publish) {
      // The live view goes on from what the scan found, and what was written meanwhile.
      this.liveItems.clear();
      this.looseItems.clear();
      for (const i of report.items) {
        if (i.kind !== 'ephemeral') continue;
        if (i.loose) {
          this.liveItems.set(looseKey(i.path), i);
          continue;
        }
        const group = this.layout?.groupOf(i.path);
        if (group && looseDir(group) !== undefined) {
          this.liveItems.set(i.path, i);
          this.looseItems.add(i.path);
        } else if (group) this.liveItems.set(group, i);
      }
      const touched = new Set(this.touchedDuringScan);
      this.touchedDuringScan.clear();
      if (touched.size && this.layout) {
        for (const group of touched) await this.remeasure(this.layout, group);
        const ephemeral = new Set(this.liveItems.values());
        report = { ...report, items: rank(foldNested([...report.items.filter((i) => i.kind !== 'ephemeral'), ...ephemeral])) };
      }
      this.publish(report);
    }
    return report;
  }

  /**
   * The first look: a scan since boot, so that what was written before the daemon started (or
   * restarted) is known too, with or without live watching; again after a reload while live
   * watching runs, to regroup the live items by the new config. Its report becomes the current
   * drift (and the live items). Subscribers get their first view after it.
   */
  lookFirst(): void {
    this.firstLook = this.scan(undefined, 'startup').catch((err: Error) => this.log.log(LOG_WARNING, `The first drift scan failed: ${err.message}`));
  }

  /** Resolves once the first look is done (at once if there was none). */
  get lookedFirst(): Promise<unknown> {
    return this.firstLook;
  }

  /** Cancels the scans `owner` asked for, waiting or running (`all`, for root: also the running one, whoever asked). */
  cancelScan(owner: string, all: boolean): boolean {
    let cancelled = false;
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i]!.owner !== owner) continue;
      this.waiting.splice(i, 1)[0]!.reject(new ScanCancelled('the scan was cancelled'));
      cancelled = true;
    }
    if (this.running && (all || this.running.owner === owner)) {
      this.running.controller.abort();
      cancelled = true;
    }
    return cancelled;
  }

  /**
   * Starts live drift watching: every write on the root is mapped to its group and that group
   * re-measured (bursts coalesced); mounts are re-checked every second, so an unmount is seen.
   * Resolves false (and scans still work) where the filesystem or the kernel does not allow it.
   */
  async startLive(): Promise<boolean> {
    if (!this.opts.watcher) return false;
    this.liveSince = bootTime();
    const live = new LiveWatcher({
      binary: this.opts.watcher,
      root: this.opts.root,
      groupOf: (p) => this.layout?.groupOf(p),
      isEntry: (p) => this.layout?.isEntry(p) ?? false,
    });
    live.on('change', (c: LiveChange) => this.liveChange(c));
    let stopped = '';
    live.on('stopped', (code: number, why: string) => {
      stopped = `exit ${code}${why ? ': ' + why : ''}`;
      if (this.live === live) this.log.log(LOG_WARNING, `Live drift watching stopped (${stopped}); scans still work`);
    });
    const ok = await live.start();
    if (!ok) {
      this.log.log(LOG_WARNING, `No live drift watching on ${this.opts.root} (${stopped || 'the watcher did not start'}); scans still work`);
      return false;
    }
    this.live = live;
    this.mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
    const failed = (err: Error) => this.log.log(LOG_WARNING, `Live drift update failed: ${err.message}`);
    this.mountPoll = setInterval(() => {
      try {
        const now = readFileSync('/proc/self/mountinfo', 'utf8');
        if (now === this.mountinfo) return;
        this.mountinfo = now;
        this.refresh();
        this.rebuildLayout();
        this.liveChange({ groups: new Set(), entries: true, overflow: false });
      } catch (err) {
        failed(err as Error);
      }
    }, 1000);
    this.log.log(LOG_INFO, `Watching ${this.opts.root} for drift as it happens`);
    return true;
  }

  stopLive(): void {
    const live = this.live;
    this.live = undefined;
    live?.stop();
    if (this.mountPoll) clearInterval(this.mountPoll);
  }

  private rebuildLayout(): void {
    if (this.config) this.layout = new RootLayout(this.config, this.opts.root, readMountPoints(), UserDb.read(this.opts.root));
  }

  /**
   * Handles live changes one at a time: a change that comes while one is handled (a burst of
   * writes to a huge group, whose re-measure takes a while) is merged into the next, so that no
   * two re-measures run at once and what waits is one set of groups, never a backlog.
   */
  private liveChange(c: LiveChange): void {
    const p = (this.livePending ??= { groups: new Set(), entries: false, overflow: false });
    for (const g of c.groups) p.groups.add(g);
    p.entries ||= c.entries;
    p.overflow ||= c.overflow;
    if (this.liveBusy) return;
    this.liveBusy = true;
    void (async () => {
      try {
        while (this.livePending) {
          const next = this.livePending;
          this.livePending = undefined;
          await this.onLiveChange(next).catch((err: Error) => this.log.log(LOG_WARNING, `Live drift update failed: ${err.message}`));
        }
      } finally {
        this.liveBusy = false;
      }
    })();
  }

  private async onLiveChange(c: LiveChange): Promise<void> {
    if (c.overflow) {
      await this.scan(this.liveSince, 'live');
      return;
    }
    const layout = this.layout;
    if (!layout || !this.config) return;
    for (const group of c.groups) {
      if (this.running?.publish) this.touchedDuringScan.add(group);
      await this.remeasure(layout, group);
    }
    if (c.entries) this.refresh();
    const last = this.lastReport.items;
    const entries = c.entries ? entryDrift(this.config, this.opts.root, readMountPoints()) : last.filter((i) => i.kind === 'unmounted' || i.kind === 'replaced');
    const others = last.filter((i) => i.kind === 'orphan' || i.kind === 'attributes');
    this.publish({ items: rank(foldNested([...entries, ...this.liveItems.values(), ...others])), scanned: this.lastReport.scanned, since: this.lastReport.since || this.liveSince });
  }

  /**
   * Replaces the live items of `group` (and below it) by what is in it now. The files right
   * inside a known folder (looseKey) are re-measured together: an item each, or one for all.
   */
  private async remeasure(layout: RootLayout, group: string): Promise<void> {
    const dir = looseDir(group);
    if (dir !== undefined) {
      this.liveItems.delete(group);
      for (const key of [...this.looseItems]) {
        if ((key.slice(0, key.lastIndexOf('/')) || '/') !== dir) continue;
        this.liveItems.delete(key);
        this.looseItems.delete(key);
      }
      for (const [key, item] of await layout.measure(group, this.liveSince)) {
        if (!item) continue;
        this.liveItems.set(key, item);
        if (key !== group) this.looseItems.add(key);
      }
      return;
    }
    for (const key of [...this.liveItems.keys()]) {
      if (key !== group && !key.startsWith(group + '/')) continue;
      this.liveItems.delete(key);
      this.looseItems.delete(key);
    }
    const measured = await layout.measure(group, this.liveSince);
    for (const [key, item] of measured) if (item) this.liveItems.set(key, item);
    // A child of a known folder that is gone may have been one of its loose files.
    if (!measured.get(group) && layout.isTopGroup(group)) {
      const loose = looseKey(group.slice(0, group.lastIndexOf('/')) || '/');
      if (this.liveItems.has(loose)) await this.remeasure(layout, loose);
    }
  }

  private publish(report: DriftReport): void {
    const key = (i: DriftItem) => `${i.kind}\0${i.path}`;
    const before = new Map(this.lastReport.items.map((i) => [key(i), i]));
    const now = new Map(report.items.map((i) => [key(i), i]));
    const appeared = report.items.filter((i) => !before.has(key(i)));
    const resolved = this.lastReport.items.filter((i) => !now.has(key(i)));
    this.lastReport = report;
    for (const i of appeared) {
      // An item about a declared entry carries its state and storage, as the start-up entries do.
      const view = i.kind !== 'ephemeral' && i.kind !== 'orphan' ? this.entry(entryObjectPath(i.path)) : undefined;
      const entry = view ? { IMPERMANENCE_STATE: view.status.state, IMPERMANENCE_STORAGE: view.entry.storage } : {};
      this.log.log(i.kind === 'ephemeral' || i.kind === 'orphan' ? LOG_NOTICE : LOG_WARNING, `Drift: ${i.kind} ${i.path}: ${i.detail}`, {
        IMPERMANENCE_DRIFT: i.kind,
        IMPERMANENCE_PATH: i.path,
        IMPERMANENCE_FILES: i.files,
        IMPERMANENCE_BYTES: i.bytes,
        ...entry,
      });
    }
    for (const i of resolved) this.log.log(LOG_INFO, `Drift resolved: ${i.kind} ${i.path}`, { IMPERMANENCE_DRIFT: i.kind, IMPERMANENCE_PATH: i.path });
    this.emit('drift', { appeared, resolved, report } satisfies DriftChange);
  }

  /** Reads every entry's status from the system; a change makes a new generation and a 'status' event. */
  private refresh(): void {
    const mountPoints = readMountPoints();
    const root = this.opts.root;
    const isFile = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
    const generated = generatedMounts(root);
    this.statusAt = Date.now();
    let changed = false;
    for (const v of this.views.values()) {
      const status = entryStatus(v.entry, { mountPoints, root, generated }, isFile);
      const was = v.status;
      if (status.state !== was.state || status.method !== was.method || status.unit !== was.unit) changed = true;
      v.status = status;
    }
    if (changed) {
      this.gen++;
      this.emit('status');
    }
  }
}
