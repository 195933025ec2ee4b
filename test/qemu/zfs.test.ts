import { join } from 'node:path';
import { imageVms } from './vm';

/**
 * method = "zfs" on a real kernel and a real initrd (qemu, software emulation): a Debian bookworm
 * whose root is the ZFS dataset rpool/root (snapshot @blank), the storage rpool/persist, the zfs
 * module built by dkms for the image's kernel, the initrd built by dracut + zfs-dracut
 * (test/qemu/zfs-image.sh; the dkms build is cached by test/qemu/zfs-base.sh).
 * Runs only with IMPERMANENCE_ZFS_TEST=1 (npm run test:qemu:zfs), not in CI: see README "Wiping
 * the root".
 *
 * State (2026-11-26, this machine: 2 cores, load 13-18, 3-4 other qemu guests): it has NOT passed.
 * - zfs-base.sh: `time test/qemu/zfs-base.sh` 30 min 38 s wall (user 6 min 15 s, sys 1 min 21 s),
 *   base.sh's tree cached before; the module (zfs 2.1.11-1+deb12u1) is built for
 *   6.1.0-50-cloud-amd64 and loads in the guest ("ZFS: Loaded module v2.1.11-1+deb12u1").
 * - zfs-image.sh: the host part (copy, mkfs.ext4 -d, dracut with zfs, tar) ~3 min; the installer
 *   guest reaches its script ~3.5 min after start; `zpool create`, `zfs create`, `zfs mount` work.
 * - Then writes to the pool stall under TCG. `-cpu max` (vm.ts's): `tar -x` of the 844 MB tree made
 *   no progress in 8 min (qemu had read 66 MB in all); a 20 MB `dd if=/dev/zero` to the pool did not
 *   finish in 4 min and the guest then stopped answering on the serial console (the clocksource
 *   watchdog reported `wd_nsec: 0`); `cache=unsafe` on the pool's drive changed nothing. `-cpu qemu64`
 *   (no AVX): the same `dd` finished, in 134 s (157 kB/s), txg_sync waiting in dmu_objset_sync.
 *   Neither `zcommon.zfs_fletcher_4_impl=scalar` nor `lapic=notscdeadline` on the guest's command
 *   line helped (`-cpu max`: the dd still unfinished after 2 min); the stalled guest is idle (qemu
 *   sleeping, little CPU), i.e. waiting on a wakeup that does not come, not computing.
 * Next to try: other CPU models / `-smp 2` / icount, a ZFS newer than 2.1.11 (bookworm-backports),
 * a quiet machine, or KVM (not usable here).
 */
const REPO = join(__dirname, '..', '..');
const CACHE = process.env.IMPERMANENCE_QEMU_CACHE ?? '/var/cache/impermanence-qemu';
const BOOT = 900_000;
const ROOT = 'root=zfs:rpool/root';
const enabled = process.env.IMPERMANENCE_ZFS_TEST === '1';

jest.setTimeout(3_600_000);

(enabled ? describe : describe.skip)('the wipe with method = "zfs" (dracut + zfs-dracut)', () => {
  const dir = join(CACHE, 'zfs-test');
  const { disk, boot } = imageVms(dir, [join(REPO, 'test/qemu/zfs-image.sh'), dir], { root: ROOT });

  it('rolls the root back to @blank at boot (zfs rollback -r): declared paths kept, undeclared files and later snapshots gone', async () => {
    let vm = boot();
    await vm.waitFor(/WIPE-STEP-DONE rolled rpool\/root back to @blank/, BOOT);
    await vm.login();
    expect((await vm.run('cat /run/impermanence/wipe-done')).out).toMatch(/rolled rpool\/root back to @blank/);
    expect((await vm.run('findmnt -n -o SOURCE,FSTYPE /')).out).toMatch(/rpool\/root\s+zfs/);
    expect((await vm.run('findmnt -n -o SOURCE /srv/kept')).out).toMatch(/rpool\/persist/);
    const w = await vm.run('echo kept > /srv/kept/a && echo lost > /root/undeclared && echo lost > /etc/undeclared && zfs snapshot rpool/root@later && sync');
    expect(w.code).toBe(0);
    await vm.poweroff();

    vm = boot();
    await vm.waitFor(/WIPE-STEP-DONE rolled rpool\/root back to @blank/, BOOT);
    await vm.login();
    expect((await vm.run('cat /srv/kept/a')).out.trim()).toBe('kept');
    expect((await vm.run('test -e /root/undeclared')).code).toBe(1);
    expect((await vm.run('test -e /etc/undeclared')).code).toBe(1);
    const snaps = (await vm.run('zfs list -H -t snapshot -o name')).out;
    expect(snaps).toMatch(/^rpool\/root@blank$/m);
    expect(snaps).not.toMatch(/@later/);
    expect((await vm.run('systemctl is-failed impermanence-wipe-check.service')).out.trim()).not.toBe('failed');
    await vm.poweroff();
  });

  it('boots unwiped when the snapshot is missing, with a failed unit saying why', async () => {
    let vm = boot();
    await vm.waitFor(/WIPE-STEP-DONE/, BOOT);
    await vm.login();
    expect((await vm.run('zfs rename rpool/root@blank rpool/root@moved && echo still > /root/undeclared2 && sync')).code).toBe(0);
    await vm.poweroff();

    vm = boot();
    await vm.waitFor(/NOT WIPING: snapshot rpool\/root@blank not found/, BOOT);
    await vm.login();
    expect((await vm.run('cat /root/undeclared2')).out.trim()).toBe('still');
    expect((await vm.run('systemctl is-failed impermanence-wipe-check.service')).out.trim()).toBe('failed');
    expect((await vm.run('systemctl status --no-pager -l impermanence-wipe-check.service')).out).toMatch(/the initrd did not wipe the root: snapshot rpool\/root@blank not found/);
    // Put it back: the next boot rolls back again.
    expect((await vm.run('zfs rename rpool/root@moved rpool/root@blank')).code).toBe(0);
    await vm.poweroff();

    vm = boot();
    await vm.waitFor(/WIPE-STEP-DONE rolled rpool\/root back to @blank/, BOOT);
    await vm.login();
    expect((await vm.run('test -e /root/undeclared2')).code).toBe(1);
    await vm.poweroff();
  });
});
