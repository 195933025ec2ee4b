/**
 * The daemon's state and drift in the Prometheus text exposition format (version 0.0.4), for
 * node_exporter's textfile collector. Pure: a snapshot in, the file's text out. Every series a
 * rule may use is always present (zeros included), so an alert on it never waits for a first
 * sample; drift paths are never labels (what users write would be unbounded cardinality), entry
 * paths are (the admin's config bounds them).
 */
import type { DriftKind } from '../drift/report';
import type { EntryState } from '../drift/state';

export const DRIFT_KINDS: readonly DriftKind[] = ['ephemeral', 'unmounted', 'replaced', 'shadowed', 'attributes', 'orphan'];
export const ENTRY_STATES: readonly EntryState[] = ['mounted', 'linked', 'unmounted', 'unlinked', 'replaced'];
export const DAEMON_STATES = ['ok', 'degraded', 'invalid-config'] as const;
const IN_PLACE: ReadonlySet<string> = new Set(['mounted', 'linked']);

export interface MetricsEntry { path: string; kind: string; storage: string; state: string }
export interface MetricsDriftItem { kind: string; files: number; bytes: number }

export interface MetricsSnapshot {
  /** impermanencectl's version. */
  version: string;
  /** What impermanenced said; undefined when it could not be reached. */
  daemon?: {
    version: string;
    state: string;
    storageRoots: string[];
    entries: MetricsEntry[];
    drift: MetricsDriftItem[];
    /** Files count as drift when changed after this (seconds since the epoch; 0: all). */
    driftSince: number;
  };
  /** The config on disk, as `impermanencectl check` judges it (what the next boot activates). */
  config: { valid: boolean; problems: number; files: number };
  /** The full scan this run asked for, if any: when it finished, how long it took (seconds). */
  scan?: { finished: number; duration: number };
}

export function renderMetrics(s: MetricsSnapshot): string {
  const out: string[] = [];
  const metric = (name: string, help: string, samples: Array<[Record<string, string>, number]>) => {
    out.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of samples) out.push(`${name}${labelText(labels)} ${numberText(value)}`);
  };
  const d = s.daemon;

  metric('impermanence_build_info', 'Versions of impermanencectl, which wrote this file, and of impermanenced ("" when not reachable).', [
    [{ version: s.version, daemon_version: d?.version ?? '' }, 1],
  ]);
  metric('impermanence_up', 'Whether impermanenced answered on the system bus (1) or not (0).', [[{}, d ? 1 : 0]]);
  metric('impermanence_state', "impermanenced's State: ok, degraded (entries not in place) or invalid-config; all 0 when it is not reachable.",
    DAEMON_STATES.map((state) => [{ state }, d?.state === state ? 1 : 0]));
  metric('impermanence_config_valid', 'Whether the config on disk passes impermanencectl check: what the next boot (or daemon-reload) activates.', [[{}, s.config.valid ? 1 : 0]]);
  metric('impermanence_config_problems', 'Problems impermanencectl check finds in the config on disk.', [[{}, s.config.problems]]);
  metric('impermanence_config_files', 'Config files in effect.', [[{}, s.config.files]]);

  if (d) {
    const storages = [...new Set([...d.storageRoots, ...d.entries.map((e) => e.storage)])].sort();
    const counts = new Map<string, number>();
    for (const e of d.entries) {
      const key = `${e.storage}\0${e.kind}\0${e.state}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const samples: Array<[Record<string, string>, number]> = [];
    for (const storage of storages) {
      for (const kind of ['directory', 'file']) {
        for (const state of ENTRY_STATES) samples.push([{ storage, kind, state }, counts.get(`${storage}\0${kind}\0${state}`) ?? 0]);
      }
    }
    metric('impermanence_entries', 'Persisted entries, by storage root, kind and state (mounted, linked: in place; unmounted, unlinked, replaced: writes there are lost at reboot).', samples);
    metric('impermanence_entry_in_place', 'Whether each persisted entry is in place (mounted, or linked for a symlinked file): 1, or 0.',
      [...d.entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((e) => [{ path: e.path, kind: e.kind, storage: e.storage }, IN_PLACE.has(e.state) ? 1 : 0]));

    const byKind = (pick: (i: MetricsDriftItem) => number) => DRIFT_KINDS.map((kind): [Record<string, string>, number] => [{ kind }, d.drift.filter((i) => i.kind === kind).reduce((n, i) => n + pick(i), 0)]);
    metric('impermanence_drift_items', 'Drift items, by kind (ephemeral: lost at reboot; unmounted, replaced: a persisted path not in place; shadowed; attributes; orphan).', byKind(() => 1));
    metric('impermanence_drift_files', 'Files in drift items, by kind.', byKind((i) => i.files));
    metric('impermanence_drift_bytes', 'Bytes in drift items, by kind.', byKind((i) => i.bytes));
    metric('impermanence_drift_since_timestamp_seconds', 'Files count as drift when changed after this time (the boot, by default); 0: all files.', [[{}, d.driftSince]]);
  }
  if (s.scan) {
    metric('impermanence_last_scan_timestamp_seconds', 'When the last full drift scan (asked for by impermanencectl metrics) finished.', [[{}, s.scan.finished]]);
    metric('impermanence_last_scan_duration_seconds', 'How long that scan took.', [[{}, s.scan.duration]]);
  }
  return out.join('\n') + '\n';
}

/** `{a="x",b="y"}`, values escaped as the format wants: backslash, double quote and line feed. */
function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function numberText(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? '+Inf' : '-Inf';
  return String(value);
}
