/**
 * File modes as impermanence accepts them: octal ("0755", "755", "1777") or chmod's symbolic form
 * ("u=rwx,g=rx,o=", "a+rX", "u=rwx,go="). Symbolic clauses apply to 0000, since the mode is only
 * used when the path is first created. Returns the numeric mode or throws with what is wrong.
 */
export function parseMode(text: string): number {
  if (/^[0-7]{3,4}$/.test(text)) return parseInt(text, 8);
  if (text === '') throw new Error('mode is empty');
  let mode = 0;
  for (const clause of text.split(',')) {
    const m = /^([ugoa]*)([=+-])([rwxXst]*)$/.exec(clause);
    if (!m) {
      throw new Error(
        `mode ${JSON.stringify(text)} is neither octal (such as "0755") nor symbolic (such as "u=rwx,g=rx,o=")`,
      );
    }
    const who = m[1] === '' || m[1]!.includes('a') ? 'ugo' : m[1]!;
    const op = m[2]!;
    let bits = 0;
    for (const w of who) {
      const shift = w === 'u' ? 6 : w === 'g' ? 3 : 0;
      for (const p of m[3]!) {
        if (p === 'r') bits |= 4 << shift;
        else if (p === 'w') bits |= 2 << shift;
        else if (p === 'x' || p === 'X') bits |= 1 << shift;
        else if (p === 's' && w === 'u') bits |= 0o4000;
        else if (p === 's' && w === 'g') bits |= 0o2000;
        else if (p === 't') bits |= 0o1000;
      }
    }
    const mask = who.split('').reduce((acc, w) => acc | (w === 'u' ? 0o4700 : w === 'g' ? 0o2070 : 0o1007), 0);
    if (op === '=') mode = (mode & ~mask) | bits;
    else if (op === '+') mode |= bits;
    else mode &= ~bits;
  }
  return mode;
}

const formatted = new Map<number, string>();
export function formatMode(mode: number): string {
  let text = formatted.get(mode);
  if (text === undefined) formatted.set(mode, (text = mode.toString(8).padStart(4, '0')));
  return text;
}
