import { Message, type MessageBus, type Variant } from '@jellybrick/dbus-next';
import { DBUS } from './names';

/** The org.freedesktop.DBus calls we make, typed once. */
async function dbus(bus: MessageBus, member: string, body: unknown[]): Promise<unknown[]> {
  const reply = await bus.call(new Message({ ...DBUS, member, signature: 's', body }));
  return reply?.body ?? [];
}

export async function addMatch(bus: MessageBus, rule: string): Promise<void> {
  await dbus(bus, 'AddMatch', [rule]);
}

export async function removeMatch(bus: MessageBus, rule: string): Promise<void> {
  await dbus(bus, 'RemoveMatch', [rule]);
}

/** The unique name owning `name`, or "" when nobody does (or the bus would not say). */
export async function nameOwner(bus: MessageBus, name: string): Promise<string> {
  try {
    return String((await dbus(bus, 'GetNameOwner', [name]))[0] ?? '');
  } catch {
    return '';
  }
}

export async function nameHasOwner(bus: MessageBus, name: string): Promise<boolean> {
  return (await dbus(bus, 'NameHasOwner', [name]))[0] === true;
}

/** Who is behind a bus connection: its user and groups, as the bus daemon vouches for them. */
export interface Caller {
  uid: number;
  gids: number[];
}

/** The user and groups of a bus connection (GetConnectionCredentials). */
export async function callerOf(bus: MessageBus, sender: string): Promise<Caller> {
  const [reply] = await dbus(bus, 'GetConnectionCredentials', [sender]);
  const creds = (reply ?? {}) as Record<string, Variant>;
  const uid = creds.UnixUserID?.value;
  if (typeof uid !== 'number') throw new Error(`the bus did not give the user of ${sender}`);
  const gids = creds.UnixGroupIDs?.value;
  return { uid, gids: Array.isArray(gids) ? (gids as number[]) : [] };
}
