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
  const gc = runInNewContext('gc') as (o?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;
  let timer: NodeJS.Timeout | undefined;
  return () => {
    if (timer) {
      timer.refresh();
      return;
    }
    timer = setTimeout(() => {
      timer = undefined;
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' }); // as when memory runs out: compacts, shrinks the young generation
    }, quietMs);
    timer.unref();
  };
}
