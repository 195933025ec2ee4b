import { EventEmitter } from 'node:events';
import { lstatSync } from 'node:fs';
import { InvalidConfig } from '../config/errors';
import { readConfig } from '../config/read';
import type { Entry, ResolvedConfig } from '../config/resolve';
import { UserDb } from '../config/userdb';
import { bootTime } from '../drift/boot';
import type { LiveDrift } from '../drift/live-drift';
import { foldNested, rank, type DriftItem, type DriftReport } from '../drift/report';
import { scanDrift } from '../drift/scan';
import { LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, type Logger } from '../shared/journal';
import { readMountPoints } from '../drift/mountinfo';
import { entryStatus, generatedMounts, type EntryStatus } from '../drift/state';

export type ManagerState = 'ok' | 'degraded' | 'invalid-config';

/** How old the entries' status read from the system may be when asked for (see Manager.entries). */
export const STATUS_MAX_AGE_MS = 1000;

/** How long an answer from the live drift waits for the write watcher's barrier before a full scan answers instead. */
export const LIVE_SYNC_TIMEOUT_MS = 2000;

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
  /** impermanence-pathwatch, for mount changes and inotify on persisted paths and storage; none: scans only. */
  pathWatcher?: string;
  /** impermanence-walk, for fast scans; none: the walk in Node. */
  walker?: string;
}

/** An entry and how it stands. Keyed by entry.path (the front end maps it to a bus object path). */
export interface EntryView { entry: Entry; status: EntryStatus }

export interface ReloadResult { ok: boolean; problems: string[]; added: EntryView[]; removed: EntryView[] }

/** What changed between two scans: emitted as 'drift'. */
export interface DriftChange { appeared: DriftItem[]; resolved: DriftItem[]; report: DriftReport }

export interface ManagerEvents {
  reloaded: [result: ReloadResult];
  /** An entry's status changed (see generation). */
  status: [];
  drift: [change: DriftChange];
  /** Files scanned so far by the running scan. */
  progress: [scanned: number];
}

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
  /** The user who asked first (0: root, or the daemon itself): the queue it waits in. */
  uid: number;
  /** Who waits for it: the first to ask, then each who asked for the same scan meanwhile. */
  callers: ScanCaller[];
  controller: AbortController;
}

/** One who asked for a scan: a bus name, which may cancel what it asked for (only that). */
interface ScanCaller {
  owner: string;
  onProgress?: (scanned: number) => void;
  resolve: (report: DriftReport) => void;
  reject: (err: Error) => void;
}

/**
 * The config in effect, how each entry stands, the scans (one at a time, taking turns) and the
 * drift published (by scans, and by live drift between them: drift/live-drift.ts). No D-Bus
 * here: the front end (dbus.ts) translates, and maps entries to object paths.
 */
export class Manager extends EventEmitter<ManagerEvents> {
  private config: ResolvedConfig | undefined;
  private views = new Map<string, EntryView>(); // by entry path
  private sorted: EntryView[] = []; // the same, by path
  private problems: string[] = [];
  private lastReport: DriftReport = { items: [], scanned: 0, since: 0 };
  private running: ScanRequest | undefined;
  /** Scans waiting their turn, oldest first. */
  private readonly waiting: ScanRequest[] = [];
  /** When each user's last scan started (a counter), to take turns between users. */
  private readonly lastTurn = new Map<number, number>();
  private turns = 0;
  /** Events were lost while a publishing scan ran, which may have passed where they were: another scan since this time follows it. */
  private rescanAfter: number | undefined;
  private firstLook: Promise<unknown> = Promise.resolve();
  private liveStarted = false;
  /** When the entries' status was last read from the system (Date.now()). */
  private statusAt = -Infinity;
  private gen = 0;

  constructor(
    private readonly opts: ManagerOptions,
    private readonly log: Logger,
    private readonly live: LiveDrift,
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

  /** The entry of a path, its status as last read (for existence and visibility checks). */
  find(path: string): EntryView | undefined {
    return this.views.get(path);
  }

  /** The entry of a path, its status at most STATUS_MAX_AGE_MS old. */
  entry(path: string): EntryView | undefined {
    const view = this.views.get(path);
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
    for (const entry of config.entries) next.set(entry.path, { entry, status: { method: 'bind', state: 'unmounted', unit: '' } });
    const removed = [...this.views.values()].filter((v) => !next.has(v.entry.path));
    const added = [...next.values()].filter((v) => !this.views.has(v.entry.path));
    this.views = next;
    this.sorted = [...next.values()].sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    this.gen++;
    this.refresh();
    this.live.configure(config);
    // A new first look regroups the live items by the new config.
    if (this.live.watchingWrites) this.lookFirst();
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
   * the report is only returned. `owner` (a bus name) may cancel what it asked for: the scan
   * stops when no one waits for it any more.
   */
  scan(since: number | undefined, owner: string, publish = true, onProgress?: (scanned: number) => void, uid = 0): Promise<DriftReport> {
    const when = since ?? bootTime();
    const same = (r: ScanRequest) => r.since === when && r.publish === publish;
    const join = (r: ScanRequest) => new Promise<DriftReport>((resolve, reject) => r.callers.push({ owner, onProgress, resolve, reject }));
    // Not one being stopped (everyone who asked for it cancelled): its callers get Cancelled.
    if (this.running && !this.running.controller.signal.aborted && same(this.running)) return join(this.running);
    const joined = this.waiting.find(same);
    if (joined) return join(joined);
    if (uid !== 0) {
      const queued = this.waiting.filter((r) => r.uid === uid).length;
      if (queued >= MAX_QUEUED_SCANS_PER_USER) {
        return Promise.reject(new ScanBusy(`uid ${uid} already has ${queued} scans waiting (at most ${MAX_QUEUED_SCANS_PER_USER}); try again when one is done`));
      }
    }
    const request: ScanRequest = { since: when, publish, uid, callers: [], controller: new AbortController() };
    const promise = join(request);
    this.waiting.push(request);
    this.nextScan();
    return promise;
  }

  /**
   * The drift since `since` (undefined: the boot) as Scan answers it: from the live drift when it
   * is complete (drift/live-drift.ts: watching writes, mounts and storage, a full scan done and no
   * events lost since) and counts since the boot, after a barrier that puts every write made
   * before the call in it; otherwise, or with `rescan`, a full walk (scan). `live` says which.
   */
  async answer(since: number | undefined, rescan: boolean, owner: string, publish: boolean, uid: number): Promise<{ report: DriftReport; live: boolean }> {
    if (!rescan) {
      const why = await this.liveUnsure(since);
      if (why === undefined) return { report: this.lastReport, live: true };
      this.log.log(LOG_INFO, `Drift asked for: a full scan, not the live drift (${why})`);
    }
    return { report: await this.scan(since, owner, publish, undefined, uid), live: false };
  }

  /** Why the live drift cannot answer for `since` now (see answer), after its barrier; undefined: it can. */
  private async liveUnsure(since: number | undefined): Promise<string | undefined> {
    // Boot times read twice differ by a few ms; a caller's "since the boot" is rounded to seconds.
    const boot = this.live.since;
    if (since !== undefined && Math.abs(since - boot) > 1.5) return 'it counts since the boot, not since the time asked for';
    if (Math.abs(this.lastReport.since - boot) > 1.5) return 'the drift published counts since another time';
    const why = await this.live.sync(LIVE_SYNC_TIMEOUT_MS);
    if (why === undefined && Math.abs(this.lastReport.since - boot) > 1.5) return 'the drift published counts since another time';
    return why;
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
    this.runScan(request).then(
      (report) => request.callers.forEach((c) => c.resolve(report)),
      (err: Error) => request.callers.forEach((c) => c.reject(err)),
    ).finally(() => {
      if (this.running === request) this.running = undefined;
      const again = this.rescanAfter;
      this.rescanAfter = undefined;
      if (again !== undefined) this.rescan(again);
      this.nextScan();
    });
  }

  private async runScan(request: ScanRequest): Promise<DriftReport> {
    const { controller, publish } = request;
    if (publish) this.live.scanStarted();
    const started = performance.now();
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
        for (const c of request.callers) c.onProgress?.(n);
        this.emit('progress', n);
      },
    }).catch((err: Error) => {
      if (controller.signal.aborted) throw new ScanCancelled('the scan was cancelled');
      throw err;
    });
    this.log.log(LOG_INFO, `Full drift scan: ${report.scanned} files walked in ${Math.round(performance.now() - started)} ms`, { IMPERMANENCE_FILES: report.scanned });
    if (publish) {
      report = await this.live.fromScan(report);
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

  /**
   * Cancels what `owner` asked for, waiting or running: its calls get ScanCancelled, and a scan
   * no one else waits for stops (`all`, for root: the running one stops, whoever asked for it).
   */
  cancelScan(owner: string, all: boolean): boolean {
    let cancelled = false;
    /** Rejects owner's calls on r; whether anyone still waits for r. */
    const drop = (r: ScanRequest) => {
      const mine = r.callers.filter((c) => c.owner === owner);
      if (mine.length) {
        cancelled = true;
        r.callers = r.callers.filter((c) => c.owner !== owner);
        for (const c of mine) c.reject(new ScanCancelled('the scan was cancelled'));
      }
      return r.callers.length > 0;
    };
    for (let i = this.waiting.length - 1; i >= 0; i--) if (!drop(this.waiting[i]!)) this.waiting.splice(i, 1);
    const running = this.running;
    if (running && ((running.callers.length && !drop(running)) || all)) {
      running.controller.abort();
      cancelled = true;
    }
    return cancelled;
  }

  /**
   * Starts live drift (drift/live-drift.ts): its reports are published as scans' are, a mount
   * change or a write to an entry's path re-reads the entries' status, lost events make a scan.
   * Resolves whether the writes on the root are watched (scans work either way).
   */
  async startLive(): Promise<boolean> {
    if (this.liveStarted) return this.live.watchingWrites;
    this.liveStarted = true;
    this.live.on('drift', (report) => this.publish(report));
    this.live.on('entries', () => this.refresh());
    this.live.on('rescan', (since) => {
      // A publishing scan running now may have passed the folders where the events were lost:
      // joining it would leave them uncounted (of a million files written at once, 14-57 % were
      // never counted that way, bench/dos.mjs), so a new scan follows it.
      if (this.running?.publish) this.rescanAfter = since;
      else this.rescan(since);
    });
    this.live.on('log', (level, message) => this.log.log(level === 'info' ? LOG_INFO : LOG_WARNING, message));
    if (this.config) this.live.configure(this.config);
    return this.live.start();
  }

  /** A full scan because live events were lost (its report published). */
  private rescan(since: number): void {
    this.scan(since, 'live').catch((err: Error) => this.log.log(LOG_WARNING, `Live drift rescan failed: ${err.message}`));
  }

  stopLive(): void {
    this.live.stop();
  }

  private publish(report: DriftReport): void {
    const key = (i: DriftItem) => `${i.kind}\0${i.path}`;
    const before = new Map(this.lastReport.items.map((i) => [key(i), i]));
    const now = new Map(report.items.map((i) => [key(i), i]));
    const appeared = report.items.filter((i) => !before.has(key(i)));
    const resolved = this.lastReport.items.filter((i) => !now.has(key(i)));
    this.lastReport = report;
    this.live.published(report);
    for (const i of appeared) {
      // An item about a declared entry carries its state and storage, as the start-up entries do.
      const view = i.kind !== 'ephemeral' && i.kind !== 'orphan' ? this.entry(i.path) : undefined;
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
