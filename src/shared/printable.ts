/**
 * Text as a terminal, a text report or a notification may show it. File names are chosen by
 * whoever created the file, often another user: a newline in one forges a line of output (a fake
 * "Not in place … /etc/shadow" section in root's `impermanencectl diff`), an escape sequence
 * (ESC[2J) drives root's terminal, a bidi override reorders what is read. Control and format
 * characters are written as \u{…}; data (JSON, D-Bus) keeps names raw.
 */

/** Control (C0, C1) and format characters (bidi overrides, zero-width marks), and the Unicode line and paragraph separators. */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/** Printable text whose lines stay lines: for text that is made of lines on purpose (a config suggestion). */
export function printable(text: string): string {
  return text
    .split('\n')
    .map((line) => line.replace(UNPRINTABLE, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`))
    .join('\n');
}

/** Printable text on one line: a path, or anything derived from one; a newline is written \n. */
export function printablePath(path: string): string {
  return printable(path.replace(/\n/g, '\\n'));
}
