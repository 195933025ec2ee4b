import { EventEmitter } from 'node:events';
import { Message, MessageType } from '@jellybrick/dbus-next';
import { SYSTEMD } from '../../src/bus/names';
import { PersistRunner } from '../../src/daemon/persist-runner';
import { tempDir } from '../helpers';

/**
 * A stand-in for the system bus and systemd, as the runner sees them: the order in which a job's
 * JobRemoved signal and StartTransientUnit's reply arrive cannot be chosen with a real systemd.
 */
class BusStandIn extends EventEmitter {
  job = 0;
  /** Sends JobRemoved for the job before answering StartTransientUnit (a job that ends at once). */
  resultFirst = true;
  signal(job: string, result: string): void {
    this.emit('message', new Message({ type: MessageType.SIGNAL, sender: ':1.1', ...SYSTEMD, member: 'JobRemoved', signature: 'uoss', body: [1, job, 'x.service', result] }));
  }
  async call(msg: Message): Promise<Message> {
    if (msg.member === 'GetNameOwner') return new Message({ type: MessageType.METHOD_RETURN, replySerial: 1, sender: 'org.freedesktop.DBus', signature: 's', body: [':1.1'] });
    if (msg.member === 'StartTransientUnit') {
      const job = `/org/freedesktop/systemd1/job/${++this.job}`;
      if (this.resultFirst) this.signal(job, 'done');
      else setTimeout(() => this.signal(job, 'done'), 5);
      return new Message({ type: MessageType.METHOD_RETURN, replySerial: 1, sender: ':1.1', signature: 'o', body: [job] });
    }
    return new Message({ type: MessageType.METHOD_RETURN, replySerial: 1, sender: 'org.freedesktop.DBus' });
  }
}

describe('PersistRunner', () => {
  it("gets its job's result whether the signal comes before the reply or after, however many other jobs systemd ran", async () => {
    const bus = new BusStandIn();
    const runner = new PersistRunner(bus as never, { ctl: ['/bin/true'], outputDir: tempDir() });
    const run = async () => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise((r) => (timer = setTimeout(() => r('no answer'), 2000)));
      try {
        return await Promise.race([runner.run(['persist', '/x']), late]);
      } finally {
        clearTimeout(timer);
      }
    };
    expect(await run()).toMatchObject({ ok: true, result: 'done' });
    // Other units' jobs end all the time; their results are not waited for.
    for (let i = 0; i < 100; i++) bus.signal(`/org/freedesktop/systemd1/job/other${i}`, 'done');
    expect(await run()).toMatchObject({ ok: true, result: 'done' });
    bus.resultFirst = false;
    expect(await run()).toMatchObject({ ok: true, result: 'done' });
    runner.stop();
  });
});
