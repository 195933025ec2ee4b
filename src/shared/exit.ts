/**
 * Ends the process with `code` once everything written to stdout and stderr so far has been
 * handed to the kernel.
 *
 * process.exit() alone drops what a pipe has not taken yet: Node queues a write that does not fit
 * in the pipe and gives up on the queue at exit (issue 13.9: `generate --out - | cat` delivered
 * 678,560 of 5,983,230 bytes, with exit status 0). A write's callback runs once every earlier
 * write on the same stream went out, so an empty write per stream is the flush. Exiting then
 * (rather than waiting for the event loop to empty) also ends a process that still holds a
 * handle: a bus connection, a watcher, a signal listener.
 */
export function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  let pending = 2;
  const flushed = () => {
    if (--pending === 0) process.exit(code);
  };
  for (const stream of [process.stdout, process.stderr]) {
    // A stream already gone (EPIPE: the reader left) has nothing left to flush.
    if (stream.destroyed || !stream.writable) flushed();
    else stream.write('', flushed);
  }
}
