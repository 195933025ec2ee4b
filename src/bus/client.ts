import { DBusError, Message, MessageType, sessionBus, systemBus, Variant, type MessageBus } from '@jellybrick/dbus-next';
import { BusError, NO_OWNER, Unreachable } from './errors';
import { addMatch, nameOwner } from './freedesktop';
import { ALLOW_INTERACTIVE_AUTHORIZATION, BUS_NAME, MANAGER_PATH, MANAGER_SIGNALS_MATCH, nameOwnerMatch, ownerChange } from './names';

/** Client helpers for impermanenced: impermanencectl's and impermanence-notify's calls. */

/** A connection to the system bus (or the address in --bus / DBUS_SYSTEM_BUS_ADDRESS). */
export async function connect(address: string | undefined): Promise<MessageBus> {
  const bus = address ? sessionBus({ busAddress: address }) : systemBus();
  await new Promise<void>((resolve, reject) => {
    (bus as unknown as NodeJS.EventEmitter).once('error', (err: Error) => reject(new Unreachable(`cannot connect to the system bus: ${err.message}`)));
    bus.once('connect', () => resolve());
  });
  (bus as unknown as NodeJS.EventEmitter).on('error', () => undefined);
  return bus;
}

export interface CallOptions {
  path?: string;
  iface: string;
  member: string;
  signature?: string;
  body?: unknown[];
  /** Let polkit ask the user (ALLOW_INTERACTIVE_AUTHORIZATION). */
  interactive?: boolean;
}

/**
 * A call to impermanenced. Throws Unreachable when it is not running, BusError with the
 * error's name and message when it answers with one.
 */
export async function call(bus: MessageBus, opts: CallOptions): Promise<unknown[]> {
  let reply: Message | null;
  try {
    reply = await bus.call(
      new Message({
        destination: BUS_NAME,
        path: opts.path ?? MANAGER_PATH,
        interface: opts.iface,
        member: opts.member,
        signature: opts.signature ?? '',
        body: opts.body ?? [],
        flags: opts.interactive ? ALLOW_INTERACTIVE_AUTHORIZATION : 0,
      }),
    );
  } catch (err) {
    if (err instanceof DBusError) {
      const name = err.type;
      if (NO_OWNER.has(name)) {
        throw new Unreachable(`impermanenced is not running (no owner of ${BUS_NAME} on the system bus): start impermanence.service`);
      }
      throw new BusError(name, err.text || name);
    }
    throw err;
  }
  if (reply?.type === MessageType.ERROR) throw new BusError(reply.errorName, String(reply.body[0] ?? reply.errorName));
  return reply?.body ?? [];
}

/** Variants unwrapped into plain values, recursively. */
export function plain(value: unknown): unknown {
  if (value instanceof Variant) return plain(value.value);
  if (typeof value === 'bigint') return Number(value); // u64 counts and times: exact below 2^53
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

/**
 * Subscribes to the daemon's signals; calls `onSignal` for each. Only those the daemon sent: a
 * signal sent to this connection by name reaches it whatever the match rules, from anyone, so
 * the sender must be the unique name owning BUS_NAME (followed across restarts of the daemon).
 */
export async function subscribe(bus: MessageBus, onSignal: (msg: Message) => void): Promise<void> {
  await addMatch(bus, nameOwnerMatch(BUS_NAME));
  await addMatch(bus, MANAGER_SIGNALS_MATCH);
  let owner = '';
  bus.on('message', (msg: Message) => {
    if (msg.type !== MessageType.SIGNAL) return;
    const changed = ownerChange(msg, BUS_NAME);
    if (changed !== undefined) owner = changed;
    else if (msg.sender === owner && owner && msg.path?.startsWith(MANAGER_PATH)) onSignal(msg);
  });
  owner ||= await nameOwner(bus, BUS_NAME);
}
