import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { btrfsLoop, CTL, REPO, run, tempDir, tree } from '../helpers';

/**
 * diff --previous-boot and restore on a real btrfs (loop device) with kept old roots; the CLI
 * runs in a private mount namespace (it mounts the top level read-only under /run while it works).
 */
let disk: ReturnType<typeof btrfsLoop> | undefined;
let loop: string;
let config: string;
beforeAll(() => {
  disk = btrfsLoop('wipeC-prev-', '200M');
  loop = disk.device;
  const setup = `set -e; M=$(mktemp -d); mount ${loop} $M; cd $M; mkdir old_roots
    for n in 2026-11-20_100000 2026-11-25_100000; do btrfs -q subvolume create old_roots/$n; mkdir -p old_roots/$n/etc old_roots/$n/root old_roots/$n/srv/kept old_roots/$n/var/lib; echo 'root:x:0:0:root:/root:/bin/sh' > old_roots/$n/etc/passwd; done
    sleep 1.1
    echo older > old_roots/2026-11-20_100000/root/notes
    echo newer > old_roots/2026-11-25_100000/root/notes
    mkdir -p old_roots/2026-11-25_100000/var/lib/app; echo state > old_roots/2026-11-25_100000/var/lib/app/db
    echo kept > old_roots/2026-11-25_100000/srv/kept/x
    ln -s / old_roots/2026-11-25_100000/escape
    cd /; umount $M; rmdir $M`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', setup], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  config = tree({ 'a.toml': `[wipe]\nmethod = "btrfs"\ndevice = "${loop}"\nsubvolume = "@root"\n\n[persistence."/persist"]\ndirectories = ["/srv/kept"]\n` });
});
afterAll(() => {
  disk?.detach();
});

const ctl = (...args: string[]) => {
  const r = run('unshare', ['-m', '--propagation', 'private', process.execPath, CTL, ...args, '--config', config]);
  return { code: r.code, out: r.stdout, err: r.stderr };
};

describe('the previous boot, from the kept old roots', () => {
  it('diff --previous-boot lists what that boot wrote outside persisted paths, with the line that keeps it', () => {
    const r = ctl('diff', '--previous-boot');
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/^Boot 1 \(its root is kept in old_roots\/2026-11-25_100000\):/);
    expect(r.out).toMatch(/\/var\/lib\/app/);
    expect(r.out).toMatch(/\/root\/notes|\/root /);
    expect(r.out).toMatch(/directories = \["\/var\/lib\/app"\]/);
    expect(r.out).not.toMatch(/srv\/kept/);
    const json = JSON.parse(ctl('diff', '--previous-boot', '--boot', '2', '--json').out);
    expect(json.items.map((i: { path: string }) => i.path)).toEqual(expect.arrayContaining([expect.stringMatching(/^\/root/)]));
    expect(json.items.map((i: { path: string }) => i.path)).not.toContain('/var/lib/app');
  });

  it('restore copies a file back from boot N, never overwrites, and follows no symlink out of the old root', () => {
    const to = tempDir('wipeC-restore-');
    expect(ctl('restore', '/root/notes', '--to', to)).toMatchObject({ code: 0, out: `restored ${to}/root/notes from old_roots/2026-11-25_100000\n` });
    expect(readFileSync(join(to, 'root/notes'), 'utf8')).toBe('newer\n');
    const again = ctl('restore', '/root/notes', '--to', to, '--boot', '2');
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/root\/notes exists: not overwriting it/);
    expect(ctl('restore', '/root/notes', '--to', join(to, 'b'), '--boot', '2').code).toBe(0);
    expect(readFileSync(join(to, 'b/root/notes'), 'utf8')).toBe('older\n');
    const escape = ctl('restore', '/escape/etc/hostname', '--to', to);
    expect(escape.code).toBe(1);
    expect(escape.err).toMatch(/\/escape is not a folder in old_roots\/2026-11-25_100000 \(a symlink is not followed\)/);
    expect(ctl('restore', '/nothing', '--to', to).err).toMatch(/\/nothing was not in the root of boot 1/);
    expect(ctl('restore', '/root/notes', '--to', join(to, 'c'), '--boot', '3').err).toMatch(/no old root for boot 3 in old_roots .*\(2 kept\)/);
  });

  it('takes the newest old root by btrfs creation, as the wipe ranks them, not by name: a boot with its clock behind', () => {
    // Made after the others, by a wipe whose clock said 2025: boot 1 all the same.
    const onDisk = (command: string) =>
      spawnSync('unshare', ['-m', '--propagation', 'private', 'bash', '-c', `set -e; M=$(mktemp -d); mount ${loop} $M; cd $M; ${command}; cd /; umount $M; rmdir $M`], { encoding: 'utf8' });
    expect(onDisk('btrfs -q subvolume create old_roots/2025-06-01_000000; mkdir old_roots/2025-06-01_000000/root; echo behind > old_roots/2025-06-01_000000/root/notes').stderr).toBe('');
    try {
      const to = tempDir('wipeC-restore-clock-');
      expect(ctl('restore', '/root/notes', '--to', to)).toMatchObject({ code: 0, out: `restored ${to}/root/notes from old_roots/2025-06-01_000000\n` });
      expect(readFileSync(join(to, 'root/notes'), 'utf8')).toBe('behind\n');
      expect(ctl('restore', '/root/notes', '--to', join(to, 'b'), '--boot', '2')).toMatchObject({ code: 0, out: `restored ${to}/b/root/notes from old_roots/2026-11-25_100000\n` });
      expect(ctl('restore', '/root/notes', '--to', join(to, 'c'), '--boot', '3')).toMatchObject({ code: 0, out: `restored ${to}/c/root/notes from old_roots/2026-11-20_100000\n` });
      expect(ctl('diff', '--previous-boot').out).toMatch(/^Boot 1 \(its root is kept in old_roots\/2025-06-01_000000\):/);
    } finally {
      onDisk('btrfs -q subvolume delete old_roots/2025-06-01_000000');
    }
  });

  it('withTopLevel returns what its work made when the top level is still busy at the end (umount -l), and leaves no folder', () => {
    // withTopLevel itself, bundled (as the build does) into a script run in a private mount namespace.
    const d = tempDir('wipeC-busy-');
    writeFileSync(join(d, 'busy.ts'), `import { withTopLevel } from ${JSON.stringify(join(REPO, 'src/cli/previous-boot'))};
withTopLevel({ method: 'btrfs', device: ${JSON.stringify(loop)} } as never, false, async (top) => {
  process.chdir(top); // keeps the mount busy
  return top;
}).then((top) => console.log('made', top), (e) => console.log('failed', e.message));
`);
    expect(run(join(REPO, 'node_modules/.bin/esbuild'), ['--bundle', '--platform=node', '--log-level=error', join(d, 'busy.ts'), `--outfile=${join(d, 'busy.js')}`]).stderr).toBe('');
    const r = run('unshare', ['-m', '--propagation', 'private', process.execPath, join(d, 'busy.js')]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^made \/run\/impermanence-top-\w+\n$/);
    expect(existsSync(r.stdout.slice(5).trim())).toBe(false);
  });
});
