import * as z from 'zod/mini';
import { formatBytes } from '../drift/report';
import { printable, printablePath } from '../shared/printable';
import { tildePath } from './config';

/** A drift item as the daemon sends it: (kind, path, detail, files, bytes, suggestion). */
export interface Item {
  kind: string;
  path: string;
  detail: string;
  files: number;
  bytes: number;
  suggestion: string;
}

const Rows = z.array(z.tuple([z.string(), z.string(), z.string(), z.number(), z.bigint(), z.string()]));

/** D-Bus rows a(sssuts) into items; anything else is refused (it came over a bus). */
export function itemsFromRows(rows: unknown): Item[] {
  const parsed = Rows.safeParse(rows);
  if (!parsed.success) throw new Error('drift items are not a(sssuts)');
  return parsed.data.map(([kind, path, detail, files, bytes, suggestion]) => ({ kind, path, detail, files, bytes: Number(bytes), suggestion }));
}

/** A path for a summary: printable, and at most 80 characters (the middle elided). */
function short(path: string): string {
  const p = printablePath(path);
  return p.length <= 80 ? p : `${p.slice(0, 38)}…${p.slice(-41)}`;
}

/** The items that concern a user: inside their home (unless scope is "all"), and not ignored. */
export function concerning(items: Item[], config: { scope: string; ignore: string[] }, home: string): Item[] {
  const under = (p: string, dir: string) => p === dir || p.startsWith(dir === '/' ? '/' : dir + '/');
  return items.filter((i) => (config.scope === 'all' || under(i.path, home)) && !config.ignore.some((d) => under(i.path, d)));
}

export const itemKey = (i: Pick<Item, 'kind' | 'path'>) => `${i.kind}\0${i.path}`;

/** Freedesktop urgency levels. */
export const LOW = 0;
export const NORMAL = 1;
export const CRITICAL = 2;

const URGENCY: Record<string, number> = { unmounted: CRITICAL, replaced: CRITICAL, ephemeral: NORMAL, shadowed: NORMAL, orphan: LOW, attributes: LOW };
const ICON = ['dialog-information', 'dialog-warning', 'dialog-error'] as const;
const ORDER: Record<string, number> = { unmounted: 0, replaced: 1, ephemeral: 2, shadowed: 3, attributes: 4, orphan: 5 };
const MAX_LINES = 5;

export interface Notification {
  summary: string;
  body: string;
  urgency: number;
  icon: string;
  /** Pairs of (key, label), as org.freedesktop.Notifications.Notify wants them. */
  actions: string[];
}

export interface ComposeOptions {
  home: string;
  /** Whether the server takes markup in bodies: then &, < and > in paths must be escaped. */
  markup: boolean;
}

/** Whether the daemon suggests persisting the item as a file (`files = [...]`) rather than a folder. */
const isFile = (i: Item) => /^files = \[/m.test(i.suggestion);

/** Most urgent first, then largest. */
export function ranked(items: Item[]): Item[] {
  return [...items].sort((a, b) => (ORDER[a.kind] ?? 9) - (ORDER[b.kind] ?? 9) || b.bytes - a.bytes || b.files - a.files || (a.path < b.path ? -1 : 1));
}

/** The notification for the drift a user has not been told about yet (`items`, not empty). */
export function compose(items: Item[], o: ComposeOptions): Notification {
  const all = ranked(items);
  const first = all[0]!;
  const shown = (p: string) => short(tildePath(p, o.home));
  const esc = (s: string) => (o.markup ? s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;') : s);
  const urgency = Math.max(...all.map((i) => URGENCY[i.kind] ?? NORMAL));
  const files = (n: number) => `${n.toLocaleString('en')} file${n === 1 ? '' : 's'}`;

  let summary: string;
  let body: string;
  if (all.length === 1) {
    summary = headline(first, shown(first.path), isFile(first), files);
    body = explain({ ...first, detail: printable(first.detail), suggestion: printable(first.suggestion) }, files);
  } else if (all.every((i) => i.kind === 'ephemeral')) {
    const total = all.reduce((n, i) => n + i.files, 0);
    summary = `${files(total)} in ${all.length} places will be lost at reboot`;
    body = listing(all, shown, files) + '\n\nTo keep the first, add to the config (as root, in /etc/impermanence/persist.d/):\n' + printable(first.suggestion);
  } else {
    summary = `${headline(first, shown(first.path), isFile(first), files)} (and ${all.length - 1} more)`;
    body = listing(all, shown, files);
  }
  const ignoreLabel = all.length === 1 ? `Ignore ${shown(first.path)}` : `Ignore these ${all.length}`;
  return {
    summary,
    // Summaries are plain text by the spec; bodies may be markup.
    body: esc(body),
    urgency,
    icon: ICON[urgency]!,
    actions: ['default', 'Details', 'ignore', ignoreLabel],
  };
}

function headline(i: Item, where: string, isFile: boolean, files: (n: number) => string): string {
  switch (i.kind) {
    case 'ephemeral':
      return isFile ? `${where} will be lost at reboot` : `${files(i.files)} in ${where} will be lost at reboot`;
    case 'unmounted':
      return `${where} is not in place: what is written there will be lost at reboot`;
    case 'replaced':
      return `${where} was replaced: its changes will be lost at reboot`;
    case 'orphan':
      return `${formatBytes(i.bytes)} in storage that nothing declares: ${where}`;
    case 'attributes':
      return `Owner or mode in storage differ from the config: ${where}`;
    case 'shadowed':
      return `${files(i.files)} on the root are hidden under ${where} and will be lost at reboot`;
    default:
      return `${where}: ${i.kind}`;
  }
}

function explain(i: Item, files: (n: number) => string): string {
  switch (i.kind) {
    case 'ephemeral':
      return `${files(i.files)}, ${formatBytes(i.bytes)}, written since boot outside every persisted path.\nTo keep them, add to the config (as root, in /etc/impermanence/persist.d/):\n${i.suggestion}`;
    case 'orphan':
      return `${files(i.files)}, ${formatBytes(i.bytes)}. Nothing was deleted; ${i.suggestion}.`;
    default:
      return `${i.detail}.\n${i.suggestion}`;
  }
}

function listing(all: Item[], shown: (p: string) => string, files: (n: number) => string): string {
  const lines = all.slice(0, MAX_LINES).map((i) => {
    const what = i.kind === 'ephemeral' ? `${files(i.files)}, ${formatBytes(i.bytes)}` : i.kind;
    return `• ${shown(i.path)}: ${what}`;
  });
  if (all.length > MAX_LINES) lines.push(`• and ${all.length - MAX_LINES} more (Details)`);
  return lines.join('\n');
}

/** The drift report the Details action opens: every item, in full. */
export function report(items: Item[], home: string): string {
  const shown = (p: string) => printablePath(tildePath(p, home));
  const out = [`Drift that concerns you (${new Date().toISOString()}); the full picture: impermanencectl diff`, ''];
  for (const i of ranked(items)) {
    out.push(`${i.kind}  ${shown(i.path)}`, `  ${printable(i.detail)}`, ...printable(i.suggestion).split('\n').map((l) => `  ${l}`), '');
  }
  return out.join('\n');
}
