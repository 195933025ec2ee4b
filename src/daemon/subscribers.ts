import { Message, MessageType, type MessageBus } from '@jellybrick/dbus-next';
import type { Caller } from './visibility';

const DBUS = { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus' };
/** At most this many subscriptions per user, and in all: the bus's own limits are far higher. */
export const MAX_PER_USER = 16;
export const MAX_SUBSCRIBERS = 512;

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
    const known = this.subscribers.get(name);
    if (known) {
      known.last = key(rows);
      return;
    }
    const mine = [...this.subscribers.values()].filter((s) => s.caller.uid === caller.uid).length;
    if (mine >= MAX_PER_USER) throw new TooManySubscribers(`uid ${caller.uid} already has ${mine} subscriptions`);
    if (this.subscribers.size >= MAX_SUBSCRIBERS) throw new TooManySubscribers(`${this.subscribers.size} subscriptions already`);
    this.subscribers.set(name, { caller, last: key(rows) });
    await this.dbus('AddMatch', [matchFor(name)]);
    // It may have left before the match rule was in place: then no signal would ever say so.
    const [has] = (await this.dbus('NameHasOwner', [name])) as [boolean];
    if (!has) this.remove(name);
  }

  remove(name: string): boolean {
    if (!this.subscribers.delete(name)) return false;
    this.dbus('RemoveMatch', [matchFor(name)]).catch(() => undefined);
    return true;
  }

  /** Sends each subscriber its view of the drift, if that changed. */
  publish(viewOf: (caller: Caller) => unknown[]): void {
    for (const [name, s] of this.subscribers) {
      const rows = viewOf(s.caller);
      const k = key(rows);
      if (k === s.last) continue;
      s.last = k;
      this.send(name, rows);
    }
  }

  stop(): void {
    this.bus.off('message', this.onMessage);
    for (const name of [...this.subscribers.keys()]) this.remove(name);
  }

  private readonly onMessage = (msg: Message): void => {
    if (msg.type !== MessageType.SIGNAL || msg.sender !== 'org.freedesktop.DBus' || msg.member !== 'NameOwnerChanged') return;
    const [name, , owner] = msg.body as [string, string, string];
    if (owner === '' && this.subscribers.has(name)) this.remove(name);
  };

  private async dbus(member: string, body: unknown[]): Promise<unknown[]> {
    const reply = await this.bus.call(new Message({ ...DBUS, member, signature: 's', body }));
    return reply?.body ?? [];
  }
}

function matchFor(name: string): string {
  return `type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${name}'`;
}

function key(rows: unknown[]): string {
  return JSON.stringify(rows, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
}
