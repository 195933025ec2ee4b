/**
 * The errors of the contract (dbus/org.impermanence.Manager.xml lists them), one table, and one
 * error type for a D-Bus error reply: the daemon throws it to answer with an error, clients
 * get it when a call is answered with one.
 */
export const ERRORS = {
  InvalidArgument: 'org.impermanence.Error.InvalidArgument',
  NoSuchEntry: 'org.impermanence.Error.NoSuchEntry',
  NotAuthorized: 'org.impermanence.Error.NotAuthorized',
  NotAuthorizedCanObtain: 'org.impermanence.Error.NotAuthorizedCanObtain',
  InvalidConfig: 'org.impermanence.Error.InvalidConfig',
  Cancelled: 'org.impermanence.Error.Cancelled',
  Busy: 'org.impermanence.Error.Busy',
  PersistFailed: 'org.impermanence.Error.PersistFailed',
  Failed: 'org.impermanence.Error.Failed',
} as const;

/** The bus's own errors that we send or recognize. */
export const DBUS_ERRORS = {
  InvalidArgs: 'org.freedesktop.DBus.Error.InvalidArgs',
  UnknownMethod: 'org.freedesktop.DBus.Error.UnknownMethod',
  UnknownObject: 'org.freedesktop.DBus.Error.UnknownObject',
  UnknownInterface: 'org.freedesktop.DBus.Error.UnknownInterface',
  UnknownProperty: 'org.freedesktop.DBus.Error.UnknownProperty',
  PropertyReadOnly: 'org.freedesktop.DBus.Error.PropertyReadOnly',
  LimitsExceeded: 'org.freedesktop.DBus.Error.LimitsExceeded',
  AccessDenied: 'org.freedesktop.DBus.Error.AccessDenied',
  ServiceUnknown: 'org.freedesktop.DBus.Error.ServiceUnknown',
  NameHasNoOwner: 'org.freedesktop.DBus.Error.NameHasNoOwner',
} as const;

/** The errors a call gets when nobody owns the name (and it cannot be activated). */
export const NO_OWNER: ReadonlySet<string> = new Set([DBUS_ERRORS.ServiceUnknown, DBUS_ERRORS.NameHasNoOwner]);

type Named = keyof typeof ERRORS | keyof typeof DBUS_ERRORS;

/** A D-Bus error reply: its name and message. */
export class BusError extends Error {
  constructor(
    readonly errorName: string,
    message: string,
  ) {
    super(message);
  }

  /** One of the table's errors, by its short name: `BusError.of('NoSuchEntry', '…')`. */
  static of(name: Named, message: string): BusError {
    return new BusError((ERRORS as Record<string, string>)[name] ?? (DBUS_ERRORS as Record<string, string>)[name]!, message);
  }
}

/** The daemon could not be reached at all (not running, no bus). */
export class Unreachable extends Error {}
