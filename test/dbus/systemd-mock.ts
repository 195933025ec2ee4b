/**
 * A stand-in for systemd's D-Bus API on a private bus, for the one boundary a unit test cannot
 * reach: PID 1 here is not systemd, so there is no real StartTransientUnit. python3-dbusmock's
 * systemd template, with StartTransientUnit replaced: it runs the unit's ExecStart argv (as the
 * user running the mock: root), writes its stdout and stderr to StandardOutputFileToTruncate,
 * and emits JobRemoved with "done" or "failed" as systemd would for a oneshot. Subscribe is
 * added (systemd sends JobRemoved only to subscribers). The real thing is driven in the nspawn
 * boot test (test/e2e/persist.test.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { busctlCall, SYSTEM_PYTHON, type PrivateBus } from './harness';

const NAME = 'org.freedesktop.systemd1';
const PATH = '/org/freedesktop/systemd1';
const IFACE = 'org.freedesktop.systemd1.Manager';
const MOCK = 'org.freedesktop.DBus.Mock';

export const SYSTEMD_MOCK_POLICY = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="${NAME}"/>
    <allow send_destination="${NAME}"/>
  </policy>
</busconfig>
`;

// Run by dbusmock's exec(), whose locals a nested function would not see: no closures.
const START_TRANSIENT_UNIT = `
import subprocess
from gi.repository import GLib
props = dict((str(k), v) for k, v in args[2])
argv = [str(a) for a in props['ExecStart'][0][1]]
out = str(props.get('StandardOutputFileToTruncate', '/dev/null'))
self.next_job_id += 1
job_path = '/org/freedesktop/systemd1/job/%d' % self.next_job_id
with open(out, 'w') as f:
    rc = subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
GLib.idle_add(lambda s=self, a=[dbus.UInt32(self.next_job_id), dbus.ObjectPath(job_path), str(args[0]), 'done' if rc == 0 else 'failed']: s.EmitSignal('org.freedesktop.systemd1.Manager', 'JobRemoved', 'uoss', a) and False)
ret = job_path
`;

export interface SystemdMock {
  /** (unit name, argv) of every transient unit started, oldest first. */
  transientUnits(): Promise<Array<[string, string[]]>>;
  stop(): Promise<void>;
}

export async function startSystemdMock(bus: PrivateBus): Promise<SystemdMock> {
  await bus.addPolicy('systemd-mock', SYSTEMD_MOCK_POLICY);
  const log = mkdtempSync(join(bus.dir, 'systemd-')) + '/mock.log';
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', SYSTEM_PYTHON, '-m', 'dbusmock', '--system', '--template', 'systemd', '--logfile', log], {
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', DBUS_SYSTEM_BUS_ADDRESS: bus.address, PYTHONDONTWRITEBYTECODE: '1' },
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const call = (member: string, signature = '', ...a: string[]) => busctlCall(bus, NAME, PATH, MOCK, member, signature, ...a);
  for (let i = 0; ; i++) {
    try {
      await call('GetCalls');
      break;
    } catch (err) {
      if (i > 200 || child.exitCode !== null) throw new Error(`the systemd mock did not start: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  await call('AddMethod', 'sssss', IFACE, 'StartTransientUnit', 'ssa(sv)a(sa(sv))', 'o', START_TRANSIENT_UNIT);
  await call('AddMethod', 'sssss', IFACE, 'Subscribe', '', '', '');
  return {
    async transientUnits() {
      const [calls] = (await call('GetCalls')) as [Array<[number, string, Array<{ type: string; data: unknown }>]>];
      return calls
        .filter(([, m]) => m === 'StartTransientUnit')
        .map(([, , a]) => {
          const props = a[2]!.data as Array<[string, { type: string; data: unknown }]>;
          const exec = props.find(([k]) => k === 'ExecStart')![1].data as Array<[string, string[], boolean]>;
          return [String(a[0]!.data), exec[0]![1]] as [string, string[]];
        });
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
