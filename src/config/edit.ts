/**
 * Edits a TOML config file as text, so that the administrator's comments, order and layout stay
 * as they were: adds a path to a table's `directories`/`files` list, or takes one out. The
 * caller parses and resolves the result before writing it (see activate/persist.ts).
 */

export interface EntryRef {
  storage: string;
  /** users.<name>: the path is relative to that user's home. */
  user?: string;
  kind: 'directory' | 'file';
  /** As written in the list: absolute, or relative to the home under `users`. */
  path: string;
}

const listKey = (kind: EntryRef['kind']) => (kind === 'directory' ? 'directories' : 'files');

/** The table header for an entry, as we write it. */
export function tableHeader(ref: Pick<EntryRef, 'storage' | 'user'>): string {
  const user = ref.user === undefined ? '' : `.users.${/^[A-Za-z0-9_-]+$/.test(ref.user) ? ref.user : JSON.stringify(ref.user)}`;
  return `[persistence.${JSON.stringify(ref.storage)}${user}]`;
}

/** A table header's key path (`[a."b".c]` → a, b, c), or undefined if the line is none. */
function headerKeys(line: string): string[] | undefined {
  const m = /^\s*\[(?!\[)(.*)\]\s*(#.*)?$/.exec(line);
  if (!m) return undefined;
  const keys: string[] = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(\.|$)/gy;
  let k: RegExpExecArray | null;
  const body = m[1]!;
  re.lastIndex = 0;
  while (re.lastIndex < body.length && (k = re.exec(body))) {
    keys.push(k[1] !== undefined ? (JSON.parse(`"${k[1]}"`) as string) : (k[2] ?? k[3]!));
    if (k[4] === '') break;
  }
  return keys;
}

/** The lines [start, end) of the table for `ref`, or undefined if the file has no such table. */
function findTable(lines: string[], ref: Pick<EntryRef, 'storage' | 'user'>): { start: number; end: number } | undefined {
  const want = ['persistence', ref.storage, ...(ref.user === undefined ? [] : ['users', ref.user])].join('\0');
  for (let i = 0; i < lines.length; i++) {
    if (headerKeys(lines[i]!)?.join('\0') !== want) continue;
    let end = i + 1;
    while (end < lines.length && !/^\s*\[/.test(lines[end]!)) end++;
    return { start: i, end };
  }
  return undefined;
}

/**
 * Where the list `key = [ … ]` of a table stands in `text`: the offset of its "[" and of its
 * closing "]", found by scanning strings, comments and nested brackets; undefined if absent.
 */
function findList(text: string, from: number, to: number, key: string): { open: number; close: number } | undefined {
  const re = new RegExp(`^[ \\t]*${key}[ \\t]*=[ \\t]*\\[`, 'gm');
  re.lastIndex = from;
  const m = re.exec(text);
  if (!m || m.index >= to) return undefined;
  const open = m.index + m[0].length - 1;
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '"' || c === "'") {
      const triple = text.startsWith(c.repeat(3), i);
      const quote = triple ? c.repeat(3) : c;
      i += quote.length;
      while (i < text.length && !text.startsWith(quote, i)) i += c === '"' && text[i] === '\\' ? 2 : 1;
      i += quote.length - 1;
    } else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') {
      depth--;
      if (depth === 0) return { open, close: i };
    }
  }
  return undefined;
}

/** `text` with `ref` added to its table's list (the table and the list made if need be), at the end. */
export function addEntry(text: string, ref: EntryRef): string {
  const lines = text.split('\n');
  const table = findTable(lines, ref);
  const item = JSON.stringify(ref.path);
  const key = listKey(ref.kind);
  if (!table) {
    const sep = text === '' || text.endsWith('\n\n') ? '' : text.endsWith('\n') ? '\n' : '\n\n';
    return `${text}${sep}${tableHeader(ref)}\n${key} = [\n  ${item},\n]\n`;
  }
  const offsetOf = (line: number) => lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
  const list = findList(text, offsetOf(table.start + 1), offsetOf(table.end), key);
  if (!list) {
    const at = offsetOf(table.start + 1);
    return `${text.slice(0, at)}${key} = [${item}]\n${text.slice(at)}`;
  }
  const present = items(text, list.open + 1, list.close);
  const multiline = text.slice(list.open, list.close).includes('\n');
  const last = present.at(-1);
  if (!last) {
    if (!multiline) return `${text.slice(0, list.open + 1)}${item}${text.slice(list.close)}`;
    const lineStart = text.lastIndexOf('\n', list.close - 1) + 1;
    return `${text.slice(0, lineStart)}  ${item},\n${text.slice(lineStart)}`;
  }
  const comma = /^[ \t]*,/.exec(text.slice(last[1], list.close));
  const afterLast = comma ? last[1] + comma[0].length : last[1];
  const withComma = (upTo: number) => (comma ? text.slice(0, upTo) : `${text.slice(0, last[1])},${text.slice(last[1], upTo)}`);
  if (!multiline) return `${withComma(afterLast)} ${item}${text.slice(afterLast)}`;
  // One item a line: a line of its own after the last item's line (and its comment), same indent.
  const lineStart = text.lastIndexOf('\n', last[0] - 1) + 1;
  const indent = /^[ \t]*/.exec(text.slice(lineStart))![0];
  let lineEnd = text.indexOf('\n', last[1]);
  if (lineEnd === -1 || lineEnd > list.close) lineEnd = list.close;
  const tail = text.slice(afterLast, lineEnd);
  const closeHere = lineEnd === list.close;
  return `${withComma(afterLast)}${tail}\n${indent}${item},${closeHere ? '\n' : ''}${text.slice(lineEnd)}`;
}

/**
 * `text` without the item for `ref` in its table's list (a bare path, or an inline table whose
 * `directory`/`file` is the path), with what separated it; undefined if it is not there.
 */
export function removeEntry(text: string, ref: EntryRef): string | undefined {
  const lines = text.split('\n');
  const table = findTable(lines, ref);
  if (!table) return undefined;
  const offsetOf = (line: number) => lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0);
  const list = findList(text, offsetOf(table.start + 1), offsetOf(table.end), listKey(ref.kind));
  if (!list) return undefined;
  for (const [start, end] of items(text, list.open + 1, list.close)) {
    const raw = text.slice(start, end);
    if (!matches(raw, ref)) continue;
    // Take the item with its comma, and its line if it had one of its own.
    let s = start;
    let e = end;
    const comma = /^[ \t]*,/.exec(text.slice(e, list.close));
    if (comma) e += comma[0].length;
    const lineStart = text.lastIndexOf('\n', s - 1) + 1;
    const lineEnd = text.indexOf('\n', e);
    if (text.slice(lineStart, s).trim() === '' && text.slice(e, lineEnd === -1 ? undefined : lineEnd).trim() === '' && lineStart > list.open) {
      s = lineStart;
      e = lineEnd + 1;
    } else if (!comma) {
      // The last item on a line: take the comma before it instead.
      const before = /,[ \t]*$/.exec(text.slice(list.open + 1, s));
      if (before) s -= before[0].length;
    } else {
      e += /^[ \t]*/.exec(text.slice(e))![0].length;
    }
    return text.slice(0, s) + text.slice(e);
  }
  return undefined;
}

/** The items of a list between `from` and `to` (offsets), as [start, end) offsets. */
function items(text: string, from: number, to: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = from;
  while (i < to) {
    const c = text[i]!;
    if (/\s|,/.test(c)) {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < to && text[i] !== '\n') i++;
      continue;
    }
    const start = i;
    let depth = 0;
    for (; i < to; i++) {
      const d = text[i]!;
      if (d === '"' || d === "'") {
        i++;
        while (i < to && text[i] !== d) i += d === '"' && text[i] === '\\' ? 2 : 1;
      } else if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') depth--;
      else if (depth === 0 && (d === ',' || d === '\n' || d === '#')) break;
    }
    out.push([start, text.slice(start, i).trimEnd().length + start]);
  }
  return out;
}

function matches(raw: string, ref: EntryRef): boolean {
  const want = JSON.stringify(ref.path);
  if (raw.startsWith('"') || raw.startsWith("'")) return unquote(raw) === ref.path;
  if (!raw.startsWith('{')) return false;
  const key = ref.kind === 'directory' ? 'directory' : 'file';
  const m = new RegExp(`(?:^|[{,\\s])${key}\\s*=\\s*("(?:[^"\\\\]|\\\\.)*"|'[^']*')`).exec(raw);
  return !!m && (unquote(m[1]!) === ref.path || m[1] === want);
}

function unquote(s: string): string {
  if (s.startsWith("'")) return s.slice(1, -1);
  try {
    return JSON.parse(s) as string;
  } catch {
    return s;
  }
}
