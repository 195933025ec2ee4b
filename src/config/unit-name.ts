/**
 * Unit names for paths, exactly as `systemd-escape --path` (systemd's unit_name_path_escape):
 * the path is simplified, "/" becomes "-", the leading and trailing "/" are dropped (the root
 * itself is "-"); every byte that is not an ASCII letter, digit, ":", "_" or "." becomes
 * "\xNN", as do "-" and "\", and so does a leading ".".
 */
export function escapePath(path: string): string {
  // Fast path for the common case (normalized, nothing to escape): just swap the slashes.
  if (SIMPLE.test(path)) return path.slice(1).replace(/\//g, '-');
  const trimmed = path.split('/').filter((p) => p !== '' && p !== '.').join('/');
  if (trimmed === '') return '-';
  let out = '';
  const bytes = Buffer.from(trimmed, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === 0x2f) out += '-';
    else if (
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
      c === 0x3a || c === 0x5f || (c === 0x2e && i > 0)
    ) out += String.fromCharCode(c);
    else out += '\\x' + c.toString(16).padStart(2, '0');
  }
  return out;
}

const SIMPLE = /^(?:\/[A-Za-z0-9:_][A-Za-z0-9:_.]*)+$/;

/** systemd's limit on a unit name, suffix included (UNIT_NAME_MAX - 1). */
export const UNIT_NAME_MAX = 255;

/** The .mount unit name systemd gives the mount point `path`, or an error if it is too long. */
export function mountUnitName(path: string): string {
  const name = escapePath(path) + '.mount';
  if (name.length > UNIT_NAME_MAX) {
    throw new Error(`the path is too long for a systemd unit name (${name.length} characters escaped, at most ${UNIT_NAME_MAX})`);
  }
  return name;
}
