import { DBusError, Message, MessageType, sessionBus, systemBus, Variant, type MessageBus } from '@jellybrick/dbus-next';

export const BUS_NAME = 'org.impermanence.Manager';
export const MANAGER_PATH = '/org/impermanence/Manager';
const ALLOW_INTERACTIVE_AUTHORIZATION = 0x4;

/** The daemon could not be reached at all (not running, no bus). */
export class Unreachable extends Error {}
/** The daemon answered with a D-Bus error. */
export class CallFailed extends Error {
  constructor(
    readonly errorName: string,
    message: string,
  ) {
    super(message);
  }
}

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

export async function call(
  bus: MessageBus,
  opts: { path?: string; iface: string; member: string; signature?: string; body?: unknown[]; interactive?: boolean },
): Promise<unknown[]> {
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
      if (name === 'org.freedesktop.DBus.Error.ServiceUnknown' || name === 'org.freedesktop.DBus.Error.NameHasNoOwner') {
        throw new Unreachable('impermanenced is not running (no owner of org.impermanence.Manager on the system bus): start impermanence.service');
      }
      throw new CallFailed(name, err.text || name);
    }
    throw err;
  }
  if (reply?.type === MessageType.ERROR) throw new CallFailed(reply.errorName, String(reply.body[0] ?? reply.errorName));
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

/** Subscribes to the daemon's signals; calls `onSignal` for each. */
export async function subscribe(bus: MessageBus, onSignal: (msg: Message) => void): Promise<void> {
  await bus.call(
    new Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'AddMatch',
      signature: 's',
      body: [`type='signal',sender='${BUS_NAME}',path_namespace='${MANAGER_PATH}'`],
    }),
  );
  bus.on('message', (msg: Message) => {
    if (msg.type === MessageType.SIGNAL && msg.path?.startsWith(MANAGER_PATH)) onSignal(msg);
  });
}
