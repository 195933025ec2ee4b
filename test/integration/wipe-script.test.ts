import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { btrfsLoop, REPO, tempDir } from '../helpers';

/**
 * The initrd's wipe script (src/wipe/impermanence-wipe.sh) on a real btrfs on a loop device, in a
 * private mount namespace: the same commands as in the initrd, in seconds. The qemu test
 * (test/qemu) runs it for real in dracut and initramfs-tools initrds.
 */
const SCRIPT = join(REPO, 'src/wipe/impermanence-wipe.sh');

let dir: string;
let loop: string;
let disk: ReturnType<typeof btrfsLoop> | undefined;
beforeAll(() => {
  disk = btrfsLoop('wipeC-script-', '300M');
  dir = disk.dir;
  loop = disk.device;
});
afterAll(() => {
  disk?.detach();
});

/** Runs bash with the top level on $M (private namespace), then the wipe with `cmdline`, then `after`; returns the wipe's stderr, exit code and `after`'s output. */
function wipe(before: string, cmdline = 'rootflags=subvol=@root', after = '', conf: Record<string, string> = {}, env = '') {
  const settings = { WIPE_METHOD: 'btrfs', WIPE_DEVICE: loop, WIPE_SUBVOLUME: '@root', WIPE_FROM: '@pristine', WIPE_OLD_ROOTS: 'old_roots', WIPE_KEEP_DAYS: '30', WIPE_KEEP_COUNT: '3', WIPE_TIMEOUT: '1', WIPE_STORAGES: "'/persist'", ...conf };
  writeFileSync(join(dir, 'wipe.conf'), Object.entries(settings).map(([k, v]) => `${k}=${v}\n`).join(''));
  writeFileSync(join(dir, 'cmdline'), `${cmdline}\n`);
  const script = `set -e; M=${dir}/m; mkdir -p $M; mount -o noatime ${loop} $M; cd $M; ${before || ':'}
cd /; umount $M; set +e
${env} IMPERMANENCE_WIPE_CONF=${dir}/wipe.conf IMPERMANENCE_WIPE_RUN=${dir}/run IMPERMANENCE_WIPE_CMDLINE=${dir}/cmdline sh ${SCRIPT} 2>${dir}/err; echo "rc=$?"
set -e; mount -o noatime ${loop} $M; cd $M; ${after || ':'}; cd /; umount $M`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const err = spawnSync('cat', [join(dir, 'err')], { encoding: 'utf8' }).stdout;
  const [rc, ...out] = r.stdout.split('\n');
  return { code: Number(rc!.slice(3)), err, out: out.join('\n') };
}
const list = 'btrfs subvolume list . | sed "s/.* path //" | sort';
/** Runs bash COMMAND with the top level on $M (private namespace), no wipe; returns its output. */
function onDisk(command: string) {
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', `set -e; M=${dir}/m; mkdir -p $M; mount -o noatime ${loop} $M; cd $M; ${command}; cd /; umount $M`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}
/** Shell: deletes every subvolume in old_roots (nested ones first), then what is left there. */
const emptyOldRoots = 'btrfs subvolume list . | sed -n "s/^ID .* path \\(old_roots\\/.*\\)$/\\1/p" | sort -r | while IFS= read -r s; do btrfs -q subvolume delete "$s"; done; rm -rf old_roots/*';
/**
 * Shell for wipe()'s `before`: /usr/bin/COMMAND becomes SCRIPT (sh; $REAL is a copy of the real
 * command) for the rest of that private mount namespace only, the wipe included.
 */
function replaced(command: string, script: string) {
  const real = join(dir, `${command}.real`);
  const fake = join(dir, `${command}.fake`);
  writeFileSync(fake, `#!/bin/sh\nREAL=${real}\n${script}\n`, { mode: 0o755 });
  return `cp /usr/bin/${command} ${real}; mount --bind ${fake} /usr/bin/${command}`;
}
/** Shell for wipe()'s `before`: the clock says WHEN (UTC, "YYYY-MM-DD HH:MM:SS") for the wipe's date. */
function clockAt(when: string) {
  const base = `${when} UTC`;
  // The wipe's three forms: -f - (a time a line: "now", "N days ago"), -d (a given time), neither (now).
  return replaced('date', `case " $* " in
  *" -f "*) sed 's/^now$/${base}/; s/^\\(.* ago\\)$/${base} \\1/' | exec "$REAL" "$@" ;;
  *" -d "*) exec "$REAL" "$@" ;;
  *) exec "$REAL" -d '${base}' "$@" ;;
esac`);
}

describe('impermanence-wipe (btrfs, on a loop device)', () => {
  it('moves the root to old_roots, makes it again from the pristine, and deletes an unused fresh root instead of keeping it', () => {
    const setup = 'btrfs -q subvolume create @pristine; mkdir @pristine/etc @pristine/persist; echo p > @pristine/etc/os; btrfs property set @pristine ro true; btrfs -q subvolume snapshot @pristine @root; echo junk > @root/junk; btrfs -q subvolume create @root/nested';
    const r = wipe(setup, undefined, `${list}; ls old_roots/*/; ls @root`);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^@pristine\n@root\nold_roots\/[0-9-]+_\d{6}\nold_roots\/[0-9-]+_\d{6}\/nested\netc\njunk\nnested\npersist\netc\npersist\n$/);
    // The next boot stopped before using the root: the wipe does not keep that untouched copy of the pristine.
    const again = wipe('', undefined, 'ls old_roots | wc -l');
    expect(again.err).toMatch(/never written since the last wipe: deleted, not kept/);
    expect(again.out.trim()).toBe('1');
  });

  it('resumes after a power cut between the move and the new root (the journal), and refuses a missing root without it', () => {
    const cut = wipe('btrfs subvolume delete -c @root >/dev/null; echo 2026-01-01_000000 > old_roots/.wipe-in-progress', undefined, 'ls -A old_roots; ls @root');
    expect(cut.code).toBe(0);
    expect(cut.err).toMatch(/missing and a wipe was in progress .*: making it again/);
    expect(cut.out).not.toMatch(/wipe-in-progress/);
    expect(cut.out).toMatch(/etc\npersist/);
    const missing = wipe('btrfs subvolume delete -c @root >/dev/null', undefined, 'ls -A');
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/NOT WIPING: the root subvolume @root is missing/);
    // There is no root to go on with: said, with how to put one there.
    expect(missing.err).not.toMatch(/the boot goes on/);
    expect(missing.err).toMatch(/THERE IS NO ROOT to boot on .*mv \/mnt\/old_roots\/<the newest old root> \/mnt\/@root && umount \/mnt; or, in place of that mv, make a fresh one: btrfs subvolume snapshot \/mnt\/@pristine \/mnt\/@root/);
    expect(spawnSync('cat', [join(dir, 'run/wipe-failed')], { encoding: 'utf8' }).stdout).toMatch(/@root is missing/);
    wipe('btrfs -q subvolume snapshot @pristine @root; touch @root/used');
  });

  it('refuses, touching nothing, when storage has content inside the root, the device is wrong, or another subvolume boots', () => {
    const before = wipe('mkdir -p @root/persist/data', undefined, `${list}`).out;
    expect(wipe('', undefined, list)).toMatchObject({ code: 1, out: before });
    expect(spawnSync('cat', [join(dir, 'err')], { encoding: 'utf8' }).stdout).toMatch(/storage root \/persist has content inside the root subvolume @root: it would be wiped/);
    const other = wipe('rm -r @root/persist/data', 'rootflags=subvol=@other', list);
    expect(other).toMatchObject({ code: 1, out: before });
    expect(other.err).toMatch(/the kernel boots subvolume @other .*configured for @root/);
    expect(wipe('', 'rootflags=rw', list).err).toMatch(/no rootflags=subvol=@root/);
    const device = wipe('', 'rootflags=subvol=/@root impermanence.wipe.device=LABEL=wipeC-nosuch', list);
    expect(device).toMatchObject({ code: 1, out: before });
    expect(device.err).toMatch(/device LABEL=wipeC-nosuch not found after 1s/);
    const off = wipe('', 'rootflags=subvol=@root impermanence.wipe=0', list);
    expect(off).toMatchObject({ code: 0, out: before });
    expect(off.err).toMatch(/not wiping: impermanence.wipe=0/);
  });

  it('reads the kernel command line as the kernel does: a double-quoted value or parameter, quotes removed, one word however many spaces it holds', () => {
    // Valid for the kernel and systemd (both strip the quotes): the wipe runs.
    for (const cmdline of ['rootflags="subvol=@root,compress=zstd"', '"rootflags=subvol=/@root"', 'rootflags="compress=zstd,subvol=@root/"']) {
      const r = wipe('touch @root/used', cmdline, 'ls @root');
      expect(r).toMatchObject({ code: 0, err: expect.stringMatching(/WIPE-STEP-DONE/) });
      expect(r.out).not.toMatch(/^used$/m);
    }
    // Another subvolume, quoted: named as the kernel sees it, without the quote.
    const other = wipe('touch @root/used', 'rootflags="compress=zstd,subvol=@other"', list);
    expect(other.code).toBe(1);
    expect(other.err).toMatch(/the kernel boots subvolume @other \(rootflags=subvol=\), the wipe is configured for @root\n/);
    // A quoted value holding spaces is one parameter's value: the words in it are not parameters.
    const inside = wipe('', 'rootflags=subvol=@root dyndbg="file rootflags=subvol=@other +p"', 'ls @root');
    expect(inside).toMatchObject({ code: 0, err: expect.stringMatching(/WIPE-STEP-DONE/) });
    const before = onDisk(list);
    expect(wipe('', 'rootflags=subvol=@root impermanence.wipe="0"', list)).toMatchObject({ code: 0, out: before, err: expect.stringMatching(/not wiping: impermanence.wipe=0 on the kernel command line/) });
  });

  it('keeps old roots by age and by count exactly, nested subvolumes first, and nothing outside them', () => {
    const t = (ms: number) => new Date(Date.now() - ms).toISOString().replace(/T(\d\d):(\d\d):(\d\d).*/, '_$1$2$3');
    const h = 3_600_000;
    const names = { a: t(h), b: t(2 * h), d29: t(29 * 24 * h), d31: t(31 * 24 * h) };
    // Made oldest first, as the boots before made them (the newest is ranked by creation).
    const mk = ['2020-01-01_0000001', names.d31, names.d29, names.b, names.a].map((n) => `btrfs -q subvolume create old_roots/${n}`).join('; ');
    const r = wipe(
      `rm -rf old_roots/* 2>/dev/null || true; for s in old_roots/*; do [ -e "$s" ] && btrfs subvolume delete "$s"; done; ${mk}; btrfs -q subvolume create old_roots/${names.d31}/n; btrfs -q subvolume create old_roots/${names.d31}/n/m; btrfs -q subvolume create keep-me; btrfs -q subvolume create keep-me/n; mkdir old_roots/not-a-root; touch @root/used`,
      undefined,
      `ls old_roots; ${list}`,
      { WIPE_KEEP_COUNT: '3' },
    );
    expect(r.code).toBe(0);
    const kept = r.out.split('\n').filter((l) => /^\d{4}-/.test(l));
    // Newest 3 of (new, a, b, d29); d31 is older than 30 days.
    expect(kept).toEqual([names.b, names.a, expect.stringMatching(/^\d{4}-/)].sort());
    expect(r.out).toMatch(/^not-a-root$/m);
    expect(r.out).toMatch(/^keep-me\nkeep-me\/n$/m);
    expect(r.out).not.toMatch(new RegExp(names.d31));
    expect(r.err).toMatch(new RegExp(`EXPIRE old_roots/${names.d29} \\(beyond the 3 newest\\)`));
    expect(r.err).toMatch(new RegExp(`EXPIRE old_roots/${names.d31} \\(older than 30 days\\)`));
    // The time is the 6 digits after "_": 2020-01-01_0000001 is 2020-01-01 00:00:00 (then "1").
    expect(r.err).toMatch(/EXPIRE old_roots\/2020-01-01_0000001 \(older than 30 days\)/);
  });

  /**
   * A loop device over a new swap file NAME (in dir) holding a hibernation image's signature: a
   * swap area of PAGE-byte pages that starts OFFSET pages into the device (as a swap file does in
   * its filesystem, resume_offset=); the signature is at `at`.
   */
  const hibernatedLoop = (name: string, page = 4096, offset = 0) => {
    const swap = join(dir, name);
    const at = offset * page + page - 10;
    spawnSync('truncate', ['-s', '40M', swap]);
    spawnSync('truncate', ['-s', '1M', `${swap}.area`]);
    expect(spawnSync('mkswap', ['-p', String(page), `${swap}.area`]).status).toBe(0);
    spawnSync('sh', ['-c', `dd if=${swap}.area of=${swap} bs=${page} count=1 seek=${offset} conv=notrunc 2>/dev/null; printf 'S1SUSPEND\\0' | dd of=${swap} bs=1 seek=${at} conv=notrunc 2>/dev/null`]);
    return { loop: spawnSync('losetup', ['-f', '--show', swap], { encoding: 'utf8' }).stdout.trim(), at };
  };
  /**
   * Its signature wiped, then the loop device detached. The signature goes first: a loop device
   * still busy is detached only later, and the wipe looks at every disk (a later test would find
   * a hibernation image and not wipe).
   */
  const wake = ({ loop, at }: ReturnType<typeof hibernatedLoop>) => {
    spawnSync('sh', ['-c', `dd if=/dev/zero of=${loop} bs=1 seek=${at} count=10 conv=notrunc 2>/dev/null; sync`]);
    spawnSync('losetup', ['-d', loop]);
  };

  it('never wipes while a hibernation image waits on the resume= device', () => {
    const swap = hibernatedLoop('swap');
    const sl = swap.loop;
    try {
      const hib = wipe('touch @root/used', `rootflags=subvol=@root resume=${sl}`, 'ls @root');
      expect(hib.code).toBe(0);
      expect(hib.err).toMatch(new RegExp(`not wiping: a hibernation image is on ${sl}`));
      expect(hib.out).toMatch(/^used$/m);
    } finally {
      wake(swap);
    }
  });

  it('reads the resume= signature resume_offset= pages in (a swap file), in 4 KiB or 64 KiB pages', () => {
    // A swap area 3 pages of 64 KiB in (an arm64 or ppc64le kernel's pages).
    const swap = hibernatedLoop('swap64', 65536, 3);
    try {
      const hib = wipe('touch @root/used', `rootflags=subvol=@root resume=${swap.loop} resume_offset=3`, 'ls @root');
      expect(hib.code).toBe(0);
      expect(hib.err).toMatch(new RegExp(`not wiping: a hibernation image is on ${swap.loop}`));
      expect(hib.out).toMatch(/^used$/m);
    } finally {
      wake(swap);
    }
  });

  it('never wipes while a hibernation image waits in a swap file on btrfs (resume_offset=)', () => {
    // The offset in pages, as the kernel takes it (btrfs inspect-internal map-swapfile -r).
    const offset = onDisk('btrfs -q subvolume create @swap; btrfs -q filesystem mkswapfile -s 16m @swap/swapfile >/dev/null; btrfs inspect-internal map-swapfile -r @swap/swapfile').trim();
    expect(offset).toMatch(/^[1-9]\d*$/);
    const cmdline = `rootflags=subvol=@root resume=${loop} resume_offset=${offset}`;
    const signature = (sig: string) => `printf '${sig}' | dd of=@swap/swapfile bs=1 seek=4086 conv=notrunc 2>/dev/null`;
    try {
      const hib = wipe(`${signature('S1SUSPEND\\0')}; touch @root/used`, cmdline, 'ls @root');
      expect(hib.code).toBe(0);
      expect(hib.err).toMatch(new RegExp(`not wiping: a hibernation image is on ${loop}`));
      expect(hib.out).toMatch(/^used$/m);
      // The swap file as mkswap made it (no image): wiped.
      const swap = wipe(signature('SWAPSPACE2'), cmdline, 'ls @root');
      expect(swap.code).toBe(0);
      expect(swap.err).toMatch(/WIPE-STEP-DONE/);
      expect(swap.out).not.toMatch(/^used$/m);
    } finally {
      onDisk('btrfs -q subvolume delete @swap');
    }
  });

  it('probes the disks udev has not probed yet (still in its queue) for a hibernation image, and trusts what udev noted for the others', () => {
    const swap = hibernatedLoop('swap2');
    const sl = swap.loop;
    const udev = join(dir, 'udev');
    try {
      const mm = readFileSync(`/sys/class/block/${sl.slice(5)}/dev`, 'utf8').trim();
      rmSync(udev, { recursive: true, force: true });
      mkdirSync(udev);
      // No udev entry for any disk, no resume=: the wipe probes them itself.
      const hib = wipe('touch @root/used', undefined, 'ls @root', {}, `IMPERMANENCE_WIPE_UDEV=${udev}`);
      expect(hib.code).toBe(0);
      expect(hib.err).toMatch(new RegExp(`not wiping: a hibernation image is on ${sl}`));
      expect(hib.out).toMatch(/^used$/m);
      // udev probed it earlier and noted plain swap: not probed again (the udev folder is used).
      writeFileSync(join(udev, `b${mm}`), 'E:ID_FS_TYPE=swap\n');
      const noted = wipe('', undefined, 'ls @root', {}, `IMPERMANENCE_WIPE_UDEV=${udev}`);
      expect(noted.code).toBe(0);
      expect(noted.err).toMatch(/WIPE-STEP-DONE/);
      expect(noted.out).not.toMatch(/^used$/m);
    } finally {
      wake(swap);
    }
  });

  it('takes old root names and storage roots as written: a space or a glob character splits or expands nothing', () => {
    // "2024-01-01_000000 x" split on the space gave "x", and old_roots/x was deleted by the retention.
    const r = wipe(
      'btrfs -q subvolume create "old_roots/2024-01-01_000000 x"; btrfs -q subvolume create old_roots/x; btrfs -q subvolume create "old_roots/2024-01-02_000000*"; touch @root/used',
      undefined,
      'ls old_roots',
      // Keep 1: the word "x", second in the old split list, was beyond it.
      { WIPE_KEEP_COUNT: '1' },
    );
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/EXPIRE old_roots\/2024-01-01_000000 x \(older than 30 days\)/);
    expect(r.err).toMatch(/EXPIRE old_roots\/2024-01-02_000000\* \(older than 30 days\)/);
    expect(r.out).toMatch(/^x$/m);
    expect(r.out).not.toMatch(/2024-01-0/);
    // A storage root /tm[p] with content: not the glob's /tmp (which the host has).
    const storages = { WIPE_STORAGES: "'/persist\n/tm[p]'" };
    const first = wipe('mkdir -p "@root/tm[p]/data"', undefined, `${list}; ls "@root/tm[p]"`, storages);
    expect(first.code).toBe(1);
    expect(first.out).toMatch(/^data$/m);
    const g = wipe('', undefined, `${list}; ls "@root/tm[p]"`, storages);
    expect(g).toMatchObject({ code: 1, out: first.out });
    expect(g.err).toMatch(/storage root \/tm\[p\] has content inside the root subvolume @root: it would be wiped/);
    wipe('rm -r "@root/tm[p]"');
  });

  it('keeps a root it did not make, even one never written since its creation (created and filled in one btrfs transaction)', () => {
    // The first boot after moving a system into a new @root: created and written, no commit between.
    const gens = join(dir, 'gens');
    const r = wipe(
      `btrfs -q subvolume delete @root; btrfs -q subvolume create @root; mkdir -p @root/home/alice; echo data > @root/home/alice/thesis.txt; btrfs subvolume show @root | grep -E "Generation|Gen at creation" | grep -o "[0-9]*$" > ${gens}`,
      undefined,
      'cat old_roots/*/home/alice/thesis.txt 2>/dev/null || echo lost',
    );
    const [gen, ogen] = readFileSync(gens, 'utf8').split('\n');
    expect(gen).toBe(ogen);
    expect(r.code).toBe(0);
    expect(r.err).not.toMatch(/never written since the last wipe/);
    expect(r.out).toBe('data\n');
    // The root the wipe made, never written since: deleted, as before.
    const again = wipe('', undefined, 'ls old_roots/*/home/alice/thesis.txt');
    expect(again.err).toMatch(/never written since the last wipe: deleted, not kept/);
    expect(again.out).toMatch(/thesis.txt\n$/);
    // An empty fresh root too (created, not snapshotted: no commit of its own).
    const empty = { WIPE_FROM: 'empty' };
    expect(wipe('touch @root/used', undefined, '', empty).err).not.toMatch(/never written/);
    expect(wipe('', undefined, 'ls -A @root | wc -l', empty)).toMatchObject({ code: 0, err: expect.stringMatching(/never written since the last wipe: deleted, not kept/), out: '0\n' });
    expect(wipe('touch @root/used').err).not.toMatch(/never written/);
  });

  it('never expires the root it just moved, and ranks old roots by creation, not by name, when the clock is behind', () => {
    // Three boots with the clock right, then one with the clock reset to an earlier date.
    const behind = wipe(
      `${emptyOldRoots}; for n in 2026-11-24_000000 2026-11-25_000000 2026-11-26_000000; do btrfs -q subvolume create old_roots/$n; done; touch @root/used; ${clockAt('2025-06-01 00:00:00')}`,
      undefined,
      'ls old_roots; ls old_roots/2025-06-01_000000 2>&1 || true',
      { WIPE_KEEP_COUNT: '3', WIPE_KEEP_DAYS: '30' },
    );
    expect(behind.code).toBe(0);
    expect(behind.err).toMatch(/WIPE-STEP-MOVE @root -> old_roots\/2025-06-01_000000\n/);
    expect(behind.err).toMatch(/EXPIRE old_roots\/2026-11-24_000000 \(beyond the 3 newest\)/);
    expect(behind.err).not.toMatch(/EXPIRE old_roots\/2025/);
    expect(behind.out).toBe('2025-06-01_000000\n2026-11-25_000000\n2026-11-26_000000\netc\npersist\nused\n');
    // An old root named later than now: the clock is wrong, no old root is expired by age (by count still).
    const r = wipe(
      `${emptyOldRoots}; for n in 2025-01-01_000000 2026-11-26_000000; do btrfs -q subvolume create old_roots/$n; done; touch @root/used; ${clockAt('2025-06-01 00:00:00')}`,
      undefined,
      'ls old_roots',
      { WIPE_KEEP_COUNT: '0', WIPE_KEEP_DAYS: '30' },
    );
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/old_roots\/2026-11-26_000000 is named later than now \(2025-06-01_000000\): the clock is behind, or was wrong; no old root is expired by age at this boot/);
    expect(r.err).not.toMatch(/EXPIRE/);
    expect(r.out).toBe('2025-01-01_000000\n2025-06-01_000000\n2026-11-26_000000\n');
  });

  it('ranks old roots made in the same second by creation: .10 is newer than .9', () => {
    // A board without a clock: every boot starts at the same second.
    const same = Array.from({ length: 13 }, (_, i) => `2026-01-01_000000${i ? `.${i}` : ''}`);
    const r = wipe(
      `${emptyOldRoots}; for n in ${same.join(' ')}; do btrfs -q subvolume create old_roots/$n; done; touch @root/used; ${clockAt('2026-01-01 00:00:00')}`,
      undefined,
      'ls old_roots',
      { WIPE_KEEP_COUNT: '6', WIPE_KEEP_DAYS: '30' },
    );
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/WIPE-STEP-MOVE @root -> old_roots\/2026-01-01_000000\.13\n/);
    expect(r.out.trim().split('\n').sort()).toEqual(['2026-01-01_000000.13', ...same.slice(8)].sort());
    for (const n of same.slice(0, 8)) expect(r.err).toMatch(`EXPIRE old_roots/${n} (beyond the 6 newest)`);
  });

  it('makes the fresh root before it moves the root: a failure on the way leaves the root in place, unwiped, and says so', () => {
    const state = `${list}; ls -A old_roots; echo --; ls @root 2>&1 || true`;
    const untouched = (r: ReturnType<typeof wipe>, before: string, why: RegExp) => {
      expect(r.code).toBe(1);
      expect(r.err).toMatch(why);
      expect(r.err).toMatch(/the root was not wiped; the boot goes on with it as it is/);
      // The root is where the boot mounts it, as it was; old_roots as it was (no journal either).
      expect(r.out).toBe(before);
      expect(r.out).toMatch(/^used$/m);
    };
    onDisk('touch @root/used');
    const before = onDisk(state);
    // A leftover @root.new that is not a subvolume: the wipe cannot delete it (it deleted the root's place first).
    onDisk('mkdir @root.new');
    untouched(wipe('', undefined, `rmdir @root.new; ${state}`), before, /NOT WIPING: cannot delete the leftover @root\.new/);
    // btrfs cannot make the fresh root (here: it fails; in the review, there was none).
    const failing = replaced('btrfs', 'case "$1 $2" in "subvolume snapshot" | "subvolume create") echo "ERROR: injected failure" >&2; exit 1 ;; esac\nexec "$REAL" "$@"');
    untouched(wipe(failing, undefined, state), before, /NOT WIPING: cannot snapshot @pristine as @root\.new/);
    // No btrfs at all (not executable: not found by command -v): refused before anything.
    writeFileSync(join(dir, 'btrfs.none'), '', { mode: 0o644 });
    const none = wipe(`mount --bind ${join(dir, 'btrfs.none')} /usr/bin/btrfs`, undefined, `umount /usr/bin/btrfs; ${state}`);
    untouched(none, before, /NOT WIPING: no btrfs command in the initrd/);
    // The last rename fails: the root is put back.
    const rename = replaced('mv', 'case $1 in *.new) echo "mv: injected failure" >&2; exit 1 ;; esac\nexec "$REAL" "$@"');
    const back = wipe(rename, undefined, `btrfs -q subvolume delete @root.new; ${state}`);
    untouched(back, before, /NOT WIPING: cannot rename @root\.new to @root: the root is back in place/);
  });

  it('says that there is no root, and how to put it back, when the root cannot be put back; the next boot makes it again', () => {
    // Both the rename and the move back fail.
    const stuck = replaced('mv', 'case $1 in *.new | */old_roots/*) echo "mv: injected failure" >&2; exit 1 ;; esac\nexec "$REAL" "$@"');
    const cut = () => {
      onDisk('touch @root/used');
      const r = wipe(stuck, undefined, `${list}; ls -A old_roots`);
      expect(r.code).toBe(1);
      expect(r.err).not.toMatch(/the boot goes on with it/);
      const name = /NOT WIPING: cannot rename @root\.new to @root, nor move old_roots\/(\S+) back to @root/.exec(r.err)?.[1];
      expect(name).toBeDefined();
      expect(r.out).not.toMatch(/^@root$/m);
      expect(r.out).toMatch(/^\.wipe-in-progress$/m);
      const rescue = new RegExp(`THERE IS NO ROOT to boot on ${loop}: .*from a rescue shell: (mkdir -p /mnt && mount -t btrfs -o subvolid=5 ${loop} /mnt && mv /mnt/old_roots/${name} /mnt/@root && umount /mnt)`).exec(r.err);
      expect(rescue).not.toBeNull();
      expect(readFileSync(join(dir, 'run/wipe-failed'), 'utf8')).toMatch(/THERE IS NO ROOT/);
      return { name: name!, rescue: rescue![1]! };
    };
    // As the message says, from a rescue shell: the root is back, as it was.
    const { rescue } = cut();
    const shell = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `${rescue} && mount -o noatime ${loop} ${dir}/m && ls ${dir}/m/@root && umount ${dir}/m`], { encoding: 'utf8' });
    expect(shell.status).toBe(0);
    expect(shell.stdout).toMatch(/^used$/m);
    // Or the next boot's wipe makes a root again (the journal says a wipe was cut) and keeps the old one.
    const { name } = cut();
    const next = wipe('', undefined, `ls @root; ls old_roots/${name}`);
    expect(next.code).toBe(0);
    expect(next.err).toMatch(/missing and a wipe was in progress \(.*\): making it again/);
    expect(next.out).toMatch(/^etc\npersist\n(.|\n)*^used$/m);
  });
});

describe('impermanence-wipe killed (SIGKILL) at random points', () => {
  it('always completes on the next run: a root from the pristine, no leftover, no kept old root lost', () => {
    const runs = Number(process.env.WIPE_SCRIPT_KILLS ?? 15);
    const conf = `WIPE_METHOD=btrfs\nWIPE_DEVICE=${loop}\nWIPE_SUBVOLUME=@root\nWIPE_FROM=@pristine\nWIPE_OLD_ROOTS=old_roots\nWIPE_KEEP_DAYS=0\nWIPE_KEEP_COUNT=0\nWIPE_TIMEOUT=1\nWIPE_STORAGES=/persist\n`;
    writeFileSync(join(dir, 'kill.conf'), conf);
    writeFileSync(join(dir, 'cmdline'), 'rootflags=subvol=@root\n');
    const script = `set -u
export IMPERMANENCE_WIPE_CONF=${dir}/kill.conf IMPERMANENCE_WIPE_RUN=${dir}/run IMPERMANENCE_WIPE_CMDLINE=${dir}/cmdline
M=${dir}/k; mkdir -p $M
check() { mount -o noatime ${loop} $M || exit 9; ( cd $M; test -d @root && test -f @root/etc/os && test ! -e @root.new && test ! -e old_roots/.wipe-in-progress && ls old_roots | wc -l ) ; r=$?; umount $M; return $r; }
mount -o noatime ${loop} $M; ( cd $M; if [ ! -d @pristine ]; then btrfs -q subvolume create @pristine; mkdir @pristine/etc @pristine/persist; echo p > @pristine/etc/os; btrfs property set @pristine ro true; fi; if [ -d @root ]; then mkdir -p old_roots; mv @root old_roots/before-the-kill-test; fi; btrfs -q subvolume snapshot @pristine @root ); umount $M
before=$(check) || { echo "bad start"; exit 1; }
for i in $(seq ${runs}); do
  mount -o noatime ${loop} $M; touch $M/@root/used-$i; umount $M
  setsid sh ${SCRIPT} 2>/dev/null & pid=$!
  sleep 0.$(( (RANDOM % 40) + 1 ))
  kill -9 -$pid 2>/dev/null; wait $pid 2>/dev/null
  while grep -q " ${dir}/run/wipe-top " /proc/self/mounts; do umount ${dir}/run/wipe-top; done
  sh ${SCRIPT} 2>${dir}/kill.err || { echo "run $i: the wipe after the kill failed: $(cat ${dir}/kill.err)"; exit 1; }
  now=$(check) || { echo "run $i: bad state"; exit 1; }
  # Every boot's written root is kept (no limits here): at least one more each round.
  [ "$now" -gt "$before" ] || { echo "run $i: old roots $before -> $now: $(cat ${dir}/kill.err)"; exit 1; }
  before=$now
done
echo ok $before`;
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/^ok \d+\n$/);
  });
});

describe('impermanence-wipe (zfs, with a stand-in zfs command)', () => {
  /**
   * There is no ZFS here (no module, and the host must not load one): `zfs` and `zpool` are
   * stand-ins on PATH, found because the machine has neither (the script puts the system's
   * folders first). zfs answers `list` for tank/root and tank/root@blank, and logs a rollback;
   * `zpool list -H -o bootfs` prints BOOTFS (the imported pools' bootfs properties, "-" for none).
   * The qemu test (test/qemu/zfs.test.ts) is the real one.
   */
  const dir = tempDir('wipe-zfs-');
  const fakes = join(dir, 'bin');
  beforeAll(() => {
    expect(spawnSync('sh', ['-c', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v zfs || command -v zpool']).status).not.toBe(0);
    mkdirSync(fakes);
    writeFileSync(join(fakes, 'zfs'), `#!/bin/sh\n# A stand-in for zfs (see above).\necho "zfs $*" >> ${dir}/log\ncase $1 in\n  list) for a; do :; done; case $a in tank/root | tank/root@blank | tank/be2 | tank/be2@blank) exit 0 ;; esac; exit 1 ;;\n  rollback) exit 0 ;;\n  *) exit 1 ;;\nesac\n`, { mode: 0o755 });
    writeFileSync(join(fakes, 'zpool'), `#!/bin/sh\n# A stand-in for zpool (see above).\necho "zpool $*" >> ${dir}/log\ncase "$*" in "list -H -o bootfs") printf '%s' "$BOOTFS" ;; *) exit 1 ;; esac\n`, { mode: 0o755 });
    writeFileSync(join(dir, 'wipe.conf'), "WIPE_METHOD=zfs\nWIPE_DATASET='tank/root'\nWIPE_SNAPSHOT='blank'\nWIPE_STORAGES=''\n");
  });
  /** The wipe with this kernel command line and bootfs properties: its exit code, stderr, and whether it rolled back. */
  function zfsWipe(cmdline: string, bootfs = '-\n') {
    writeFileSync(join(dir, 'cmdline'), `${cmdline}\n`);
    rmSync(join(dir, 'log'), { force: true });
    const r = spawnSync('sh', [SCRIPT], {
      encoding: 'utf8',
      env: { PATH: `${process.env.PATH}:${fakes}`, BOOTFS: bootfs, IMPERMANENCE_WIPE_CONF: join(dir, 'wipe.conf'), IMPERMANENCE_WIPE_RUN: join(dir, 'run'), IMPERMANENCE_WIPE_CMDLINE: join(dir, 'cmdline') },
    });
    const log = spawnSync('cat', [join(dir, 'log')], { encoding: 'utf8' }).stdout;
    return { code: r.status, err: r.stderr, rolledBack: /^zfs rollback -r tank\/root@blank$/m.test(log), log };
  }

  it('rolls back the dataset the kernel boots: root=zfs:DATASET, root=ZFS=DATASET, rootfstype=zfs root=DATASET', () => {
    for (const cmdline of ['root=zfs:tank/root', 'root=ZFS=tank/root', 'root="zfs:tank/root" rw', 'rootfstype=zfs root=tank/root']) {
      const r = zfsWipe(cmdline);
      expect(r).toMatchObject({ code: 0, rolledBack: true });
      expect(r.err).toMatch(/WIPE-STEP-DONE rolled tank\/root back to @blank/);
    }
  });

  it('refuses, rolling back nothing, when the kernel boots another dataset (another boot environment, to rescue) or no ZFS root', () => {
    for (const [cmdline, booted] of [
      ['root=zfs:tank/be2', 'tank/be2 \\(root=zfs:tank/be2\\)'],
      ['root=ZFS=tank/be2', 'tank/be2 \\(root=ZFS=tank/be2\\)'],
      ['rootfstype=zfs root=tank/be2', 'tank/be2 \\(root=tank/be2\\)'],
      // "+" is a space, as zfs-dracut reads it.
      ['root=zfs:tank/root+2', 'tank/root 2 \\(root=zfs:tank/root\\+2\\)'],
    ]) {
      const r = zfsWipe(cmdline!);
      expect(r).toMatchObject({ code: 1, rolledBack: false });
      expect(r.err).toMatch(new RegExp(`NOT WIPING: the kernel boots the dataset ${booted}, the wipe is configured for tank/root\\n`));
      expect(r.log).not.toMatch(/rollback/);
      expect(readFileSync(join(dir, 'run/wipe-failed'), 'utf8')).toMatch(/the kernel boots the dataset tank\/(be2|root 2)/);
    }
    const other = zfsWipe('root=UUID=0123-4567 rootfstype=ext4');
    expect(other).toMatchObject({ code: 1, rolledBack: false });
    expect(other.err).toMatch(/NOT WIPING: the kernel boots root=UUID=0123-4567, not a ZFS dataset \(root=zfs:tank\/root\), the wipe is configured for tank\/root/);
  });

  it('compares root=zfs:AUTO (or no root=) with the pools\' bootfs property, as zfs-dracut picks the root; goes on when no pool names one', () => {
    for (const cmdline of ['root=zfs:AUTO', 'root=zfs:', 'ro quiet']) {
      expect(zfsWipe(cmdline, '-\ntank/root\n')).toMatchObject({ code: 0, rolledBack: true });
      const r = zfsWipe(cmdline, '-\ntank/be2\ntank/root\n');
      expect(r).toMatchObject({ code: 1, rolledBack: false });
      expect(r.err).toMatch(/NOT WIPING: the kernel boots the dataset tank\/be2 \(the first bootfs property of the imported pools, root=zfs:AUTO\), the wipe is configured for tank\/root\n/);
    }
    // No bootfs: zfs-dracut finds no root to mount either; the wipe goes on as configured.
    expect(zfsWipe('root=zfs:AUTO', '-\n')).toMatchObject({ code: 0, rolledBack: true });
  });
});
