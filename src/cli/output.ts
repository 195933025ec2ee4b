/**
 * What impermanencectl prints: text for people (names escaped: they come from whoever wrote the
 * files), or JSON documents for programs (names as they are). Every JSON document is an object
 * with `version` (of its schema, json-schema.ts; bumped on any incompatible change) and
 * lowercase snake_case keys. Pure: each function takes plain data and a printer.
 */
import { entryPathOf } from '../bus/names';
import type { DriftItem } from '../drift/report';
import { printable, printablePath } from '../shared/printable';
import type { JsonMode } from './args';

export type Print = (s: string) => void;

/** The version of every JSON document impermanencectl prints (see json-schema.ts). */
export const JSON_VERSION = 1;

export interface OutputOptions {
  json: JsonMode;
  quiet?: boolean;
  legend?: boolean;
}

/** A JSON document, as --json=pretty (indented) or short (one line). */
export function emit(doc: object, mode: JsonMode, out: Print): void {
  out(JSON.stringify({ version: JSON_VERSION, ...doc }, null, mode === 'short' ? undefined : 2) + '\n');
}

/** `ActiveCount` → `active_count`: D-Bus property names as JSON keys. */
export function snake(name: string): string {
  return name.replace(/USec$/, 'Usec').replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2').toLowerCase();
}

export interface Status {
  Version: string;
  State: string;
  ConfigFiles: string[];
  ConfigProblems: string[];
  StorageRoots: string[];
  EntryCount: number;
  ActiveCount: number;
  DriftCount?: number;
}

/** The status document: `state`, `daemon_version`, counts, storage roots and config. */
export function statusDoc(p: Status) {
  return {
    state: p.State,
    daemon_version: p.Version,
    entry_count: p.EntryCount,
    active_count: p.ActiveCount,
    drift_count: p.DriftCount ?? 0,
    storage_roots: p.StorageRoots,
    config_files: p.ConfigFiles,
    config_problems: p.ConfigProblems,
  };
}

export function printStatus(p: Status, o: OutputOptions, out: Print): void {
  if (o.json !== 'off') return emit(statusDoc(p), o.json, out);
  if (o.quiet) return;
  const shown = (paths: string[]) => paths.map(printablePath);
  out(`State: ${printablePath(p.State)}\n`);
  out(`Version: ${printablePath(p.Version)}\n`);
  out(`Entries: ${p.EntryCount} (${p.ActiveCount} in place)\n`);
  if (p.DriftCount !== undefined) out(`Drift: ${p.DriftCount} item(s)${p.DriftCount ? " (see 'impermanencectl diff')" : ''}\n`);
  out(`Storage: ${shown(p.StorageRoots).join(', ') || '-'}\n`);
  out(`Config: ${p.ConfigFiles.length ? shown(p.ConfigFiles).join('\n        ') : '-'}\n`);
  for (const problem of shown(p.ConfigProblems)) out(`Problem: ${problem}\n`);
}

export interface Entry {
  path: string;
  kind: string;
  state: string;
  storage: string;
  object: string;
}

export function printList(entries: Entry[], o: OutputOptions, out: Print): void {
  if (o.json !== 'off') return emit({ entries }, o.json, out);
  const legend = o.legend !== false && !o.quiet;
  const cells = entries.map((e) => [e.path, e.kind, e.state, e.storage].map(printablePath));
  const widths = [4, 4, 5].map((w, i) => Math.max(w, ...cells.map((c) => c[i]!.length)));
  const row = (cols: string[]) => cols.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd() + '\n';
  if (legend) out(row(['PATH', 'KIND', 'STATE', 'STORAGE']));
  for (const c of cells) out(row(c));
  if (legend) out(`\n${entries.length} entries listed.\n`);
}

/** What `reload` says it did, from the daemon's state after the reload. */
export function printReload(p: Status, o: OutputOptions, out: Print, err: Print): void {
  if (o.json !== 'off') return emit({ reloaded: true, ...statusDoc(p) }, o.json, out);
  if (p.State === 'invalid-config') {
    // Problems go to stderr even with --quiet: reload then exits 1.
    err(`impermanencectl reload: the config is invalid; the last good config stays in effect (${p.EntryCount} entries):\n`);
    for (const problem of p.ConfigProblems) err(`  ${printablePath(problem)}\n`);
    return;
  }
  if (o.quiet) return;
  const files = p.ConfigFiles.length;
  out(`Reloaded: ${p.EntryCount} entries from ${files} config file${files === 1 ? '' : 's'}, ${p.ActiveCount} in place; state ${printablePath(p.State)}.\n`);
}

/** A signal of the daemon, its body already unwrapped into plain values. */
export interface Signal {
  path: string;
  interface: string;
  member: string;
  body: unknown[];
}

type Row = [string, string, string, number, number, string];
const item = ([kind, path, detail, files, bytes, suggestion]: Row) => ({ kind, path, detail, files, bytes, suggestion });

/** One monitor event as data: what happened, in the words of the JSON schema. */
export function eventDoc(s: Signal, time: Date): Record<string, unknown> & { event: string } {
  const at = { time: time.toISOString() };
  const entry = entryPathOf(s.path);
  switch (`${s.interface}.${s.member}`) {
    case 'org.freedesktop.DBus.Properties.PropertiesChanged': {
      const [, changed, invalidated] = s.body as [string, Record<string, unknown>, string[]];
      const properties = Object.fromEntries(Object.entries(changed ?? {}).map(([k, v]) => [snake(k), v]));
      const rest = { properties, invalidated: (invalidated ?? []).map(snake) };
      return entry === undefined ? { ...at, event: 'manager-changed', ...rest } : { ...at, event: 'entry-changed', path: entry, ...rest };
    }
    case 'org.freedesktop.DBus.ObjectManager.InterfacesAdded':
    case 'org.freedesktop.DBus.ObjectManager.InterfacesRemoved': {
      const added = s.member === 'InterfacesAdded';
      const object = String(s.body[0]);
      const props = added ? ((s.body[1] as Record<string, Record<string, unknown>>)['org.impermanence.Entry'] ?? {}) : {};
      const path = typeof props.Path === 'string' ? props.Path : (entryPathOf(object) ?? object);
      return { ...at, event: added ? 'entry-added' : 'entry-removed', path, ...(added ? { kind: props.Kind ?? null, state: props.State ?? null } : {}) };
    }
    case 'org.impermanence.Manager.DriftAppeared':
      return { ...at, event: 'drift-appeared', items: (s.body[0] as Row[]).map(item) };
    case 'org.impermanence.Manager.DriftResolved':
      return { ...at, event: 'drift-resolved', items: (s.body[0] as Array<[string, string]>).map(([kind, path]) => ({ kind, path })) };
    case 'org.impermanence.Manager.ScanProgress':
      return { ...at, event: 'scan-progress', files: Number(s.body[0]) };
    default:
      return { ...at, event: 'other', interface: s.interface, member: s.member, object: s.path, body: s.body };
  }
}

const LABELS: Record<string, string> = { active_count: 'entries in place', entry_count: 'entries', drift_count: 'drift items', config_files: 'config files', config_problems: 'config problems', storage_roots: 'storage roots' };
const label = (key: string) => LABELS[key] ?? key.replace(/_/g, ' ');
const clock = (t: Date) => t.toTimeString().slice(0, 8);
const value = (v: unknown): string => (typeof v === 'string' ? printablePath(v) : Array.isArray(v) ? `[${v.map(value).join(', ')}]` : printable(JSON.stringify(v)));

/** One monitor event as lines for people: `HH:MM:SS what happened`. */
export function eventText(s: Signal, time: Date): string {
  const e = eventDoc(s, time);
  const t = clock(time);
  const lines: string[] = [];
  switch (e.event) {
    case 'manager-changed':
    case 'entry-changed': {
      const props = e.properties as Record<string, unknown>;
      const who = e.event === 'manager-changed' ? 'impermanenced' : printablePath(e.path as string);
      const what = Object.entries(props)
        .filter(([k]) => k !== 'last_scan_since_usec') // the same time as last_scan_since
        .map(([k, v]) => (k === 'last_scan_since' && typeof v === 'number' ? `scanned for drift since ${v ? new Date(v * 1000).toISOString() : 'ever'}` : `${label(k)} ${value(v)}`));
      // Values that depend on who asks are only invalidated: `impermanencectl status` shows them.
      const invalidated = (e.invalidated as string[]).map(label);
      if (invalidated.length) what.push(`${invalidated.join(', ')} changed`);
      if (what.length) lines.push(`${who}: ${what.join('; ')}`);
      break;
    }
    case 'entry-added':
      lines.push(`${printablePath(e.path as string)}: new entry${e.kind ? ` (${value(e.kind)}, ${value(e.state)})` : ''}`);
      break;
    case 'entry-removed':
      lines.push(`${printablePath(e.path as string)}: entry removed`);
      break;
    case 'drift-appeared':
      for (const i of e.items as DriftItem[]) lines.push(`${printablePath(i.path)}: ${i.kind}: ${printablePath(i.detail)}`);
      break;
    case 'drift-resolved':
      for (const i of e.items as Array<{ kind: string; path: string }>) lines.push(`${printablePath(i.path)}: ${i.kind} resolved`);
      break;
    case 'scan-progress':
      lines.push(`scan: ${(e.files as number).toLocaleString('en')} files so far`);
      break;
    default:
      lines.push(`${printablePath(s.path)} ${printable(`${s.interface}.${s.member}`)} ${value(s.body)}`);
  }
  return lines.map((l) => `${t} ${l}\n`).join('');
}

export function printEvent(s: Signal, o: OutputOptions, out: Print, time = new Date()): void {
  if (o.json !== 'off') emit(eventDoc(s, time), 'short', out); // one object per line, always
  else out(eventText(s, time));
}

/** The drift items as JSON carries them: the six public fields, nothing internal. */
export function publicItems(items: DriftItem[]) {
  return items.map(({ kind, path, detail, files, bytes, suggestion }) => ({ kind, path, detail, files, bytes, suggestion }));
}
