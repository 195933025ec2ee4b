import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';

/**
 * The pipes of our native helpers (impermanence-fanotify, impermanence-pathwatch,
 * impermanence-walk): one line per event, paths with "\n", "\t" and "\\" escaped, and the
 * other control characters and the bytes that are not valid UTF-8 as "\xHH" (a bare "\r" must
 * not end a line; two names must not decode to the same U+FFFD).
 *
 * A byte 0x80-0xff that is not UTF-8 becomes the lone surrogate U+DC80-U+DCFF in the path's
 * string, as Python's surrogateescape does: a path made of any bytes is a distinct string (no
 * valid name decodes to a lone surrogate), so different folders never merge, and escapeLine
 * gives the bytes back. Written out as UTF-8 (D-Bus, JSON text, the journal) such a character
 * shows as U+FFFD; the items stay apart.
 */
export function escapeLine(text: string): string {
  return text.replace(/[\n\t\\]|[\udc80-\udcff]/gu, (c) =>
    c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\\' ? '\\\\' : `\\x${(c.charCodeAt(0) - 0xdc00).toString(16)}`,
  );
}

export function unescapeLine(text: string): string {
  return text.replace(/\\(n|t|\\|x[0-9a-fA-F]{2})/g, (_, c: string) => {
    if (c === 'n') return '\n';
    if (c === 't') return '\t';
    if (c === '\\') return '\\';
    const byte = parseInt(c.slice(1), 16);
    return String.fromCharCode(byte < 0x80 ? byte : 0xdc00 + byte);
  });
}

/**
 * Calls `line(text, start, end)` for each line of a helper's output as it comes (text.slice(start,
 * end), read as UTF-8, without its "\n"), the last one at the end even if no "\n" ends it. Lines
 * end at "\n" only: readline would also end one at a bare "\r", which a file name may hold.
 */
export function eachLine(out: Readable, line: (text: string, start: number, end: number) => void): void {
  let rest = '';
  out.setEncoding('utf8');
  out.on('data', (chunk: string) => {
    const text = rest ? rest + chunk : chunk;
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      line(text, start, nl);
      start = nl + 1;
    }
    rest = text.slice(start);
  });
  out.on('end', () => {
    if (rest) line(rest, 0, rest.length);
    rest = '';
  });
}

/**
 * Starts a helper that says "ready" once it is in place, then reports one line per event (given
 * to `onLine`) and reads requests on its stdin. `ready` resolves true at its "ready" line, false
 * if it could not start or ended first; `onExit` gets its exit code (-1: it never ran) and what
 * it said on stderr.
 */
export function startHelper(
  binary: string,
  args: string[],
  onLine: (line: string) => void,
  onExit: (code: number, why: string) => void,
): { child: ChildProcess; ready: Promise<boolean> } {
  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  // A request written to a helper that just died: its exit says why.
  child.stdin!.on('error', () => undefined);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const ready = new Promise<boolean>((resolve) => {
    let up = false;
    child.once('error', (err) => {
      onExit(-1, err.message);
      resolve(false);
    });
    child.once('exit', (code) => {
      onExit(code ?? -1, stderr.trim());
      if (!up) resolve(false);
    });
    const handle = (line: string) => {
      if (!up && line === 'ready') {
        up = true;
        resolve(true);
      } else onLine(line);
    };
    eachLine(child.stdout!, (text, start, end) => handle(text.slice(start, end)));
  });
  return { child, ready };
}
