// A drift subscriber for tests: connects to the bus at argv[2], calls Subscribe COUNT (argv[3],
// default 1) times on as many connections, and prints one JSON line per event on stdout:
//   {"event":"subscribed","name":":1.x","items":[...]}  or  {"event":"refused","error":"..."}
//                                                         per connection (name: its unique name)
//   {"event":"changed","sender":":1.y","items":[...]}   per DriftChanged signal received
// With argv[4] === 'listen', each connection also asks the bus (AddMatch) for every DriftChanged
// signal, broadcast ones included, before it subscribes: to test that the bus policy keeps
// broadcasts from it. Runs until killed. Meant to be started as an unprivileged user (setpriv).
const { Message, MessageType, sessionBus } = require('@jellybrick/dbus-next');

const address = process.argv[2];
const count = Number(process.argv[3] ?? 1);
const listen = process.argv[4] === 'listen';
const print = (o) => process.stdout.write(JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) + '\n');

async function one() {
  const bus = sessionBus({ busAddress: address });
  await new Promise((resolve, reject) => {
    bus.once('connect', resolve);
    bus.once('error', reject);
  });
  bus.on('message', (msg) => {
    if (msg.type === MessageType.SIGNAL && msg.member === 'DriftChanged') print({ event: 'changed', sender: msg.sender, items: msg.body[0] });
  });
  if (listen) {
    await bus.call(
      new Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: ["type='signal',member='DriftChanged'"] }),
    );
  }
  try {
    const reply = await bus.call(
      new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member: 'Subscribe', signature: 'a{sv}', body: [{}] }),
    );
    print({ event: 'subscribed', name: bus.name, items: reply.body[0] });
  } catch (err) {
    print({ event: 'refused', error: err.type ?? err.message });
  }
}

(async () => {
  for (let i = 0; i < count; i++) await one();
})().catch((err) => {
  process.stderr.write(String(err) + '\n');
  process.exit(1);
});
