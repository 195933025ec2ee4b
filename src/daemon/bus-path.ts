/**
 * Object paths for entries, escaped as sd_bus_path_encode() does: every byte that is not an
 * ASCII letter or digit becomes "_" and two lower-case hex digits ("/var/log" → "_2fvar_2flog").
 */
export const MANAGER_PATH = '/org/impermanence/Manager';
export const ENTRY_PREFIX = `${MANAGER_PATH}/entry`;

export function entryObjectPath(path: string): string {
  let out = '';
  for (const byte of Buffer.from(path, 'utf8')) {
    const alnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
    out += alnum ? String.fromCharCode(byte) : '_' + byte.toString(16).padStart(2, '0');
  }
  return `${ENTRY_PREFIX}/${out || '_'}`;
}

/** The entry path of an entry's object path (the inverse of entryObjectPath); undefined for any other path. */
export function entryPathOf(objectPath: string): string | undefined {
  if (!objectPath.startsWith(ENTRY_PREFIX + '/')) return undefined;
  const encoded = objectPath.slice(ENTRY_PREFIX.length + 1);
  if (!/^(?:[A-Za-z0-9]|_[0-9a-f]{2})+$/.test(encoded) || encoded === '_') return undefined;
  const bytes = Buffer.from(encoded.replace(/_([0-9a-f]{2})|([A-Za-z0-9])/g, (_, hex: string | undefined, c: string | undefined) => (hex ? String.fromCharCode(parseInt(hex, 16)) : c!)), 'latin1');
  const path = bytes.toString('utf8');
  // Only the one spelling entryObjectPath makes names an entry.
  return entryObjectPath(path) === objectPath ? path : undefined;
}
