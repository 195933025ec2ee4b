// A hostile client for tests and bench/dos.mjs, meant to run as an unprivileged user (setpriv): connects to
// the bus at argv[2] and fires COUNT calls (argv[4]) of one kind (argv[3]) at the daemon on one
// connection, 100 in flight at a time (the system bus allows 128 pending replies per connection),
// as a hostile client would, then prints one JSON line:
//   {"outcomes":{"ok":N,"org.impermanence.Error.Busy":M,...},"ms":WALL}
// Kinds: "version" (Properties.Get Manager.Version), "scan" (Scan with a distinct "since" each).
// It prints {"sent":COUNT} once every call is on its way.
const { Message, Variant, sessionBus } = require('@jellybrick/dbus-next');

const [address, kind, count] = [process.argv[2], process.argv[3], Number(process.argv[4] ?? 1000)];
const print = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const M = { destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager' };

(async () => {
  const bus = sessionBus({ busAddress: address });
  await new Promise((resolve, reject) => {
    bus.once('connect', resolve);
    bus.once('error', reject);
  });
  const message = (i) =>
    kind === 'scan'
      ? new Message({ ...M, interface: 'org.impermanence.Manager', member: 'Scan', signature: 'a{sv}', body: [{ since: new Variant('t', BigInt(1 + i)) }] })
      : new Message({ ...M, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: ['org.impermanence.Manager', 'Version'] });
  const outcomes = {};
  const start = performance.now();
  let next = 0;
  const one = () =>
    bus.call(message(next++)).then(
      () => (outcomes.ok = (outcomes.ok ?? 0) + 1),
      (err) => (outcomes[err.type ?? 'thrown'] = (outcomes[err.type ?? 'thrown'] ?? 0) + 1),
    );
  const lane = async () => {
    while (next < count) await one();
  };
  const lanes = Array.from({ length: Math.min(100, count) }, lane);
  print({ sent: count });
  await Promise.all(lanes);
  print({ outcomes, ms: Math.round(performance.now() - start) });
  bus.disconnect();
})().catch((err) => {
  process.stderr.write(String(err) + '\n');
  process.exit(1);
});
