import { formatMode, parseMode } from '../../src/config/mode';

describe('parseMode', () => {
  it.each([
    ['0755', 0o755],
    ['755', 0o755],
    ['0700', 0o700],
    ['1777', 0o1777],
    ['u=rwx,g=rx,o=', 0o750],
    ['u=rwx,g=,o=', 0o700],
    ['u=rw,go=r', 0o644],
    ['a=rx,u+w', 0o755],
    ['a=rwx,o-rwx', 0o770],
    ['u=rwxs,g=rxs,o=t', 0o7750],
    ['=r', 0o444],
  ])('%s → %o', (text, mode) => {
    expect(parseMode(text)).toBe(mode);
  });

  it.each(['', '0999', '75', 'rwx', 'u=rwz', 'u:rwx', '0o755'])('refuses %j', (text) => {
    expect(() => parseMode(text)).toThrow(/mode/);
  });

  it('formats as four octal digits', () => {
    expect(formatMode(0o750)).toBe('0750');
    expect(formatMode(0o1777)).toBe('1777');
  });
});
