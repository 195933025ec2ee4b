import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { btrfsLoop, REPO, tempDir } from '../helpers';

/**
 * The initramfs-tools hook (packaging/initramfs-tools/hooks/impermanence), run as update-initramfs
 * runs it, then the wipe run in what it built. initramfs-tools is not installed where the tests
 * run: a stand-in for /usr/share/initramfs-tools/hook-functions (bound over it in a private mount
 * namespace) copies what copy_exec is given with its libraries, as the real one does, and the
 * package's files from the source tree. The initrd gets no busybox (BUSYBOX=n, which
 * initramfs-tools allows: busybox is only recommended), only a shell: the wipe must find every
 * command it runs in what the hook copied.
 */
const HOOK = join(REPO, 'packaging/initramfs-tools/hooks/impermanence');

/** The commands each initrd builder installs for the btrfs wipe (the list beside awk, in each file). */
function toolLists() {
  const dracut = readFileSync(join(REPO, 'packaging/dracut/90impermanence/module-setup.sh'), 'utf8');
  const mkinitcpio = readFileSync(join(REPO, 'packaging/mkinitcpio/install/impermanence'), 'utf8');
  const words = (line: string | undefined) => (line ?? '').trim().split(/\s+/).sort();
  return {
    dracut: words([...dracut.matchAll(/inst_multiple (.*)/g)].map((m) => m[1]).find((l) => / awk /.test(l!))),
    mkinitcpio: words([...mkinitcpio.matchAll(/for tool in (.*); do add_binary/g)].map((m) => m[1]).find((l) => / awk /.test(l!))),
  };
}

let dir: string;
let disk: ReturnType<typeof btrfsLoop> | undefined;
beforeAll(() => {
  disk = btrfsLoop('initramfs-hook-', '300M');
  dir = disk.dir;
  const setup = `set -e; M=${dir}/m; mkdir -p $M; mount ${disk.device} $M; cd $M
    btrfs -q subvolume create @pristine; mkdir @pristine/etc; btrfs property set @pristine ro true
    btrfs -q subvolume snapshot @pristine @root; touch @root/used; cd /; umount $M`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', setup], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
});
afterAll(() => {
  disk?.detach();
});

/** Runs the hook with DESTDIR (new, returned) and `impermanencectl wipe config` printing CONF; `before` runs first in the namespace. */
function hook(conf: string, before = '') {
  const dest = tempDir('initramfs-hook-dest-');
  const share = join(dir, 'share');
  mkdirSync(share, { recursive: true });
  writeFileSync(
    join(share, 'hook-functions'),
    `# A stand-in for initramfs-tools' hook-functions: copy_exec and copy_file, as they copy.
copy_file() {
  src=$2
  case $src in /usr/lib/impermanence/impermanence-wipe) src=${REPO}/src/wipe/impermanence-wipe.sh ;; /usr/lib/impermanence/*) src=${REPO}/src/wipe/\${src##*/} ;; esac
  /usr/bin/mkdir -p "$DESTDIR\${3%/*}" && /usr/bin/cp -L "$src" "$DESTDIR$3"
}
copy_exec() {
  echo "$1" >> "$DESTDIR/.copied"
  for f in "$1" $(/usr/bin/ldd "$1" 2>/dev/null | /usr/bin/grep -o '/[^ ]*'); do /usr/bin/cp --parents -L "$f" "$DESTDIR"; done
}
`,
  );
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'impermanencectl'), `#!/bin/sh\ncat <<'CONF'\n${conf}\nCONF\n`);
  chmodSync(join(bin, 'impermanencectl'), 0o755);
  const script = `set -e; mount --bind ${share} /usr/share/initramfs-tools; ${before || ':'}; set +e
DESTDIR=${dest} PATH=${bin}:$PATH sh ${HOOK}; echo "rc=$?"`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
  const code = Number(/rc=(\d+)/.exec(r.stdout)?.[1]);
  let copied: string[] = [];
  try {
    copied = readFileSync(join(dest, '.copied'), 'utf8').trim().split('\n');
  } catch {
    // nothing copied
  }
  return { dest, code, err: r.stderr, copied: copied.map((p) => p.replace(/.*\//, '')).sort() };
}
const btrfsConf = () => `# test\nWIPE_METHOD=btrfs\nWIPE_DEVICE='${disk!.device}'\nWIPE_SUBVOLUME='@root'\nWIPE_FROM='@pristine'\nWIPE_OLD_ROOTS='old_roots'\nWIPE_KEEP_DAYS=30\nWIPE_KEEP_COUNT=0\nWIPE_TIMEOUT=1\nWIPE_STORAGES='/persist'`;

describe('initramfs-tools hook', () => {
  it('copies every command the wipe runs, as the dracut module and the mkinitcpio hook install them', () => {
    const lists = toolLists();
    expect(lists.dracut).toContain('awk');
    expect(lists.mkinitcpio).toEqual(lists.dracut);
    const r = hook(btrfsConf());
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.copied).toEqual([...lists.dracut, 'btrfs'].sort());
  });

  it('builds an initrd in which the wipe runs with no busybox: a shell and what the hook copied', () => {
    const r = hook(btrfsConf());
    expect(r.code).toBe(0);
    // initramfs-tools always has a shell (klibc's, a dash, when there is no busybox).
    const dash = ['/usr/bin/dash', ...(spawnSync('ldd', ['/usr/bin/dash'], { encoding: 'utf8' }).stdout.match(/\/\S+/g) ?? [])];
    const d = r.dest;
    const run = `set -e; for f in ${dash.join(' ')}; do cp --parents -L $f ${d}; done; mkdir -p ${d}/bin ${d}/dev ${d}/proc ${d}/sys ${d}/run ${d}/tmp
ln -sf /usr/bin/dash ${d}/bin/sh; echo rootflags=subvol=@root > ${d}/etc/cmdline
mount --rbind /dev ${d}/dev; mount -t proc proc ${d}/proc; mount --rbind /sys ${d}/sys; set +e
IMPERMANENCE_WIPE_CMDLINE=/etc/cmdline chroot ${d} /bin/sh /usr/lib/impermanence/impermanence-wipe; echo "rc=$?"
set -e; mount ${disk!.device} ${dir}/m; ls ${dir}/m/old_roots/*/; umount ${dir}/m`;
    const w = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', run], { encoding: 'utf8' });
    expect(w.stderr).toMatch(/WIPE-STEP-DONE fresh @root from @pristine/);
    expect(w.stderr).not.toMatch(/not found/);
    expect(w.stdout).toMatch(/^rc=0\n/);
    expect(readFileSync(join(d, 'run/impermanence/wipe-done'), 'utf8')).toMatch(/fresh @root from @pristine/);
    expect(w.stdout).toMatch(/^used$/m);
  });

  it('fails, building nothing that cannot wipe, when there is no btrfs command', () => {
    // Not executable: dash's command -v does not find it (the update-initramfs hooks run under sh).
    const none = join(dir, 'btrfs.none');
    writeFileSync(none, '', { mode: 0o644 });
    const r = hook(btrfsConf(), `mount --bind ${none} /usr/bin/btrfs`);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/impermanence: no btrfs command on this system, .*not building an initrd that cannot wipe \(install btrfs-progs\)/);
  });
});
