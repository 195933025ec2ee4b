/**
 * Logging for impermanenced: journald's native protocol when the journal socket is there,
 * otherwise one `<N>`-prefixed line per entry on stderr (which systemd turns back into a
 * journal entry with that priority).
 *
 * Journal mode sends one datagram per entry to /run/systemd/journal/socket (see
 * systemd.journal-fields(7) and "Native Journal Protocol"): `NAME=value\n`, or for a value
 * containing a newline `NAME\n` + 64-bit little-endian length + value + `\n`.
 *
 * Field names are normalised rather than dropped: upper-cased, every character outside
 * [A-Z0-9_] becomes `_`, leading `_` are removed (those are journald's trusted fields), a
 * leading digit gets an `F_` prefix, and the result is cut to 64 characters. A name that is
 * empty after that is dropped. `MESSAGE`, `PRIORITY` and `SYSLOG_IDENTIFIER` in `fields` are
 * ignored: log()'s arguments and the `identifier` option win. `undefined` values are skipped; numbers and booleans are written with String().
 *
 * An entry larger than `maxDatagramBytes` (default 128 KiB, below Linux's default 208 KiB
 * socket send buffer) gets its MESSAGE cut at a UTF-8 boundary, with `… [truncated]` appended
 * and MESSAGE_TRUNCATED=<original byte length> added. If it is still too large (the other
 * fields are huge), or the send fails for any reason (EAGAIN, EMSGSIZE, journald gone…), the
 * complete entry is written to stderr as in stderr mode. log() never throws.
 *
 * The unix-dgram socket is a libuv poll handle: it keeps the event loop alive until close().
 */
import { statSync } from 'node:fs';
import { stderrIsJournal } from '../shared/journal-stream';

export type Priority = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7; // sd-daemon: emerg … debug
export const LOG_EMERG = 0,
  LOG_ALERT = 1,
  LOG_CRIT = 2,
  LOG_ERR = 3,
  LOG_WARNING = 4,
  LOG_NOTICE = 5,
  LOG_INFO = 6,
  LOG_DEBUG = 7;

export type Fields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  log(priority: Priority, message: string, fields?: Fields): void;
  close(): void;
  readonly mode: 'journal' | 'stderr';
}

export interface LoggerOptions {
  /** SYSLOG_IDENTIFIER; default 'impermanenced'. */
  identifier?: string;
  /** Default /run/systemd/journal/socket. */
  socketPath?: string;
  /** Where stderr-mode lines and fallbacks go; default process.stderr. */
  stderr?: NodeJS.WritableStream;
  forceStderr?: boolean;
  /**
   * Whether stderr lines start with `<N>` (the priority, for journald or the kernel log). Default:
   * when `stderr` is given, when the journal's socket is there (a fallback line under systemd), or
   * when stderr is the journal's stream ($JOURNAL_STREAM); a terminal or a file gets
   * `identifier: message` instead.
   */
  prefix?: boolean;
  /** Largest datagram sent before MESSAGE is truncated; default 128 KiB. */
  maxDatagramBytes?: number;
}

export const DEFAULT_SOCKET = '/run/systemd/journal/socket';
export const DEFAULT_MAX_DATAGRAM = 128 * 1024;
const FIELD_NAME_MAX = 64;
const RESERVED = new Set(['MESSAGE', 'PRIORITY', 'SYSLOG_IDENTIFIER']);
const TRUNCATION_MARK = '… [truncated]';

/** The part of unix-dgram we use (it ships no types). */
interface DgramSocket {
  on(event: 'error', listener: (err: unknown) => void): unknown;
  send(buf: Buffer, offset: number, length: number, path: string, cb: (err?: unknown) => void): void;
  close(): void;
}
interface UnixDgram {
  createSocket(type: 'unix_dgram'): DgramSocket;
}

/** Journal field name for `name`, or undefined when nothing usable is left. */
export function fieldName(name: string): string | undefined {
  let n = name.toUpperCase().replace(/[^A-Z0-9_]/g, '_').replace(/^_+/, '');
  if (/^[0-9]/.test(n)) n = `F_${n}`;
  n = n.slice(0, FIELD_NAME_MAX);
  return n === '' ? undefined : n;
}

/** The user fields as [NAME, value] pairs, normalised, in order. */
function userFields(fields: Fields | undefined): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (!fields) return out;
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const name = fieldName(key);
    if (name === undefined || RESERVED.has(name)) continue;
    out.push([name, String(value)]);
  }
  return out;
}

function encodeField(name: string, value: string): Buffer {
  if (!value.includes('\n')) return Buffer.from(`${name}=${value}\n`, 'utf8');
  const data = Buffer.from(value, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(data.length));
  return Buffer.concat([Buffer.from(`${name}\n`, 'utf8'), len, data, Buffer.from('\n')]);
}

/** The native-protocol datagram for the given fields. */
export function encodeEntry(pairs: Array<[string, string]>): Buffer {
  return Buffer.concat(pairs.map(([n, v]) => encodeField(n, v)));
}

/** Cuts `s` to at most `maxBytes` of UTF-8 without splitting a character. */
function cutUtf8(s: string, maxBytes: number): string {
  const buf = Buffer.from(s, 'utf8');
  if (buf.length <= maxBytes) return s;
  let end = Math.max(0, maxBytes);
  while (end > 0 && ((buf[end] ?? 0) & 0xc0) === 0x80) end--; // back off continuation bytes
  return buf.subarray(0, end).toString('utf8');
}

/** Control characters and backslash as C-style escapes, so one entry stays one line. */
function escapeLine(s: string): string {
  return s.replace(/[\\\x00-\x1f\x7f]/g, (c) => {
    switch (c) {
      case '\\': return '\\\\';
      case '\n': return '\\n';
      case '\r': return '\\r';
      case '\t': return '\\t';
      default: return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
    }
  });
}

/** A field value for the stderr line: bare if unambiguous, else JSON-quoted. */
function quoteValue(v: string): string {
  return v !== '' && /^[^\s"\\=\x00-\x1f\x7f]*$/.test(v) ? v : JSON.stringify(v);
}

/** `<N>message KEY=value …` — the stderr form of an entry, without the trailing newline; `lead` replaces `<N>`. */
export function formatLine(priority: Priority, message: string, pairs: Array<[string, string]>, lead = `<${priority}>`): string {
  let line = `${lead}${escapeLine(message)}`;
  for (const [name, value] of pairs) line += ` ${name}=${quoteValue(value)}`;
  return line;
}

function loadUnixDgram(): UnixDgram | undefined {
  try {
    // Lazy and guarded: a missing or unbuildable native module means stderr mode, not a crash.
    const mod = require('unix-dgram') as UnixDgram;
    return typeof mod?.createSocket === 'function' ? mod : undefined;
  } catch {
    return undefined;
  }
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

function validPriority(p: number): Priority {
  return (Number.isInteger(p) && p >= 0 && p <= 7 ? p : LOG_ERR) as Priority;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const identifier = opts.identifier ?? 'impermanenced';
  const socketPath = opts.socketPath ?? DEFAULT_SOCKET;
  const stderr = opts.stderr ?? process.stderr;
  const maxDatagram = opts.maxDatagramBytes ?? DEFAULT_MAX_DATAGRAM;

  let socket: DgramSocket | undefined;
  if (!opts.forceStderr && isSocket(socketPath)) {
    const dgram = loadUnixDgram();
    try {
      socket = dgram?.createSocket('unix_dgram');
      socket?.on('error', () => {}); // errors come back through send()'s callback; never crash
    } catch {
      socket = undefined;
    }
  }

  // With the journal's socket we run under systemd: a line that falls back to stderr keeps its priority.
  const prefix = opts.prefix ?? (opts.stderr !== undefined || socket !== undefined || stderrIsJournal());

  function writeLine(priority: Priority, message: string, pairs: Array<[string, string]>): void {
    try {
      stderr.write(`${formatLine(priority, message, pairs, prefix ? undefined : `${identifier}: `)}\n`);
    } catch {
      // Nowhere left to report to.
    }
  }

  /** Sends one datagram; true when the kernel took it. */
  function send(buf: Buffer): boolean {
    if (!socket) return false;
    let ok = false;
    try {
      // unix-dgram calls back synchronously, with an error for any failed sendmsg().
      socket.send(buf, 0, buf.length, socketPath, (err) => {
        ok = !err;
      });
    } catch {
      ok = false;
    }
    return ok;
  }

  function log(priority: Priority, message: string, fields?: Fields): void {
    let prio: Priority = LOG_ERR;
    let msg = '';
    let pairs: Array<[string, string]> = [];
    try {
      prio = validPriority(priority);
      msg = String(message);
      pairs = userFields(fields);
      if (!socket) return writeLine(prio, msg, pairs);

      const head: Array<[string, string]> = [
        ['PRIORITY', String(prio)],
        ['SYSLOG_IDENTIFIER', identifier],
      ];
      let buf = encodeEntry([['MESSAGE', msg], ...head, ...pairs]);
      if (buf.length > maxDatagram) {
        const original = Buffer.byteLength(msg, 'utf8');
        const extra: Array<[string, string]> = [['MESSAGE_TRUNCATED', String(original)]];
        const rest = encodeEntry([...head, ...pairs, ...extra]).length;
        // MESSAGE\n + 8-byte length + \n is the worst-case framing.
        const room = maxDatagram - rest - 'MESSAGE\n'.length - 8 - 1 - Buffer.byteLength(TRUNCATION_MARK);
        if (room > 0) {
          const cut = cutUtf8(msg, room) + TRUNCATION_MARK;
          buf = encodeEntry([['MESSAGE', cut], ...head, ...pairs, ...extra]);
        }
      }
      if (buf.length > maxDatagram || !send(buf)) writeLine(prio, msg, pairs);
    } catch {
      writeLine(prio, msg, pairs);
    }
  }

  function close(): void {
    const s = socket;
    socket = undefined;
    try {
      s?.close();
    } catch {
      // already closed
    }
  }

  return {
    log,
    close,
    /** 'journal' while the socket is open; 'stderr' without one, or after close(). */
    get mode(): 'journal' | 'stderr' {
      return socket ? 'journal' : 'stderr';
    },
  };
}
