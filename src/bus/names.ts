import type { Message, MessageBus } from '@jellybrick/dbus-next';

/**
 * Every D-Bus name this project speaks, written once (like systemd's bus-locator.c: one locator
 * per service, used by every client): the daemon, impermanencectl and impermanence-notify all
 * take them from here.
 */
export interface BusLocator {
  destination: string;
  path: string;
  interface: string;
}

/** impermanenced on the system bus. */
export const BUS_NAME = 'org.impermanence.Manager';
export const MANAGER_PATH = '/org/impermanence/Manager';
export const MANAGER_IFACE = 'org.impermanence.Manager';
export const ENTRY_IFACE = 'org.impermanence.Entry';
export const ENTRY_PREFIX = `${MANAGER_PATH}/entry`;
export const MANAGER: BusLocator = { destination: BUS_NAME, path: MANAGER_PATH, interface: MANAGER_IFACE };

/** impermanence-notify's name on the session bus (one agent per session). */
export const AGENT_NAME = 'org.impermanence.Notify';

/** The bus itself, the notification server, polkit and systemd. */
export const DBUS: BusLocator = { destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus' };
export const NOTIFICATIONS: BusLocator = { destination: 'org.freedesktop.Notifications', path: '/org/freedesktop/Notifications', interface: 'org.freedesktop.Notifications' };
export const POLKIT: BusLocator = { destination: 'org.freedesktop.PolicyKit1', path: '/org/freedesktop/PolicyKit1/Authority', interface: 'org.freedesktop.PolicyKit1.Authority' };
export const SYSTEMD: BusLocator = { destination: 'org.freedesktop.systemd1', path: '/org/freedesktop/systemd1', interface: 'org.freedesktop.systemd1.Manager' };

export const PROPERTIES_IFACE = 'org.freedesktop.DBus.Properties';
export const OBJECT_MANAGER_IFACE = 'org.freedesktop.DBus.ObjectManager';
export const PEER_IFACE = 'org.freedesktop.DBus.Peer';
export const INTROSPECTABLE_IFACE = 'org.freedesktop.DBus.Introspectable';

/** Message header flags (D-Bus specification). */
export const NO_REPLY_EXPECTED = 0x1;
export const ALLOW_INTERACTIVE_AUTHORIZATION = 0x4;

/**
 * Object paths for entries, escaped as sd_bus_path_encode() does: every byte that is not an
 * ASCII letter or digit becomes "_" and two lower-case hex digits ("/var/log" → "_2fvar_2flog").
 */
export function entryObjectPath(path: string): string {
  let out = '';
  for (const byte of Buffer.from(path, 'utf8')) {
    const alnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
    out += alnum ? String.fromCharCode(byte) : '_' + byte.toString(16).padStart(2, '0');
  }
  return `${ENTRY_PREFIX}/${out || '_'}`;
}

/** The entry path of an entry's object path (the inverse of entryObjectPath); undefined for any other path. */
export function entryPathOf(objectPath: string): string | undefined {
  if (!objectPath.startsWith(ENTRY_PREFIX + '/')) return undefined;
  const encoded = objectPath.slice(ENTRY_PREFIX.length + 1);
  if (!/^(?:[A-Za-z0-9]|_[0-9a-f]{2})+$/.test(encoded) || encoded === '_') return undefined;
  const bytes = Buffer.from(encoded.replace(/_([0-9a-f]{2})|([A-Za-z0-9])/g, (_, hex: string | undefined, c: string | undefined) => (hex ? String.fromCharCode(parseInt(hex, 16)) : c!)), 'latin1');
  const path = bytes.toString('utf8');
  // Only the one spelling entryObjectPath makes names an entry.
  return entryObjectPath(path) === objectPath ? path : undefined;
}

/** Match rule: the owner of `name` changed (the bus's NameOwnerChanged, for that name only). */
export function nameOwnerMatch(name: string): string {
  return `type='signal',sender='${DBUS.destination}',interface='${DBUS.interface}',member='NameOwnerChanged',arg0='${name}'`;
}
/** The new owner of `name` ("" for none) when `msg` is the bus's NameOwnerChanged for it (what nameOwnerMatch lets in); else undefined. */
export function ownerChange(msg: Message, name: string): string | undefined {
  return msg.sender === DBUS.destination && msg.member === 'NameOwnerChanged' && msg.body[0] === name ? String(msg.body[2] ?? '') : undefined;
}
/** Match rule: every NameOwnerChanged. */
export const OWNERS_MATCH = `type='signal',sender='${DBUS.destination}',path='${DBUS.path}',interface='${DBUS.interface}',member='NameOwnerChanged'`;
/** Match rule: every signal of impermanenced. */
export const MANAGER_SIGNALS_MATCH = `type='signal',sender='${BUS_NAME}',path_namespace='${MANAGER_PATH}'`;

export type { MessageBus };
