import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  createLogger,
  encodeEntry,
  fieldName,
  formatLine,
  LOG_DEBUG,
  LOG_ERR,
  LOG_INFO,
  LOG_NOTICE,
  LOG_WARNING,
} from '../../src/shared/journal';
import { tempDir } from '../helpers';


/** A stderr stand-in that records what is written. */
function sink(opts: { throws?: boolean } = {}) {
  const chunks: string[] = [];
  const stream = {
    write(chunk: string | Uint8Array): boolean {
      if (opts.throws) throw new Error('EPIPE');
      chunks.push(String(chunk));
      return true;
    },
  } as unknown as NodeJS.WritableStream;
  return { stream, text: () => chunks.join(''), lines: () => chunks.join('').split('\n').filter((l) => l !== '') };
}

interface DgramServer {
  on(event: string, listener: (...args: unknown[]) => void): void;
  bind(path: string): void;
  close(): void;
}
const unixDgram = require('unix-dgram') as { createSocket(type: 'unix_dgram', cb?: (buf: Buffer) => void): DgramServer };


describe('field names', () => {
  it.each([
    ['IMPERMANENCE_PATH', 'IMPERMANENCE_PATH'],
    ['impermanence.path', 'IMPERMANENCE_PATH'],
    ['kind-of thing', 'KIND_OF_THING'],
    ['_PID', 'PID'],
    ['__x', 'X'],
    ['9lives', 'F_9LIVES'],
    ['ünïcode', 'N_CODE'],
    ['A'.repeat(80), 'A'.repeat(64)],
  ])('%s → %s', (raw, want) => expect(fieldName(raw)).toBe(want));

  it.each(['', '_', '___'])('%j is dropped', (raw) => expect(fieldName(raw)).toBeUndefined());
});

describe('native protocol encoding', () => {
  it('writes NAME=value lines', () => {
    expect(encodeEntry([['MESSAGE', 'hi'], ['PRIORITY', '6']]).toString()).toBe('MESSAGE=hi\nPRIORITY=6\n');
  });

  it('frames a value with a newline as NAME\\n + le64 length + bytes + \\n', () => {
    const buf = encodeEntry([['MESSAGE', 'a\nü']]);
    const value = Buffer.from('a\nü');
    expect(buf.subarray(0, 8).toString()).toBe('MESSAGE\n');
    expect(buf.readBigUInt64LE(8)).toBe(BigInt(value.length));
    expect(buf.subarray(16, 16 + value.length).equals(value)).toBe(true);
    expect(buf.length).toBe(16 + value.length + 1);
    expect(buf[buf.length - 1]).toBe(0x0a);
  });
});

describe('stderr mode', () => {
  it('is used when there is no socket', () => {
    const err = sink();
    const logger = createLogger({ socketPath: '/nonexistent/journal/socket', stderr: err.stream });
    expect(logger.mode).toBe('stderr');
    logger.log(LOG_INFO, 'persisted /var/lib/foo', { IMPERMANENCE_PATH: '/var/lib/foo', IMPERMANENCE_KIND: 'ephemeral' });
    logger.log(LOG_WARNING, 'two\nlines');
    logger.log(LOG_ERR, 'failed', { 'impermanence.path': '/a b', SKIPPED: undefined, N: 3, OK: false, EMPTY: '' });
    logger.close();
    expect(err.lines()).toEqual([
      '<6>persisted /var/lib/foo IMPERMANENCE_PATH=/var/lib/foo IMPERMANENCE_KIND=ephemeral',
      '<4>two\\nlines',
      '<3>failed IMPERMANENCE_PATH="/a b" N=3 OK=false EMPTY=""',
    ]);
    expect(err.text().endsWith('\n')).toBe(true);
  });

  it('is used with forceStderr even when a socket exists', () => {
    const dir = tempDir();
    const path = join(dir, 'socket');
    const server = unixDgram.createSocket('unix_dgram');
    server.bind(path);
    try {
      const err = sink();
      const logger = createLogger({ socketPath: path, stderr: err.stream, forceStderr: true });
      expect(logger.mode).toBe('stderr');
      logger.log(LOG_DEBUG, 'x');
      logger.close();
      expect(err.lines()).toEqual(['<7>x']);
    } finally {
      server.close();
    }
  });

  it('keeps every entry on one line and escapes control characters and backslashes', () => {
    expect(formatLine(5, 'a\r\nb\tc\\d\x01', [['V', 'x\ny "q"']])).toBe('<5>a\\r\\nb\\tc\\\\d\\x01 V="x\\ny \\"q\\""');
  });

  it('ignores MESSAGE, PRIORITY and SYSLOG_IDENTIFIER fields and clamps a bad priority to LOG_ERR', () => {
    const err = sink();
    const logger = createLogger({ socketPath: '/nonexistent', stderr: err.stream });
    logger.log(LOG_NOTICE, 'real', { MESSAGE: 'fake', PRIORITY: 0, syslog_identifier: 'x', WHO: 'me' });
    logger.log(42 as never, 'odd priority');
    expect(err.lines()).toEqual(['<5>real WHO=me', '<3>odd priority']);
  });

  it('never throws, even when stderr itself throws', () => {
    const logger = createLogger({ socketPath: '/nonexistent', stderr: sink({ throws: true }).stream });
    expect(() => logger.log(LOG_ERR, 'lost')).not.toThrow();
    expect(() => logger.close()).not.toThrow();
    expect(() => logger.close()).not.toThrow();
  });
});

describe('journal mode against a plain datagram socket', () => {
  it('sends one native-protocol datagram per entry', async () => {
    const path = join(tempDir(), 'socket');
    const got: Buffer[] = [];
    const server = unixDgram.createSocket('unix_dgram', (buf) => got.push(Buffer.from(buf)));
    server.bind(path);
    const err = sink();
    const logger = createLogger({ socketPath: path, stderr: err.stream, identifier: 'unit' });
    expect(logger.mode).toBe('journal');
    logger.log(LOG_INFO, 'hello', { IMPERMANENCE_PATH: '/var/lib/foo' });
    logger.close();
    expect(logger.mode).toBe('stderr');
    await new Promise((r) => setTimeout(r, 50));
    server.close();
    expect(got.map(String)).toEqual(['MESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=unit\nIMPERMANENCE_PATH=/var/lib/foo\n']);
    expect(err.text()).toBe('');
  });

  it('falls back to stderr when nobody listens on the socket (ECONNREFUSED)', () => {
    const path = join(tempDir(), 'socket');
    const server = unixDgram.createSocket('unix_dgram');
    server.bind(path);
    server.close(); // the socket file stays, nobody is behind it
    expect(existsSync(path)).toBe(true);
    const err = sink();
    const logger = createLogger({ socketPath: path, stderr: err.stream });
    expect(logger.mode).toBe('journal');
    expect(() => logger.log(LOG_WARNING, 'nobody home', { A: 1 })).not.toThrow();
    logger.close();
    expect(err.lines()).toEqual(['<4>nobody home A=1']);
  });

  it('falls back to stderr, per entry, when the receiver queue is full (EAGAIN)', async () => {
    const path = join(tempDir(), 'socket');
    let received = 0;
    const server = unixDgram.createSocket('unix_dgram', () => received++);
    server.bind(path);
    const err = sink();
    const logger = createLogger({ socketPath: path, stderr: err.stream });
    // Synchronous burst: the server cannot read until this loop yields.
    for (let i = 0; i < 2000; i++) logger.log(LOG_INFO, `burst ${i}`);
    logger.close();
    await new Promise((r) => setTimeout(r, 100));
    server.close();
    const fallback = err.lines();
    expect(fallback.length).toBeGreaterThan(0);
    expect(received).toBeGreaterThan(0);
    expect(received + fallback.length).toBe(2000);
    expect(fallback.every((l) => /^<6>burst \d+$/.test(l))).toBe(true);
  });

  it('degrades to stderr mode when unix-dgram cannot be loaded', () => {
    const path = join(tempDir(), 'socket');
    const server = unixDgram.createSocket('unix_dgram');
    server.bind(path);
    try {
      jest.isolateModules(() => {
        jest.doMock('unix-dgram', () => {
          throw new Error('Cannot find module unix_dgram.node');
        });
        const fresh = require('../../src/shared/journal') as typeof import('../../src/shared/journal');
        const err = sink();
        const logger = fresh.createLogger({ socketPath: path, stderr: err.stream });
        expect(logger.mode).toBe('stderr');
        logger.log(fresh.LOG_INFO, 'still logged');
        expect(err.lines()).toEqual(['<6>still logged']);
      });
    } finally {
      jest.dontMock('unix-dgram');
      server.close();
    }
  });
});
