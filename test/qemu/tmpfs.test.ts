import { join } from 'node:path';
import { imageVms, onImage, type Vm } from './vm';

/**
 * [wipe] method = "tmpfs" on a real kernel with a dracut initrd (qemu, software emulation): the
 * Debian image of wipe.test.ts (test/qemu/image.sh dracut DIR tmpfs), whose @root is the disk's
 * root. impermanence-tmpfs-root makes the root a tmpfs with the disk's /usr read-only and a copy
 * of its /etc; the initrd mounts /persist (x-initrd.mount); /etc/passwd and the other user files
 * are persisted, and the user alice is only in their storage copies: the generator must read
 * those to give alice her home.
 */
const REPO = join(__dirname, '..', '..');
const CACHE = process.env.IMPERMANENCE_QEMU_CACHE ?? '/var/cache/impermanence-qemu';
const BOOT = 900_000;

jest.setTimeout(3_600_000);

describe('a tmpfs root with an initrd built by dracut', () => {
  const dir = join(CACHE, 'tmpfsroot-test-dracut');
  const { disk, boot } = imageVms(dir, [join(REPO, 'test/qemu/image.sh'), 'dracut', dir, 'tmpfs']);

  const sh = async (vm: Vm, cmd: string) => {
    const r = await vm.run(cmd, 600_000);
    return r.out.trim();
  };
  /** What a boot must show: a tmpfs root, /usr from the disk read-only, the storage mounted, alice's home hers, no failed unit. */
  const checkBoot = async (vm: Vm) => {
    await vm.waitFor(/WIPE-STEP-DONE tmpfs root/, BOOT);
    await vm.login();
    expect(await sh(vm, 'findmnt -n -o FSTYPE /')).toBe('tmpfs');
    expect(await sh(vm, 'findmnt -n -o FSTYPE,OPTIONS /usr')).toMatch(/^btrfs\s+ro,/);
    expect(await sh(vm, 'findmnt -n -o SOURCE /persist')).toMatch(/@persist/);
    expect(await sh(vm, 'cat /run/impermanence/wipe-done')).toMatch(/^tmpfs root \(size 768M, mode 0755\)/);
    expect(await sh(vm, 'getent passwd alice')).toBe('alice:x:1000:1000:Alice:/home/alice:/bin/bash');
    expect(await sh(vm, 'stat -c "%U:%G %a" /home/alice /home/alice/kept')).toBe('alice:alice 700\nalice:alice 755');
    expect(await sh(vm, 'findmnt -n -o SOURCE /home/alice/kept')).toMatch(/\[\/@persist\/home\/alice\/kept\]$/);
    const failed = await vm.run('systemctl --failed --plain --no-legend --no-pager', 600_000);
    expect(failed.out.trim()).toBe('');
  };

  it('boots: declared paths kept across a reboot, undeclared ones gone, alice (only in the persisted /etc/passwd) owns her home, no failed unit', async () => {
    let vm = boot();
    await checkBoot(vm);
    const w = await vm.run('echo kept > /srv/kept/a && echo hers > /home/alice/kept/b && chown alice: /home/alice/kept/b && echo lost > /root/undeclared && echo lost > /etc/undeclared && echo lost > /var/lib/undeclared && sync');
    expect(w.code).toBe(0);
    await vm.poweroff();

    vm = boot();
    await checkBoot(vm);
    expect(await sh(vm, 'cat /srv/kept/a; stat -c %U /home/alice/kept/b; cat /home/alice/kept/b')).toBe('kept\nalice\nhers');
    expect((await vm.run('ls /root/undeclared /etc/undeclared /var/lib/undeclared')).code).not.toBe(0);
    await vm.poweroff();
    // The disk's root was only read: nothing of either boot is on it.
    expect(onImage(disk, 'ls -A @root/root; ls @root/etc/undeclared @root/srv 2>&1 || true')).not.toMatch(/undeclared$|^kept$/m);
    expect(onImage(disk, 'cat @persist/srv/kept/a @persist/home/alice/kept/b')).toBe('kept\nhers\n');
  });
});
