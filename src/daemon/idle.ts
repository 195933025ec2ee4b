import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Quiet when idle. V8's memory reducer wakes an idle process several times a second, for as long
 * as it lives, to collect garbage (measured: ~5 wake-ups a second, bench/live.mjs). The daemon's
 * first line turns it off (node --no-memory-reducer: it cannot be turned off once V8 runs;
 * scripts/build.mjs); instead, one full collection runs once the daemon has been quiet for
 * `quietMs` after work (a scan, a burst of live changes: call the returned function after each),
 * which gives the memory back as the reducer would, and no timer is left while nothing happens.
 */
export function collectWhenQuiet(quietMs = 2000): () => void {
  setFlagsFromString('--expose-gc');
  // Called without options: Node 20's V8 reads gc({ type: 'major', … }) as a young-generation
  // scavenge (measured with --trace-gc), which gives nothing back; gc() is a full mark-compact.
  const gc = runInNewContext('gc') as () => void;
  let timer: NodeJS.Timeout | undefined;
  return () => {
    if (timer) {
      timer.refresh();
      return;
    }
    timer = setTimeout(() => {
      timer = undefined;
      gc();
    }, quietMs);
    timer.unref();
  };
}
