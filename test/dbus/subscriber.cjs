// A drift subscriber for tests: connects to the bus at argv[2], calls Subscribe COUNT (argv[3],
// default 1) times on as many connections, and prints one JSON line per event on stdout:
//   {"event":"subscribed","items":[...]}  or  {"event":"refused","error":"..."}   per connection
//   {"event":"changed","items":[...]}     per DriftChanged signal received
// Runs until killed. Meant to be started as an unprivileged user (setpriv).
const { Message, MessageType, sessionBus } = require('@jellybrick/dbus-next');

const address = process.argv[2];
const count = Number(process.argv[3] ?? 1);
const print = (o) => process.stdout.write(JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) + '\n');

async function one() {
  const bus = sessionBus({ busAddress: address });
  await new Promise((resolve, reject) => {
    bus.once('connect', resolve);
    bus.once('error', reject);
  });
  bus.on('message', (msg) => {
    if (msg.type === MessageType.SIGNAL && msg.member === 'DriftChanged') print({ event: 'changed', items: msg.body[0] });
  });
  try {
    const reply = await bus.call(
      new Message({ destination: 'org.impermanence.Manager', path: '/org/impermanence/Manager', interface: 'org.impermanence.Manager', member: 'Subscribe', signature: 'a{sv}', body: [{}] }),
    );
    print({ event: 'subscribed', items: reply.body[0] });
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
