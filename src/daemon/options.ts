import { Variant } from '@jellybrick/dbus-next';

/**
 * Bounds on an options dictionary a{sv}, checked before anything else looks at it. No method
 * defines more than a few options; a caller may send hundreds of thousands (200,000 keys cost
 * the daemon ~1.2 CPU-s and 785 MB, issue 13.7). The bus library has decoded the message by the
 * time the daemon sees it (its cost is bounded by the bus's max_message_size); these bounds keep
 * the daemon's own work, and any copy of it, small.
 */
export const MAX_OPTIONS = 64;
/** Keys and values together, in bytes as marshalled (about). */
export const MAX_OPTIONS_BYTES = 64 * 1024;

/**
 * Why `value` is not an acceptable options dictionary, or undefined if it is. Stops at the first
 * key past MAX_OPTIONS or the first byte past MAX_OPTIONS_BYTES: its cost does not grow with what
 * the caller sent.
 */
export function optionsProblem(value: unknown): string | undefined {
  if (!isDictionary(value)) return 'options must be a dictionary a{sv}';
  let keys = 0;
  let budget = MAX_OPTIONS_BYTES;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (++keys > MAX_OPTIONS) return `too many options: at most ${MAX_OPTIONS}`;
    budget = remaining(value[key], budget - Buffer.byteLength(key) - 5);
    if (budget < 0) return `options too large: at most ${MAX_OPTIONS_BYTES} bytes`;
  }
  return undefined;
}

function isDictionary(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Variant) && !Buffer.isBuffer(value);
}

/** `budget` less the size of `value`; stops (negative) as soon as the budget is spent. */
function remaining(value: unknown, budget: number): number {
  if (budget < 0) return budget;
  if (value instanceof Variant) return remaining(value.value, budget - value.signature.length - 2);
  if (typeof value === 'string') return budget - Buffer.byteLength(value) - 5;
  if (Buffer.isBuffer(value)) return budget - value.length - 4;
  if (Array.isArray(value)) {
    let left = budget - 4;
    for (const item of value) if ((left = remaining(item, left)) < 0) break;
    return left;
  }
  if (typeof value === 'object' && value !== null) {
    let left = budget - 4;
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      if ((left = remaining((value as Record<string, unknown>)[key], left - Buffer.byteLength(key) - 5)) < 0) break;
    }
    return left;
  }
  return budget - 8; // numbers, bigints, booleans
}
