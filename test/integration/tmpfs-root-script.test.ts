import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, tempDir } from '../helpers';

/**
 * The initrd's tmpfs-root script (src/wipe/impermanence-tmpfs-root.sh, [wipe] method = "tmpfs")
 * with real mounts in a private mount namespace whose mounts are made shared, as systemd makes
 * them (the kernel refuses to move a mount whose parent is shared): a "disk root" (a tmpfs
 * standing in for the disk's filesystem) mounted on a folder standing for /sysroot. The qemu test
 * (test/qemu/tmpfs.test.ts) runs it for real in a dracut initrd.
 */
const SCRIPT = join(REPO, 'src/wipe/impermanence-tmpfs-root.sh');

/** A disk root on $R (merged /usr, an /etc, a /persist mount point), `before`, the script, then `after`, all in one private namespace. */
function tmpfsRoot(opts: { before?: string; after?: string; cmdline?: string; conf?: Record<string, string> } = {}) {
  const dir = tempDir('tmpfsroot-script-');
  const settings = { WIPE_METHOD: 'tmpfs', WIPE_SIZE: "'64M'", WIPE_MODE: '0755', WIPE_STORAGES: "'/persist'", ...opts.conf };
  writeFileSync(join(dir, 'wipe.conf'), Object.entries(settings).map(([k, v]) => `${k}=${v}\n`).join(''));
  writeFileSync(join(dir, 'cmdline'), `${opts.cmdline ?? 'root=LABEL=x'}\n`);
  const script = `set -e; mount --make-rshared /; R=${dir}/sysroot; mkdir -p $R; mount -t tmpfs disk $R
mkdir -p $R/usr/bin $R/etc/ssh $R/persist $R/home $R/tmp $R/root; echo sh > $R/usr/bin/sh; echo fstab > $R/etc/fstab; echo key > $R/etc/ssh/key; chmod 600 $R/etc/ssh/key
ln -s usr/bin $R/bin; chmod 1777 $R/tmp; chmod 700 $R/root; echo junk > $R/root/junk; echo top > $R/toplevel-file
${opts.before ?? ':'}
set +e
IMPERMANENCE_WIPE_CONF=${dir}/wipe.conf IMPERMANENCE_WIPE_RUN=${dir}/run IMPERMANENCE_WIPE_CMDLINE=${dir}/cmdline sh ${SCRIPT} $R 2>${dir}/err; echo "rc=$?"
set -e; cd $R; ${opts.after ?? ':'}`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const read = (f: string) => spawnSync('cat', [join(dir, f)], { encoding: 'utf8' }).stdout;
  const [rc, ...out] = r.stdout.split('\n');
  return { code: Number(rc!.slice(3)), err: read('err'), out: out.join('\n'), done: read('run/wipe-done'), failed: read('run/wipe-failed'), skipped: read('run/wipe-skipped') };
}

describe('impermanence-tmpfs-root', () => {
  it('puts a fresh tmpfs (size, mode) on the root: /usr from the disk read-only, a copy of /etc, the top-level folders empty with their modes, the symlinks', () => {
    const r = tmpfsRoot({
      conf: { WIPE_MODE: '0750' },
      after: 'findmnt -n -o FSTYPE,OPTIONS --mountpoint "$PWD" | sed "s/,inode64//"; findmnt -n -o OPTIONS --mountpoint "$PWD/usr" | cut -d, -f1; cat usr/bin/sh etc/fstab etc/ssh/key; stat -c "%n %a" etc/ssh/key tmp root . ; readlink bin; ls -A root; ls -A persist; ls -A; (echo x > usr/new) 2>/dev/null || echo usr-ro; echo new > etc/new',
    });
    expect(r.err).toMatch(/WIPE-STEP-DONE tmpfs root \(size 64M, mode 0750\)/);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toMatch(/^tmpfs\s+rw,.*size=65536k,mode=750/);
    expect(lines.slice(1)).toEqual(['ro', 'sh', 'fstab', 'key', 'etc/ssh/key 600', 'tmp 1777', 'root 700', '. 750', 'usr/bin', 'bin', 'etc', 'home', 'persist', 'root', 'tmp', 'usr', 'usr-ro']);
    expect(r.done).toMatch(/^tmpfs root \(size 64M, mode 0750\): \/usr read-only from the disk, \/etc copied from it/);
    expect(r.failed).toBe('');
  });

  it('writes nothing to the disk: what the tmpfs root gets is gone with it', () => {
    // The disk root stays reachable through a second mount of the same tmpfs... a bind of it, taken before.
    const r = tmpfsRoot({ before: 'mkdir -p $R.disk; mount --bind $R $R.disk', after: 'echo new > etc/new; echo x > root/x; ls -A $R.disk/etc; ls -A $R.disk/root' });
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n')).toEqual(['fstab', 'ssh', 'junk']);
  });

  it('refuses a disk root without /usr, touching nothing, and says so: the boot goes on with the disk root', () => {
    const r = tmpfsRoot({ before: 'rm -rf $R/usr $R/bin', after: 'findmnt -n -o SOURCE --mountpoint "$PWD"; ls root; ls -A ' + '$(dirname $PWD)/run' });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/NOT A TMPFS ROOT: the disk's root on .* has no \/usr folder/);
    expect(r.failed).toMatch(/has no \/usr folder: a tmpfs root takes \/usr from it/);
    expect(r.out.trim().split('\n')).toEqual(['disk', 'junk', 'wipe-failed']);
  });

  it('a size the tmpfs cannot hold /etc in: refused, the staged tmpfs taken away', () => {
    const r = tmpfsRoot({ conf: { WIPE_SIZE: "'8k'" }, before: 'head -c 300000 /dev/zero > $R/etc/big', after: 'findmnt -n -o SOURCE --mountpoint "$PWD"; findmnt -rn -o TARGET | grep -c tmpfs-root || true; ls -A $(dirname $PWD)/run' });
    expect(r.code).toBe(1);
    expect(r.failed).toMatch(/cannot copy \/etc into the tmpfs \(is size = "8k" too small\?\)/);
    expect(r.out.trim().split('\n')).toEqual(['disk', '0', 'wipe-failed']);
  });

  it('impermanence.wipe=0 boots the disk root (skipped, not failed); another method is not its business', () => {
    const off = tmpfsRoot({ cmdline: 'root=LABEL=x impermanence.wipe=0', after: 'findmnt -n -o SOURCE --mountpoint "$PWD"' });
    expect(off.code).toBe(0);
    expect(off.out.trim()).toBe('disk');
    expect(off.skipped).toMatch(/impermanence.wipe=0 on the kernel command line: booted the disk's root/);
    const btrfs = tmpfsRoot({ conf: { WIPE_METHOD: 'btrfs' }, after: 'findmnt -n -o SOURCE --mountpoint "$PWD"' });
    expect(btrfs.code).toBe(0);
    expect(btrfs.out.trim()).toBe('disk');
    expect(btrfs.done + btrfs.skipped + btrfs.failed).toBe('');
  });
});
