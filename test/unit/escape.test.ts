/** Unit names without systemd: the .mount suffix and the SipHash that long names are cut with (parity with systemd's own tools: test/integration/escape.test.ts). */
import { mountUnitName, siphash24 } from '../../src/config/unit-name';

describe('mountUnitName', () => {
  it('adds .mount', () => {
    expect(mountUnitName('/var/log')).toBe('var-log.mount');
    expect(mountUnitName('/' + 'x'.repeat(249))).toHaveLength(255);
  });
});

describe('long paths: the hash systemd cuts them with (unit_name_hash_long)', () => {
  it('implements SipHash-2-4 (the reference vectors of the SipHash paper)', () => {
    const key = Buffer.from([...Array(16).keys()]);
    expect(siphash24(Buffer.alloc(0), key).toString(16)).toBe('726fdb47dd0e0e31');
    expect(siphash24(Buffer.from([...Array(15).keys()]), key).toString(16)).toBe('a129ca6149be45e5');
    expect(siphash24(Buffer.from([...Array(63).keys()]), key).toString(16)).toBe('958a324ceb064572');
  });
});
