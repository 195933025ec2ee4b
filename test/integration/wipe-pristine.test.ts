import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { locked, previousPristines, utcStamp } from '../../src/cli/pristine';
import { btrfsLoop, CTL, REPO, run, tempDir, tree } from '../helpers';

/**
 * wipe init and wipe update -- COMMAND on a real btrfs (loop device): the running root is the
 * subvolume @root mounted on a folder (--root) in a private mount namespace; the CLI mounts the top
 * level under /run in that namespace too. The root holds a shell (dash and its libraries) so that
 * COMMAND really runs chrooted into the new snapshot.
 */
let dir: string;
let loop: string;
let config: string;
let disk: ReturnType<typeof btrfsLoop> | undefined;

/** Runs bash in a private mount namespace with the top level on $T, @root on $R and a tmpfs on /run (the lock file). */
function sh(script: string) {
  const r = run('unshare', ['-m', '--propagation', 'private', 'bash', '-c', `set -e; T=${dir}/t R=${dir}/r; mkdir -p $T $R; mount ${loop} $T; mount -o subvol=@root ${loop} $R; mount -t tmpfs tmpfs /run; cd $T; ${script}`]);
  return { code: r.code, out: r.stdout, err: r.stderr };
}
/** impermanencectl ARGS --config CONFIG (in a private mount namespace, with @root on $R). */
function ctl(args: string, cfg = config) {
  return sh(`cd /; node ${CTL} --config ${cfg} ${args}`);
}
const list = `btrfs subvolume list . | sed 's/.* path //' | sort | tr '\\n' ' '`;

const wipeConfig = (from = '@pristine') => tree({ 'a.toml': `[wipe]\nmethod = "btrfs"\ndevice = "${loop}"\nsubvolume = "@root"\nfrom = "${from}"\n\n[persistence."/persist"]\ndirectories = ["/srv/kept"]\n` });

beforeAll(() => {
  disk = btrfsLoop('wipeinit-pristine-', '300M');
  ({ dir, device: loop } = disk);
  // A root with a shell and btrfs (COMMAND makes nested subvolumes): they and what they link, at their own paths.
  const libs = [...new Set(['/usr/bin/dash', '/usr/bin/btrfs'].flatMap((b) => run('ldd', [b]).stdout.match(/\/\S+/g)!))].join(' ');
  const setup = `set -e; M=$(mktemp -d); mount ${loop} $M; cd $M
    btrfs -q subvolume create @root
    mkdir -p @root/etc @root/usr/bin @root/proc @root/sys @root/dev @root/run @root/persist @root/srv/kept @root/tmp @root/var/lib/app
    ln -s usr/bin @root/bin
    cp /usr/bin/dash @root/usr/bin/sh
    cp /usr/bin/btrfs @root/usr/bin/btrfs
    for l in ${libs}; do cp --parents -L $l @root/; done
    echo 'root:x:0:0:root:/root:/bin/sh' > @root/etc/passwd
    echo nameserver 192.0.2.1 > @root/etc/resolv.conf
    echo state > @root/var/lib/app/db
    cd /; umount $M; rmdir $M`;
  const r = run('unshare', ['-m', '--propagation', 'private', 'bash', '-c', setup]);
  expect(r.stderr).toBe('');
  config = wipeConfig();
});
afterAll(() => {
  disk?.detach();
});

describe('wipe init', () => {
  it('refuses without a pristine to update, without --yes off a terminal, and from = "empty"', () => {
    expect(ctl('wipe update -- sh -c :')).toMatchObject({ code: 1, err: expect.stringMatching(/no pristine @pristine on \/dev\/loop\d+: make it first with impermanencectl wipe init/) });
    const noYes = ctl(`wipe init --root $R`);
    expect(noYes.code).toBe(1);
    expect(noYes.err).toMatch(/not asking without a terminal: give --yes/);
    expect(ctl(`wipe init --yes --root $R`, wipeConfig('empty'))).toMatchObject({ code: 1, err: expect.stringMatching(/from = "empty".*there is no pristine/) });
    // Not the [wipe] subvolume: a plain folder, and the top level.
    expect(ctl(`wipe init --yes --root ${dir}`)).toMatchObject({ code: 1, err: expect.stringMatching(/is not a btrfs mount .*not the root subvolume @root/) });
    expect(ctl(`wipe init --yes --root $T`)).toMatchObject({ code: 1, err: expect.stringMatching(/is the subvolume \(top level\), not @root/) });
    expect(ctl('wipe update')).toMatchObject({ code: 2, err: expect.stringMatching(/give the command to run in the pristine: wipe update -- COMMAND/) });
    expect(sh(list).out).toBe('@root ');
  });

  it('shows the drift it bakes in, makes a read-only @pristine from @root, and never replaces it', () => {
    const r = ctl(`wipe init --yes --root $R`);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/It bakes in what was written outside persisted paths since boot:/);
    expect(r.out).toMatch(/\/var\/lib\/app .*will be lost at reboot\n\s+to keep it: .*directories = \["\/var\/lib\/app"\]/);
    expect(r.out).not.toMatch(/srv\/kept/);
    expect(r.out).toMatch(/made @pristine \(read-only\) from @root on \/dev\/loop\d+/);
    expect(sh(`${list}; btrfs property get -ts @pristine ro; cat @pristine/var/lib/app/db`).out).toBe('@pristine @root ro=true\nstate\n');
    const again = ctl(`wipe init --yes --root $R`);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/the pristine @pristine exists already on \/dev\/loop\d+: to change it, run impermanencectl wipe update -- COMMAND/);
  });

  it('after an init cut before its rename, changes nothing before its checks and question, then puts the pristine in place (exit 0)', () => {
    sh('mv @pristine @pristine.new');
    expect(ctl(`wipe init --root $R`)).toMatchObject({ code: 1, err: expect.stringMatching(/not asking without a terminal/) });
    expect(ctl(`wipe init --yes --root $T`)).toMatchObject({ code: 1, err: expect.stringMatching(/is the subvolume \(top level\), not @root/) });
    expect(sh(list).out).toBe('@pristine.new @root ');
    const r = ctl(`wipe init --yes --root $R`);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/found @pristine\.new read-only and complete and no @pristine \(a wipe init or update cut before its last step\): it is now @pristine\n/);
    expect(r.out).not.toMatch(/made @pristine/);
    expect(sh(`${list}; btrfs property get -ts @pristine ro; cat @pristine/var/lib/app/db`).out).toBe('@pristine @root ro=true\nstate\n');
  });
});

describe('wipe update -- COMMAND', () => {
  it('runs COMMAND chrooted into a new snapshot, swaps it in read-only, and keeps the previous pristine', () => {
    const r = ctl(`wipe update -- sh -c 'echo "$IMPERMANENCE_WIPE_UPDATE" > /etc/updated; read x y < /proc/self/stat; echo "$x" > /etc/pid; cp_ok=1; cat /etc/resolv.conf 2>/dev/null; echo done'`);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/@pristine is the new pristine \(the previous one is kept as @pristine\.\d{4}-\d\d-\d\d_\d{6}\)/);
    expect(r.out).toMatch(/\ndone\n/);
    const after = sh(`${list}; btrfs property get -ts @pristine ro; cat @pristine/etc/updated; ls @pristine.*/etc; btrfs property get -ts @pristine.* ro; ls @pristine/etc/pid`).out;
    expect(after).toMatch(/^@pristine @pristine\.\d{4}-\d\d-\d\d_\d{6} @root ro=true\n1\npasswd\nresolv.conf\nro=true\n@pristine\/etc\/pid\n$/);
    // The running root is not changed.
    expect(sh('ls $R/etc').out).toBe('passwd\nresolv.conf\n');
  });

  it('on failure passes the exit code on, deletes the snapshot and leaves the pristine untouched', () => {
    const before = sh(`${list}; ls @pristine/etc`).out;
    const r = ctl(`wipe update -- sh -c 'echo half > /etc/half; exit 7'`);
    expect(r.code).toBe(7);
    expect(r.err).toMatch(/the command failed \(exit 7\): @pristine is unchanged/);
    expect(sh(`${list}; ls @pristine/etc`).out).toBe(before);
    expect(ctl('wipe update -- /no/such/program').code).toBe(127);
    expect(sh(`${list}; ls @pristine/etc`).out).toBe(before);
    // Killed by a signal: 128 + its number (SIGUSR1: 10 on Linux).
    expect(ctl(`wipe update -- sh -c 'kill -USR1 $$'`)).toMatchObject({ code: 138, err: expect.stringMatching(/the command failed \(exit 138\)/) });
    expect(sh(`${list}; ls @pristine/etc`).out).toBe(before);
  });

  it('keeps the 3 newest previous pristines (by time, then by the .N of a same-second name)', () => {
    sh('for d in 2020-01-01_000000 2020-01-02_000000 2020-01-03_000000 2020-01-03_000000.1; do btrfs -q subvolume snapshot -r @pristine @pristine.$d; done');
    const r = ctl('wipe update -- sh -c :');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/deleted @pristine\.2020-01-02_000000 \(only the 3 newest previous pristines are kept\)/);
    // Kept: the two made by wipe update here and the newest of those made by hand.
    expect(r.out).toMatch(/deleted @pristine\.2020-01-03_000000 /);
    expect(sh(list).out).toMatch(/^@pristine @pristine\.2020-01-03_000000\.1 @pristine\.2\d{3}-\d\d-\d\d_\d{6} @pristine\.2\d{3}-\d\d-\d\d_\d{6}(?:\.1)? @root $/);
  });

  it('finishes an update cut between its two renames, and deletes a writable leftover', () => {
    sh(`btrfs -q subvolume snapshot @pristine @pristine.new; touch @pristine.new/etc/cut; btrfs property set -ts @pristine.new ro true; mv @pristine @pristine.${utcStamp(new Date(Date.now() - 60_000))}`);
    const r = ctl('wipe update -- sh -c :');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/found @pristine\.new read-only and complete and no @pristine \(a wipe init or update cut before its last step\): it is now @pristine/);
    expect(sh('ls @pristine/etc').out).toMatch(/cut/);
    sh('btrfs -q subvolume snapshot @pristine @pristine.new');
    expect(ctl('wipe update -- sh -c :').out).toMatch(/deleted @pristine.new, left by an interrupted wipe init or update/);
    expect(sh(list).out).not.toMatch(/@pristine\.new/);
  });

  it('deletes a snapshot holding a nested subvolume (failed update, leftover, retention of a read-only one)', () => {
    const before = sh(list).out;
    const failed = ctl(`wipe update -- sh -c 'btrfs -q subvolume create /var/lib/machines; exit 5'`);
    expect(failed.code).toBe(5);
    expect(failed.err).toMatch(/the command failed \(exit 5\): @pristine is unchanged\n$/);
    expect(failed.err).not.toMatch(/could not be deleted/);
    expect(sh(list).out).toBe(before);
    // A writable leftover holding two (a run killed in COMMAND).
    sh('btrfs -q subvolume snapshot @pristine @pristine.new; btrfs -q subvolume create @pristine.new/var/lib/machines; btrfs -q subvolume create @pristine.new/var/lib/machines/deeper');
    const left = ctl('wipe update -- sh -c :');
    expect(left.err).toBe('');
    expect(left.out).toMatch(/deleted @pristine.new, left by an interrupted wipe init or update/);
    expect(sh(list).out).not.toMatch(/@pristine\.new|machines/);
    // Succeeding: the nested subvolume is in the new pristine, and retention deletes it later.
    const ok = ctl(`wipe update -- sh -c 'btrfs -q subvolume create /var/lib/machines'`);
    expect(ok.err).toBe('');
    expect(ok.code).toBe(0);
    expect(sh(list).out).toMatch(/ @pristine\/var\/lib\/machines /);
    expect(ctl('wipe update -- sh -c :').code).toBe(0);
    sh('for p in @pristine.2*; do [ "$(stat -c %i $p/var/lib/machines 2>/dev/null)" != 256 ] || mv $p @pristine.2000-01-01_000000; done');
    expect(sh(`${list}; btrfs property get -ts @pristine.2000-01-01_000000 ro`).out).toMatch(/ @pristine\.2000-01-01_000000\/var\/lib\/machines .* ro=true\n$/);
    const kept = ctl('wipe update -- sh -c :');
    expect(kept.err).toBe('');
    expect(kept.out).toMatch(/deleted @pristine\.2000-01-01_000000 \(only the 3 newest/);
    expect(sh(list).out).not.toMatch(/2000-01-01|machines/);
  });

  it('runs one at a time (a lock file in /run holding a live PID), and takes over a stale lock', () => {
    const busy = sh(`mkdir /run/impermanence; echo 1 > /run/impermanence/pristine.lock; cd /; node ${CTL} --config ${config} wipe update -- sh -c :`);
    expect(busy.code).toBe(1);
    expect(busy.err).toMatch(/another wipe init or update is running \(PID 1, \/run\/impermanence\/pristine.lock\)/);
    const stale = sh(`mkdir /run/impermanence; echo 999999999 > /run/impermanence/pristine.lock; cd /; node ${CTL} --config ${config} wipe update -- sh -c :; ls -A /run/impermanence`);
    expect(stale.code).toBe(0);
    expect(stale.out).toMatch(/@pristine is the new pristine/);
    expect(stale.out).not.toMatch(/pristine.lock/);
  });

  it('lock: an empty or unreadable lock counts as held, a stale one is taken over, and only its own is removed', async () => {
    const d = tempDir('wipeinit-lock-');
    const lock = join(d, 'pristine.lock');
    let ran = 0;
    const work = async () => void ran++;
    for (const text of ['', '12', 'x\n']) {
      writeFileSync(lock, text);
      await expect(locked(work, lock)).rejects.toThrow(/another wipe init or update is running \(no PID in it: remove it if none runs, /);
      expect(readdirSync(d)).toEqual(['pristine.lock']);
    }
    expect(ran).toBe(0);
    writeFileSync(lock, '999999999\n');
    await locked(async () => {
      ran++;
      expect(readdirSync(d)).toEqual(['pristine.lock']);
    }, lock);
    expect(readdirSync(d)).toEqual([]);
    // Replaced while held (another run took it for stale): left to that run.
    await locked(async () => writeFileSync(lock, '1\n'), lock);
    expect(existsSync(lock)).toBe(true);
    expect(ran).toBe(1);
  });

  it('lock: of 8 runs started together on a stale lock, never two hold it at once', () => {
    // locked() itself, bundled (as the build does) into a script, started 8 times at once, 5 rounds.
    const d = tempDir('wipeinit-race-');
    writeFileSync(join(d, 'race.ts'), `import { appendFileSync } from 'node:fs';
import { locked } from ${JSON.stringify(join(REPO, 'src/cli/pristine'))};
const [lock, log] = process.argv.slice(2) as [string, string];
locked(async () => {
  appendFileSync(log, 'in\\n');
  await new Promise((r) => setTimeout(r, 30));
  appendFileSync(log, 'out\\n');
}, lock).catch((e: Error) => appendFileSync(log, /another wipe init or update is running|keeps changing/.test(e.message) ? 'busy\\n' : e.message + '\\n'));
`);
    expect(run(join(REPO, 'node_modules/.bin/esbuild'), ['--bundle', '--platform=node', '--log-level=error', join(d, 'race.ts'), `--outfile=${join(d, 'race.js')}`]).stderr).toBe('');
    for (let round = 0; round < 5; round++) {
      const lock = join(d, `lock${round}`);
      const log = join(d, `log${round}`);
      writeFileSync(lock, '999999999\n');
      writeFileSync(log, '');
      expect(run('sh', ['-c', 'for i in 1 2 3 4 5 6 7 8; do "$1" "$2" "$3" "$4" & done; wait', 'sh', process.execPath, join(d, 'race.js'), lock, log]).code).toBe(0);
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      expect(lines.filter((l) => l !== 'busy').join(' ')).toMatch(/^in out(?: in out)*$/);
      expect(lines.filter((l) => l === 'in').length + lines.filter((l) => l === 'busy').length).toBe(8);
      expect(existsSync(lock)).toBe(false);
    }
    expect(readdirSync(d).filter((n) => n.includes('.'))).toEqual(['race.js', 'race.ts']);
  });

  it('orders previous pristines newest first', () => {
    expect(previousPristines(['@p', '@p.2026-01-01_000000.10', '@p.2026-01-01_000000.2', '@p.2026-01-01_000000', '@p.new', '@p.2025-12-31_235959', 'x/@p.2027-01-01_000000'], '@p')).toEqual(['@p.2026-01-01_000000.10', '@p.2026-01-01_000000.2', '@p.2026-01-01_000000', '@p.2025-12-31_235959']);
  });
});

describe('the package-manager hook', () => {
  const HOOK = join(REPO, 'packaging/hooks/impermanence-pkg-hook');
  const hook = (cfg: string, env: Record<string, string> = {}) => {
    const r = run('sh', [HOOK, 'apt'], { env: { IMPERMANENCE_HOOK_CTL: `node ${CTL} --config ${cfg}`, ...env } });
    return { code: r.code, out: r.stdout, err: r.stderr };
  };
  it('tells after a transaction on the running root that it is lost at reboot and how to keep it', () => {
    const r = hook(config);
    expect(r.code).toBe(0);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/this apt transaction changed the running root, which is wiped at the next boot/);
    expect(r.err).toMatch(/impermanencectl wipe update -- apt-get …/);
  });
  it('is silent without [wipe], with from = "empty", and inside wipe update', () => {
    expect(hook(tree({ 'a.toml': '[persistence."/persist"]\ndirectories = ["/srv"]\n' }))).toEqual({ code: 0, out: '', err: '' });
    expect(hook(wipeConfig('empty'))).toEqual({ code: 0, out: '', err: '' });
    expect(hook(config, { IMPERMANENCE_WIPE_UPDATE: '1' })).toEqual({ code: 0, out: '', err: '' });
  });
});
