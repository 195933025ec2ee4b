import { Message, Variant, type MessageBus } from '@jellybrick/dbus-next';

/** The polkit actions, one per state-changing method (packaging/org.impermanence.policy). */
export const ACTION_RELOAD = 'org.impermanence.reload';

export type Authorization = 'authorized' | 'challenge' | 'denied';

/** ALLOW_INTERACTIVE_AUTHORIZATION in the D-Bus message header's flags. */
export const ALLOW_INTERACTIVE_AUTHORIZATION = 0x4;

/**
 * Asks polkit whether the sender of a call may perform `action`, letting polkit ask the user
 * for a password only when the caller set ALLOW_INTERACTIVE_AUTHORIZATION on its call.
 * "challenge": polkit would allow it after authentication, which the caller did not allow.
 */
export async function checkAuthorization(bus: MessageBus, sender: string, action: string, interactive: boolean): Promise<Authorization> {
  const reply = await bus.call(
    new Message({
      destination: 'org.freedesktop.PolicyKit1',
      path: '/org/freedesktop/PolicyKit1/Authority',
      interface: 'org.freedesktop.PolicyKit1.Authority',
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [['system-bus-name', { name: new Variant('s', sender) }], action, {}, interactive ? 1 : 0, ''],
    }),
  );
  const [authorized, challenge] = (reply?.body[0] as [boolean, boolean, unknown] | undefined) ?? [false, false];
  if (authorized) return 'authorized';
  return challenge ? 'challenge' : 'denied';
}
