import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * The pipes of our native helpers (impermanence-fanotify, impermanence-pathwatch,
 * impermanence-walk): one line per event, paths with "\n", "\t" and "\\" escaped.
 */
export function escapeLine(text: string): string {
  return text.replace(/[\n\t\\]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : '\\\\'));
}

export function unescapeLine(text: string): string {
  return text.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
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
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!up && line === 'ready') {
        up = true;
        resolve(true);
      } else onLine(line);
    });
  });
  return { child, ready };
}
