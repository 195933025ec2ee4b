import 'reflect-metadata';
import { sessionBus, systemBus, type MessageBus } from '@jellybrick/dbus-next';
import { container, type DependencyContainer, type InjectionToken } from 'tsyringe';
import contractXml from '../../dbus/org.impermanence.Manager.xml';
import { parseContract, type InterfaceContract } from '../bus/contract';
import { DbusFrontEnd } from './dbus';
import { createLogger, type Logger } from '../shared/journal';
import { Manager, type ManagerOptions } from './manager';
import { PersistRunner, type PersistRunnerOptions } from './persist-runner';
import { LiveDrift } from '../drift/live-drift';

/**
 * impermanenced: the composition root. Every part is registered here under an explicit token
 * (no decorator metadata: a bundle does not carry it) and built once; main.ts starts and stops them.
 * Constructors only assign; the work (processes, bus names) starts in start()/startLive().
 *
 * The tests run the daemon as a process (the bus policy, polkit, the journal, fanotify and the
 * mount namespace are real only there, and the contract XML is inlined by the bundler), so they
 * swap parts by what the process is given (a private bus address, --root, --no-watch), not
 * through this container. This module starts nothing when imported (main.ts does): a caller that
 * builds the daemon in-process replaces a part with c.register(TOKENS.x, ...) before the first
 * resolve.
 */
export const TOKENS = {
  options: Symbol('ManagerOptions') as InjectionToken<ManagerOptions>,
  logger: Symbol('Logger') as InjectionToken<Logger>,
  bus: Symbol('MessageBus') as InjectionToken<MessageBus>,
  contract: Symbol('Contract') as InjectionToken<Map<string, InterfaceContract>>,
  live: Symbol('LiveDrift') as InjectionToken<LiveDrift>,
  manager: Symbol('Manager') as InjectionToken<Manager>,
  frontEnd: Symbol('DbusFrontEnd') as InjectionToken<DbusFrontEnd>,
  persistRunner: Symbol('PersistRunner') as InjectionToken<PersistRunner>,
};

export function compose(options: ManagerOptions, busAddress: string | undefined, persist?: PersistRunnerOptions): DependencyContainer {
  const c = container.createChildContainer();
  const once = <T>(token: InjectionToken<T>, make: (c: DependencyContainer) => T) => {
    let made: T | undefined;
    c.register(token, { useFactory: (dc) => (made ??= make(dc)) });
  };
  c.register(TOKENS.options, { useValue: options });
  once(TOKENS.logger, () => createLogger({ identifier: 'impermanenced' }));
  // A given address (a test's or the demo's private bus) is connected to as such; sessionBus() is
  // the library's way to name an address, not a statement about which bus it is.
  once(TOKENS.bus, () => (busAddress ? sessionBus({ busAddress }) : systemBus()));
  once(TOKENS.contract, () => parseContract(contractXml));
  once(TOKENS.live, (dc) => {
    const o = dc.resolve(TOKENS.options);
    return new LiveDrift({ root: o.root, configDirs: o.configDirs, watcher: o.watcher, pathWatcher: o.pathWatcher });
  });
  once(TOKENS.manager, (dc) => new Manager(dc.resolve(TOKENS.options), dc.resolve(TOKENS.logger), dc.resolve(TOKENS.live)));
  if (persist) once(TOKENS.persistRunner, (dc) => new PersistRunner(dc.resolve(TOKENS.bus), persist));
  once(
    TOKENS.frontEnd,
    (dc) =>
      new DbusFrontEnd(
        dc.resolve(TOKENS.bus),
        dc.resolve(TOKENS.manager),
        dc.resolve(TOKENS.contract),
        dc.resolve(TOKENS.logger),
        persist ? dc.resolve(TOKENS.persistRunner) : undefined,
      ),
  );
  return c;
}
