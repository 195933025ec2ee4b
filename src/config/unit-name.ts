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

/**
 * The .mount unit name systemd gives the mount point `path` (systemd's unit_name_from_path):
 * the escaped path, or, when that is longer than systemd allows (systemd 250 and later), the
 * escaped path cut to 232 characters, "_", 16 hex digits of a SipHash-2-4 of the whole name
 * under systemd's fixed key, and the suffix (unit_name_hash_long). Such a unit cannot be turned
 * back into its path from the name; systemd knows it by Where=.
 */
export function mountUnitName(path: string): string {
  const name = escapePath(path) + '.mount';
  return name.length > UNIT_NAME_MAX ? hashLongName(name) : name;
}

/** systemd's LONG_UNIT_NAME_HASH_KEY (src/basic/unit-name.c). */
const LONG_NAME_KEY = Buffer.from('ecf237fb58324a32849f069b0d21eb9a', 'hex');
const HASH_CHARS = 16;

/** unit_name_hash_long: a name of at least 256 characters, cut and hashed to 255. */
export function hashLongName(name: string): string {
  const dot = name.lastIndexOf('.');
  const suffix = name.slice(dot); // ".mount"
  // siphash24_string() hashes the terminating NUL too; hexmem() of the little-endian value.
  const h = siphash24(Buffer.concat([Buffer.from(name, 'utf8'), Buffer.of(0)]), LONG_NAME_KEY);
  const le = Buffer.alloc(8);
  le.writeBigUInt64LE(h);
  const keep = UNIT_NAME_MAX + 1 - 1 - (suffix.length - 1) - HASH_CHARS - 2;
  return `${name.slice(0, keep)}_${le.toString('hex')}${suffix}`;
}

/** SipHash-2-4 (Aumasson and Bernstein), as systemd's siphash24(): 64 bits of `data` under a 16-byte key. */
export function siphash24(data: Uint8Array, key: Uint8Array): bigint {
  const M = 0xffffffffffffffffn;
  const rotl = (x: bigint, b: bigint) => ((x << b) | (x >> (64n - b))) & M;
  const k = Buffer.from(key);
  const k0 = k.readBigUInt64LE(0);
  const k1 = k.readBigUInt64LE(8);
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = () => {
    v0 = (v0 + v1) & M; v1 = rotl(v1, 13n); v1 ^= v0; v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & M; v3 = rotl(v3, 16n); v3 ^= v2;
    v0 = (v0 + v3) & M; v3 = rotl(v3, 21n); v3 ^= v0;
    v2 = (v2 + v1) & M; v1 = rotl(v1, 17n); v1 ^= v2; v2 = rotl(v2, 32n);
  };
  const buf = Buffer.from(data);
  const whole = buf.length - (buf.length % 8);
  for (let i = 0; i < whole; i += 8) {
    const m = buf.readBigUInt64LE(i);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  let last = BigInt(buf.length & 0xff) << 56n;
  for (let i = buf.length - 1; i >= whole; i--) last |= BigInt(buf[i]!) << BigInt(8 * (i - whole));
  v3 ^= last;
  round();
  round();
  v0 ^= last;
  v2 ^= 0xffn;
  round();
  round();
  round();
  round();
  return (v0 ^ v1 ^ v2 ^ v3) & M;
}
