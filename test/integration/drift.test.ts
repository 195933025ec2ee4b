/**
 * The drift scan on real files and real mounts: a tmpfs root in a private mount namespace with a
 * separate storage filesystem, a real bind mount, and another filesystem mounted inside the root
 * (which a scan must not enter, like find -xdev). Driven through impermanencectl diff --root.
 */
import { CTL, ctl, EXAMPLE_ROOT, run, tempDir, tree } from '../helpers';

interface Item { kind: string; path: string; files: number; bytes: number; suggestion: string; detail: string }

function diffInNamespace(setup: string, config: string, args: string[] = ['--since', 'all']) {
  const root = tempDir();
  const script = `set -e
R="$1"; C="$2"; shift 2
mount -t tmpfs tmpfs "$R"
mkdir -p "$R/etc" "$R/persistent"
cp ${EXAMPLE_ROOT}/etc/passwd ${EXAMPLE_ROOT}/etc/group "$R/etc/"
mount -t tmpfs tmpfs "$R/persistent"
${setup}
exec "$@" diff --root "$R" --config "$C" --json`;
  const r = run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', root, config, process.execPath, CTL, ...args]);
  if (r.code !== 0 && r.code !== 3) throw new Error(`diff failed (${r.code}): ${r.stderr}`);
  return { code: r.code, items: (JSON.parse(r.stdout) as { items: Item[] }).items };
}

const CONFIG = tree({
  'a.toml': `
[persistence."/persistent"]
directories = ["/var/log", "/srv/data"]
files = [{ file = "/etc/app.conf", method = "symlink" }]
[persistence."/persistent".users.bird]
directories = [".ssh"]
[drift]
ignore = ["/opt/scratch", "/home/*/Downloads"]
`,
});

describe('impermanencectl diff on a real root', () => {
  const { code, items } = diffInNamespace(
    `mkdir -p "$R/var/log" "$R/persistent/var/log" "$R/srv/other" "$R/var/lib/foo/db" "$R/tmp" "$R/var/cache/apt" "$R/home/bird/.cache" "$R/home/bird/Downloads" "$R/opt/scratch" "$R/home/bird/.ssh" "$R/persistent/home/bird/.ssh"
mount --bind "$R/persistent/var/log" "$R/var/log"
mount --bind "$R/persistent/home/bird/.ssh" "$R/home/bird/.ssh"
echo kept > "$R/var/log/syslog"
mount -t tmpfs tmpfs "$R/srv/other" && echo x > "$R/srv/other/elsewhere"
head -c 3000 /dev/zero > "$R/var/lib/foo/db/a"; head -c 1000 /dev/zero > "$R/var/lib/foo/b"
echo t > "$R/tmp/t"; echo c > "$R/var/cache/apt/c"; echo h > "$R/home/bird/.cache/h"; echo d > "$R/home/bird/Downloads/d"; echo s > "$R/opt/scratch/s"
mkdir -p "$R/home/bird/.config/app" && echo x > "$R/home/bird/.config/app/settings"
ln -s /persistent/etc/app.conf "$R/etc/app.conf"
mkdir -p "$R/persistent/var/lib/old" && echo old > "$R/persistent/var/lib/old/data"`,
    CONFIG,
  );
  const byPath = new Map(items.map((i) => [i.path, i]));

  it('groups what was written outside persisted paths, sized and ranked, with the config that would keep it', () => {
    expect(code).toBe(3);
    expect(byPath.get('/var/lib/foo')).toMatchObject({ kind: 'ephemeral', files: 2, bytes: 4000, suggestion: '[persistence."/persistent"]\ndirectories = ["/var/lib/foo"]' });
    expect(byPath.get('/home/bird/.config/app')).toMatchObject({ kind: 'ephemeral', files: 1, suggestion: '[persistence."/persistent".users.bird]\ndirectories = [".config/app"]' });
    expect(byPath.get('/etc/passwd')).toMatchObject({ kind: 'ephemeral', suggestion: '[persistence."/persistent"]\nfiles = ["/etc/passwd"]' });
    const ephemeral = items.filter((i) => i.kind === 'ephemeral');
    expect(ephemeral.map((i) => i.bytes)).toEqual([...ephemeral.map((i) => i.bytes)].sort((a, b) => b - a));
  });

  it('never enters persisted paths, other filesystems, storage or ignored paths', () => {
    for (const i of items.filter((x) => x.kind === 'ephemeral')) {
      expect(i.path).not.toMatch(/^\/(var\/log|srv\/other|persistent|tmp|var\/cache|home\/bird\/\.cache|home\/bird\/Downloads|opt\/scratch|home\/bird\/\.ssh)(\/|$)/);
    }
  });

  it('reports entries not in place, and orphans in storage', () => {
    expect(byPath.get('/srv/data')).toMatchObject({ kind: 'unmounted' });
    expect(byPath.get('/var/log')).toBeUndefined();
    expect(byPath.get('/etc/app.conf')).toBeUndefined(); // the symlink is in place
    expect(byPath.get('/persistent/var/lib/old')).toMatchObject({ kind: 'orphan', files: 1 });
    expect(items[0]!.kind).toBe('unmounted'); // what breaks persistence comes first
  });

  it("takes what a file's symlinked source points to in storage as declared, not as an orphan", () => {
    const { items } = diffInNamespace(
      `mkdir -p "$R/persistent/etc" "$R/persistent/shared" && echo s > "$R/persistent/shared/app.conf" && ln -s ../shared/app.conf "$R/persistent/etc/app.conf"
ln -s /persistent/etc/app.conf "$R/etc/app.conf"
mkdir -p "$R/persistent/stale" && echo x > "$R/persistent/stale/x"`,
      CONFIG,
    );
    const orphans = items.filter((i) => i.kind === 'orphan').map((i) => i.path);
    expect(orphans).toEqual(['/persistent/stale']);
  });

  it('counts only what changed since --since', () => {
    const since = diffInNamespace(
      `mkdir -p "$R/var/lib/a" "$R/var/lib/b"; echo old > "$R/var/lib/a/old"; sleep 0.2; date +%s.%N > "$R/.t"; sleep 0.2; echo new > "$R/var/lib/b/new"
exec "$@" diff --root "$R" --config "$C" --json --since "$(cat "$R/.t")"`,
      CONFIG,
    );
    const paths = since.items.filter((i) => i.kind === 'ephemeral').map((i) => i.path);
    expect(paths).toContain('/var/lib/b');
    expect(paths).not.toContain('/var/lib/a');
    expect(paths).not.toContain('/etc/passwd');
  });

  it('refuses a bad --since', () => {
    const r = ctl('diff', '--offline', '--config', CONFIG, '--since', 'yesterday');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--since takes "boot", "all" or seconds since the epoch/);
  });
});
