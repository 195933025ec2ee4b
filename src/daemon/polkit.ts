import { Message, Variant, type MessageBus } from '@jellybrick/dbus-next';
import { POLKIT } from '../bus/names';

/** The polkit actions, one per state-changing method (packaging/org.impermanence.policy). */
export const ACTION_RELOAD = 'org.impermanence.reload';
export const ACTION_PERSIST = 'org.impermanence.persist';

export type Authorization = 'authorized' | 'challenge' | 'denied';

/**
 * Asks polkit whether the sender of a call may perform `action`, letting polkit ask the user
 * for a password only when the caller set ALLOW_INTERACTIVE_AUTHORIZATION on its call.
 * "challenge": polkit would allow it after authentication, which the caller did not allow.
 */
export async function checkAuthorization(bus: MessageBus, sender: string, action: string, interactive: boolean): Promise<Authorization> {
  const reply = await bus.call(
    new Message({
      ...POLKIT,
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [['system-bus-name', { name: new Variant('s', sender) }], action, {}, interactive ? 1 : 0, ''],
    }),
  );
  const [authorized, challenge] = (reply?.body[0] as [boolean, boolean, unknown] | undefined) ?? [false, false];
  if (authorized) return 'authorized';
  return challenge ? 'challenge' : 'denied';
}
