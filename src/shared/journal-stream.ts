import { fstatSync } from 'node:fs';

/**
 * Whether stderr is the journal's stream, as systemd's own tools decide it (log.c,
 * stderr_is_journal()): $JOURNAL_STREAM holds "DEVICE:INODE" of the stream systemd connected, and
 * stderr must still be that file (a program run from a service's shell but redirected to a file
 * or a terminal must not prefix). Only then do `<N>` prefixes carry the priority; a person at a
 * terminal or a log file gets the bare message.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}
