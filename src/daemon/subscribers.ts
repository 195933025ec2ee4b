import { MessageType, type Message, type MessageBus } from '@jellybrick/dbus-next';
import { addMatch, nameHasOwner, removeMatch } from '../bus/freedesktop';
import { DBUS, OWNERS_MATCH } from '../bus/names';
import type { Caller } from './visibility';

/** At most this many subscriptions per user. In all, the bus's own caps on connections (per user
 * and in total) are the limit: the daemon holds one match rule however many subscribe. */
export const MAX_PER_USER = 16;

interface Subscriber {
  caller: Caller;
  /** What it was last sent, to send nothing when its view did not change. */
  last: string;
}

/** Why a subscription was refused. */
export class TooManySubscribers extends Error {}

/**
 * Bus connections that asked for drift (Subscribe): each is sent, addressed to it alone, the
 * drift it may see, whole, whenever that changes. A subscription ends with Unsubscribe or when the
 * connection leaves the bus. Unicast signals reach no one else, so what one user may see never
 * goes to another (the bus policy also forbids broadcasting them).
 */
export class DriftSubscribers {
  private readonly subscribers = new Map<string, Subscriber>();
  private watching: Promise<void> | undefined;

  constructor(
    private readonly bus: MessageBus,
    private readonly send: (destination: string, rows: unknown[]) => void,
  ) {
    bus.on('message', this.onMessage);
  }

  get size(): number {
    return this.subscribers.size;
  }

  /** Adds (or renews) the subscription of `name`, whose current view is `rows`. */
  async add(name: string, caller: Caller, rows: unknown[]): Promise<void> {
    await this.watchOwners(); // throws, adding nothing, if the bus would not tell who leaves
    const known = this.subscribers.get(name);
    if (known) {
      known.last = key(rows);
      return;
    }
    const mine = [...this.subscribers.values()].filter((s) => s.caller.uid === caller.uid).length;
    if (mine >= MAX_PER_USER) throw new TooManySubscribers(`uid ${caller.uid} already has ${mine} subscriptions`);
    const subscriber: Subscriber = { caller, last: key(rows) };
    this.subscribers.set(name, subscriber);
    const drop = () => {
      if (this.subscribers.get(name) === subscriber) this.subscribers.delete(name);
    };
    try {
      // It may have left before it was in the map: then no NameOwnerChanged would ever say so.
      const has = await nameHasOwner(this.bus, name);
      if (!has) drop();
    } catch (err) {
      drop();
      throw err;
    }
  }

  remove(name: string): boolean {
    return this.subscribers.delete(name);
  }

  /**
   * Sends each subscriber its view of the drift, if that changed. A view is computed once per
   * distinct caller (uid and groups), however many of its connections subscribed.
   */
  publish(viewOf: (caller: Caller) => unknown[]): void {
    const views = new Map<string, { rows: unknown[]; key: string }>();
    for (const [name, s] of this.subscribers) {
      const who = callerKey(s.caller);
      let view = views.get(who);
      if (!view) {
        const rows = viewOf(s.caller);
        views.set(who, (view = { rows, key: key(rows) }));
      }
      if (view.key === s.last) continue;
      s.last = view.key;
      this.send(name, view.rows);
    }
  }

  stop(): void {
    this.bus.off('message', this.onMessage);
    this.subscribers.clear();
    // Every NameOwnerChanged: a subscriber that leaves the bus is forgotten (one rule for all of them).
    if (this.watching) removeMatch(this.bus, OWNERS_MATCH).catch(() => undefined);
    this.watching = undefined;
  }

  /** Adds the NameOwnerChanged match rule, once; a failed attempt is retried at the next add. */
  private watchOwners(): Promise<void> {
    this.watching ??= addMatch(this.bus, OWNERS_MATCH).then(
      () => undefined,
      (err: unknown) => {
        this.watching = undefined;
        throw err;
      },
    );
    return this.watching;
  }

  private readonly onMessage = (msg: Message): void => {
    if (msg.type !== MessageType.SIGNAL || msg.sender !== DBUS.destination || msg.member !== 'NameOwnerChanged') return;
    const [name, , owner] = msg.body as [string, string, string];
    if (owner === '' && this.subscribers.has(name)) this.remove(name);
  };
}

/** Who sees the same drift (and entries): root sees all of it; anyone else by uid and groups. */
export function callerKey(caller: Caller): string {
  if (caller.uid === 0) return '0';
  return `${caller.uid}:${[...new Set(caller.gids)].sort((a, b) => a - b).join(',')}`;
}

function key(rows: unknown[]): string {
  return JSON.stringify(rows, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
}
