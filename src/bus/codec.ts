import * as z from 'zod/mini';
import type { DriftItem, DriftKind } from '../drift/report';

/**
 * Drift items on the bus, encoded and decoded in one place (like fwupd's codec shared by the
 * daemon and its client library), validated both ways:
 *   a(sssutss): (kind, path, detail, files, bytes, suggestion, type)
 * `type` says what the item is on disk, "directory" or "file" ("" when not known: a kind that
 * is not about one path's content), so that no client parses the suggestion text to tell them
 * apart.
 */
export const DRIFT_ROWS = 'a(sssutss)';
export const DRIFT_ROW = '(sssutss)';
/** DriftResolved: (kind, path). */
export const RESOLVED_ROWS = 'a(ss)';

export const DRIFT_KINDS = ['ephemeral', 'unmounted', 'replaced', 'orphan', 'attributes', 'shadowed'] as const satisfies readonly DriftKind[];

export type DriftRow = [kind: string, path: string, detail: string, files: number, bytes: bigint, suggestion: string, type: string];

const U32_MAX = 0xffffffff;

const Row = z.tuple([
  z.enum(DRIFT_KINDS),
  z.string().check(z.minLength(1)),
  z.string(),
  z.number().check(z.int(), z.gte(0), z.lte(U32_MAX)),
  z.bigint().check(z.gte(0n)),
  z.string(),
  z.enum(['directory', 'file', '']),
]);
const Rows = z.array(Row);

/** What a drift item is on disk, as `type` carries it. */
function typeOf(item: DriftItem): DriftRow[6] {
  return item.isDirectory === undefined ? '' : item.isDirectory ? 'directory' : 'file';
}

/** One item as a row; throws on an item that the contract cannot carry (a bug, not input). */
export function toRow(item: DriftItem, counts: { files: number; bytes: number; detail: string } = item): DriftRow {
  const row: DriftRow = [item.kind, item.path, counts.detail, Math.min(counts.files, U32_MAX), BigInt(Math.max(0, Math.round(counts.bytes))), item.suggestion, typeOf(item)];
  const checked = Row.safeParse(row);
  if (!checked.success) throw new Error(`drift item ${JSON.stringify(item.path)} does not fit ${DRIFT_ROW}: ${checked.error.issues[0]?.message ?? ''}`);
  return row;
}

/** Rows from the bus into items; anything that is not a(sssutss) of known kinds is refused (it came over a bus). */
export function itemsFromRows(rows: unknown): DriftItem[] {
  const parsed = Rows.safeParse(rows);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`drift items are not ${DRIFT_ROWS}${issue ? ` (at ${issue.path.join('.')}: ${issue.message})` : ''}`);
  }
  return parsed.data.map(([kind, path, detail, files, bytes, suggestion, type]) => ({
    kind,
    path,
    detail,
    files,
    bytes: Number(bytes),
    suggestion,
    ...(type ? { isDirectory: type === 'directory' } : {}),
  }));
}
