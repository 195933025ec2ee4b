import { Message, type MessageBus, type Variant } from '@jellybrick/dbus-next';
import type { Caller } from './visibility';

/** The user and groups of a bus connection, as the bus daemon vouches for them. */
export async function callerOf(bus: MessageBus, sender: string): Promise<Caller> {
  const reply = await bus.call(
    new Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'GetConnectionCredentials',
      signature: 's',
      body: [sender],
    }),
  );
  const creds = (reply?.body[0] ?? {}) as Record<string, Variant>;
  const uid = creds.UnixUserID?.value;
  if (typeof uid !== 'number') throw new Error(`the bus did not give the user of ${sender}`);
  const gids = creds.UnixGroupIDs?.value;
  return { uid, gids: Array.isArray(gids) ? (gids as number[]) : [] };
}
