import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findConfigFiles, loadConfig, parseConfigText } from '../../src/config/load';
import { parentPerms, resolveConfig, type ResolvedConfig } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { EXAMPLE_ROOT, EXAMPLES, problemsOf, tree } from '../helpers';

const users = UserDb.read(EXAMPLE_ROOT);

function resolveText(text: string, name = 'a.toml'): ResolvedConfig {
  const dir = tree({ [name]: text });
  return resolveConfig(loadConfig([dir]), users);
}

describe('the seed examples', () => {
  const config = resolveConfig(loadConfig([EXAMPLES]), users);
  const byPath = new Map(config.entries.map((e) => [e.path, e]));

  it('resolve every entry with impermanence defaults', () => {
    expect(config.entries).toHaveLength(34);
    expect(config.storages.map((s) => s.path)).toEqual(['/persistent']);
    expect(byPath.get('/var/log')).toMatchObject({
      kind: 'directory', source: '/persistent/var/log', perms: { user: 'root', group: 'root', mode: 0o755 }, hideMount: true,
    });
    expect(byPath.get('/var/lib/colord')?.perms).toEqual({ user: 'colord', group: 'colord', mode: 0o750 });
    expect(byPath.get('/etc/machine-id')).toMatchObject({ kind: 'file', method: 'auto' });
    expect(parentPerms(byPath.get('/var/keys/secret_file')!, '/var/keys')).toEqual({ user: 'root', group: 'root', mode: 0o700 });
  });

  it('resolves home paths from the user database with the user as owner and 0700 homes', () => {
    const ssh = byPath.get('/home/bird/.ssh')!;
    expect(ssh.perms).toEqual({ user: 'bird', group: 'bird', mode: 0o700 });
    expect(parentPerms(ssh, '/home/bird')).toEqual({ user: 'bird', group: 'bird', mode: 0o700 });
    expect(parentPerms(ssh, '/home')).toEqual({ user: 'root', group: 'root', mode: 0o755 });
    const keyrings = byPath.get('/home/bird/.local/share/keyrings')!;
    expect(parentPerms(keyrings, '/home/bird/.local')).toEqual({ user: 'bird', group: 'bird', mode: 0o700 }); // created inside a home: not readable by others (impermanence #139)
    expect(byPath.get('/home/alice/.config/monitors.xml')).toMatchObject({ kind: 'file', method: 'symlink', home: { name: 'alice', home: '/home/alice' } });
    expect(byPath.get('/home/bird/VirtualBox VMs')?.source).toBe('/persistent/home/bird/VirtualBox VMs');
  });

  it('names the origin of each entry', () => {
    expect(byPath.get('/var/lib/colord')?.origin).toEqual({ file: join(EXAMPLES, '10-system.toml'), entry: 'persistence."/persistent".directories[5]' });
    expect(byPath.get('/home/bird/.screenrc')?.origin.entry).toBe('persistence."/persistent".users.bird.files[0]');
  });
});

describe('options', () => {
  it('accepts the same schema as JSON', () => {
    const config = resolveText(JSON.stringify({ persistence: { '/persist': { directories: ['/srv', { directory: '/opt/x', mode: '0700' }] } } }), 'a.json');
    expect(config.entries.map((e) => [e.path, e.perms?.mode])).toEqual([['/srv', 0o755], ['/opt/x', 0o700]]);
  });

  it('never creates what holds secrets readable by others: .ssh, .gnupg, /root and folders inside a home (impermanence #139)', () => {
    const c = resolveText(`
[persistence."/persist"]
directories = ["/root/.config/app", "/srv/.ssh", "/srv/open", { directory = "/srv/keys", parentDirectory = { mode = "0750", group = "bird" } }]
[persistence."/persist".users.bird]
directories = [".gnupg", ".local/share/keyrings", "Music"]
`);
    const e = new Map(c.entries.map((x) => [x.path, x]));
    expect(e.get('/root/.config/app')!.perms!.mode).toBe(0o700);
    expect(parentPerms(e.get('/root/.config/app')!, '/root')).toEqual({ user: 'root', group: 'root', mode: 0o700 });
    expect(e.get('/srv/.ssh')!.perms!.mode).toBe(0o700);
    expect(e.get('/srv/open')!.perms!.mode).toBe(0o755);
    expect(e.get('/home/bird/.gnupg')!.perms).toEqual({ user: 'bird', group: 'bird', mode: 0o700 });
    expect(e.get('/home/bird/Music')!.perms).toEqual({ user: 'bird', group: 'bird', mode: 0o755 });
    expect(parentPerms(e.get('/home/bird/.local/share/keyrings')!, '/home/bird/.local/share')).toEqual({ user: 'bird', group: 'bird', mode: 0o700 });
    // parentDirectory of a directory entry: its immediate parent, as declared.
    expect(e.get('/srv/keys')!.parentDirectory).toEqual({ path: '/srv', perms: { user: 'root', group: 'bird', mode: 0o750 } });
  });

  it('takes mountOptions per storage root and per entry, and refuses what no bind mount takes', () => {
    const c = resolveText(`
[persistence."/persist"]
mountOptions = ["nodev", "X-fstrim.notrim"]
directories = ["/srv/a", { directory = "/srv/b", mountOptions = ["noexec", "nodev"] }]
files = [{ file = "/etc/f", mountOptions = ["ro"] }]
`);
    expect(c.entries.map((x) => [x.path, x.mountOptions])).toEqual([
      ['/srv/a', ['nodev', 'X-fstrim.notrim']], ['/srv/b', ['nodev', 'X-fstrim.notrim', 'noexec']], ['/etc/f', ['nodev', 'X-fstrim.notrim', 'ro']],
    ]);
    expect(problemsOf(() => resolveText('[persistence."/p"]\ndirectories = [{ directory = "/a", mountOptions = ["uid=0", "no exec"] }]\n'))).toEqual([
      expect.stringMatching(/persistence\."\/p"\.directories\[0\]\.mountOptions: unknown mount option "uid=0": a persisted path takes ro, rw, nosuid/),
      expect.stringMatching(/persistence\."\/p"\.directories\[0\]\.mountOptions: mount option "no exec" is not one word/),
    ]);
    const dir = tree({ 'a.toml': '[persistence."/p"]\nmountOptions = ["ro"]\n', 'b.toml': '[persistence."/p"]\nmountOptions = ["nodev"]\n' });
    expect(problemsOf(() => resolveConfig(loadConfig([dir]), users))).toEqual([expect.stringMatching(/b\.toml: persistence\."\/p": mountOptions = \["nodev"\] conflicts with \["ro"\] in .*a\.toml; set it once$/)]);
  });

  it('applies hideMounts/allowTrash per storage and lets entries override them', () => {
    const c = resolveText(`
[persistence."/p"]
hideMounts = true
allowTrash = true
directories = ["/a", { directory = "/b", hideMount = false, allowTrash = false }]
files = ["/c"]
`);
    expect(c.entries.map((e) => [e.path, e.hideMount, e.allowTrash])).toEqual([['/a', true, true], ['/b', false, false], ['/c', true, false]]);
  });

  it('honours persistentStoragePath, enable = false, an explicit home and several storage roots', () => {
    const c = resolveText(`
[persistence."/p"]
directories = [{ directory = "/a", persistentStoragePath = "/other" }]
[persistence."/off"]
enable = false
directories = ["/never"]
[persistence."/q"]
files = ["/etc/x"]
[persistence."/q".users.bird]
home = "/srv/bird"
directories = ["data"]
`);
    expect(c.entries.map((e) => e.source)).toEqual(['/other/a', '/q/etc/x', '/q/srv/bird/data']);
    expect(c.storages.map((s) => s.path)).toEqual(['/p', '/q']);
  });

  it('normalizes repeated and trailing slashes', () => {
    expect(resolveText('[persistence."/p/"]\ndirectories = ["//var//log/"]').entries[0]).toMatchObject({ path: '/var/log', source: '/p/var/log' });
  });

  it('takes user and group by number as well as by name', () => {
    expect(resolveText('[persistence."/p"]\ndirectories = [{ directory = "/a", user = "1234", group = "5678" }]').entries[0]?.perms).toEqual({ user: '1234', group: '5678', mode: 0o755 });
  });
});

describe('drop-in folders', () => {
  it('lets /etc override a file of the same name in /usr/lib, merges the rest in lexical order, and masks with /dev/null', () => {
    const root = tree({
      'usr/lib/impermanence/persist.d/50-base.toml': '[persistence."/p"]\ndirectories = ["/from-usr"]',
      'usr/lib/impermanence/persist.d/10-first.toml': '[persistence."/p"]\ndirectories = ["/first"]',
      'usr/lib/impermanence/persist.d/60-masked.toml': '[persistence."/p"]\ndirectories = ["/masked"]',
      'etc/impermanence/persist.d/50-base.toml': '[persistence."/p"]\ndirectories = ["/from-etc"]',
      'run/impermanence/persist.d/70-run.json': '{"persistence": {"/p": {"directories": ["/from-run"]}}}',
      'etc/impermanence/persist.d/README': 'not a config file',
    });
    symlinkSync('/dev/null', join(root, 'etc/impermanence/persist.d/60-masked.toml'));
    const dirs = ['etc', 'run', 'usr/lib'].map((d) => join(root, d, 'impermanence/persist.d'));
    expect(findConfigFiles(dirs).map((f) => f.slice(root.length))).toEqual([
      '/usr/lib/impermanence/persist.d/10-first.toml',
      '/etc/impermanence/persist.d/50-base.toml',
      '/run/impermanence/persist.d/70-run.json',
    ]);
    expect(resolveConfig(loadConfig(dirs), users).entries.map((e) => e.path)).toEqual(['/first', '/from-etc', '/from-run']);
  });

  it('treats missing folders as empty', () => {
    expect(findConfigFiles(['/nonexistent/impermanence'])).toEqual([]);
  });
});

describe('bad configs name the file, the entry and what is wrong', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['missing quote', '[persistence."/p"]\ndirectories = ["/var/log]\n', /a\.toml:2:\d+: invalid TOML/],
    ['relative path', '[persistence."/p"]\ndirectories = ["var/log"]', /directories\[0\]: path "var\/log" is relative; write it from the root, such as "\/var\/log"/],
    ['..', '[persistence."/p"]\ndirectories = ["/var/../etc"]', /directories\[0\]: path "\/var\/..\/etc" contains ".."/],
    ['unknown option', '[persistence."/p"]\nhideMount = true', /persistence\."\/p": unknown option "hideMount" \(did you mean "hideMounts"\?\)/],
    ['unknown option in an entry', '[persistence."/p"]\ndirectories = [{ directory = "/a", mod = "0700" }]', /directories\[0\]: unknown option "mod" \(did you mean "mode"\?\)/],
    ['duplicate entry', '[persistence."/p"]\ndirectories = ["/var/log", "/srv", "/var/log/"]', /directories\[2\]: duplicate: \/var\/log is already persisted by .*a\.toml: persistence\."\/p"\.directories\[0\]/],
    ['unknown user', '[persistence."/p".users.nobodyhere]\nfiles = [".x"]', /users\.nobodyhere: unknown user "nobodyhere": not in .*\/etc\/passwd/],
    ['unknown owner', '[persistence."/p"]\ndirectories = [{ directory = "/a", user = "ghost" }]', /directories\[0\]: user: unknown user "ghost"/],
    ['bad mode', '[persistence."/p"]\ndirectories = [{ directory = "/a", mode = "rwx" }]', /directories\[0\]: mode: mode "rwx" is neither octal/],
    ['wrong type', '[persistence."/p"]\ndirectories = [42]', /directories\[0\]: expected a path or a table with "directory"/],
    ['bad method', '[persistence."/p"]\nfiles = [{ file = "/a", method = "bind" }]', /files\[0\]\.method: expected "auto" or "symlink"/],
    ['nested entry', '[persistence."/p"]\ndirectories = ["/var/lib", "/var/lib/foo"]', /directories\[1\]: \/var\/lib\/foo is inside \/var\/lib, which is already persisted by .*; persist only one of them/],
    ['file inside a directory', '[persistence."/p"]\ndirectories = ["/etc/ssh"]\nfiles = ["/etc/ssh/sshd_config"]', /files\[0\]: \/etc\/ssh\/sshd_config is inside \/etc\/ssh/],
    ['path inside storage', '[persistence."/p"]\ndirectories = ["/p/x"]', /directories\[0\]: \/p\/x is inside the storage root \/p/],
    ['storage inside a path', '[persistence."/persist/a"]\ndirectories = ["/persist"]', /storage root \/persist\/a is inside \/persist/],
    ['the root itself', '[persistence."/p"]\ndirectories = ["/"]', /the root directory "\/" itself cannot be persisted/],
    ['absolute home path', '[persistence."/p".users.bird]\ndirectories = ["/home/bird/x"]', /users\.bird\.directories\[0\]: path "\/home\/bird\/x" is absolute; home paths are written relative to the home/],
    ['relative storage root', '[persistence."persist"]\ndirectories = ["/a"]', /persistence\.persist: storage root: path "persist" is relative/],
    ['unknown top-level key', '[persistance."/p"]\ndirectories = ["/a"]', /unknown option "persistance" \(did you mean "persistence"\?\)/],
    ['control character', '[persistence."/p"]\ndirectories = ["/a\\nb"]', /contains a control character/],
    ['a name longer than NAME_MAX', `[persistence."/p"]\ndirectories = ["/${'x'.repeat(256)}"]`, /directories\[0\]: the name "x+…" in the path is 256 bytes long; Linux and systemd allow at most 255/],
    ['a name longer than NAME_MAX in bytes', `[persistence."/p"]\ndirectories = ["/${'é'.repeat(128)}"]`, /directories\[0\]: the name .* is 256 bytes long/],
    ['a path of PATH_MAX bytes', `[persistence."/p"]\ndirectories = ["${'/xxxxxxx'.repeat(512)}"]`, /directories\[0\]: path is 4096 bytes long; Linux and systemd allow at most 4095/],
    ['a source of PATH_MAX bytes', `[persistence."/p"]\ndirectories = ["${'/xxxxxxx'.repeat(511)}/xxxxx"]`, /directories\[0\]: path is 4096 bytes long/],
    ['a path ending in a space', '[persistence."/p"]\ndirectories = ["/srv/a "]', /directories\[0\]: path "\/srv\/a " ends with a space, which systemd strips from Where=/],
    ['a storage root ending in a space', '[persistence."/p "]\ndirectories = ["/srv/a"]', /persistence\."\/p ": storage root: path "\/p " ends with a space/],
    ['a storage root too long for its prepare unit', `[persistence."/${'p'.repeat(230)}"]\ndirectories = ["/srv/a"]`, /storage root: the storage root is too long for its unit impermanence-prepare@p+…: 259 characters escaped, systemd allows 255/],
    ['persistentStoragePath too long', `[persistence."/p"]\ndirectories = [{ directory = "/a", persistentStoragePath = "/${'q'.repeat(230)}" }]`, /directories\[0\]: persistentStoragePath: the storage root is too long/],
  ];
  it.each(cases)('%s', (_name, text, expected) => {
    const problems = problemsOf(() => resolveText(text));
    expect(problems.join('\n')).toMatch(expected);
    for (const p of problems) expect(p).not.toContain('\n');
  });

  it('refuses a lone surrogate in a path (it has no UTF-8 name) and a file that is not UTF-8', () => {
    expect(problemsOf(() => resolveText('{"persistence": {"/p": {"directories": ["/srv/\\ud800x"]}}}', 'a.json')).join('\n')).toMatch(
      /directories\[0\]: path "\/srv\/\\ud800x" is not valid Unicode/,
    );
    const dir = tree({});
    writeFileSync(join(dir, 'a.toml'), Buffer.concat([Buffer.from('[persistence."/p"]\ndirectories = ["/srv/'), Buffer.of(0xff), Buffer.from('"]\n')]));
    expect(problemsOf(() => loadConfig([dir]))).toEqual([`${dir}/a.toml: is not valid UTF-8 (TOML and JSON files must be)`]);
  });

  it('keeps every problem on one line of bounded length: control characters escaped, huge keys cut and counted', () => {
    const huge = 'k'.repeat(10 * 1024 * 1024);
    const started = Date.now();
    const [problem, ...rest] = problemsOf(() => resolveText(JSON.stringify({ persistence: { '/p': { [huge]: 1 } } }), 'a.json'));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(rest).toEqual([]);
    expect(problem!.length).toBeLessThan(3000);
    expect(problem).toMatch(/unknown option "k+… \(\d+ more characters\)$/);
    // Node 20 quotes the text of a JSON syntax error, newlines included.
    const [json] = problemsOf(() => parseConfigText('/x/a.json', '{\n"persistence":\n}\n'));
    expect(json).toMatch(/^\/x\/a\.json(:\d+:\d+)?: invalid JSON: /);
    expect(json).not.toMatch(/[\n\r\u0000-\u001f]/);
    const [key] = problemsOf(() => resolveText(JSON.stringify({ persistence: { '/p': { 'a\nb\u0000c\u001b[31m': 1 } } }), 'a.json'));
    expect(key).toContain('unknown option "a\\nb\\u0000c\\u001b[31m"');
  });

  it('refuses a config file whose name holds a control character (units name it in SourcePath=)', () => {
    const dir = tree({ 'a\nb.toml': '[persistence."/p"]\ndirectories = ["/srv"]\n' });
    expect(problemsOf(() => loadConfig([dir]))).toEqual([`${dir}/a\\nb.toml: the file name contains a control character; rename the file`]);
  });

  it('accepts a long path whose unit name systemd hashes', () => {
    const long = '/srv' + '/abcdefghi'.repeat(40);
    expect(resolveText(`[persistence."/p"]\ndirectories = ["${long}"]`).entries[0]?.path).toBe(long);
  });

  it('reports a JSON syntax error with its line and column', () => {
    expect(() => parseConfigText('/x/a.json', '{\n  "persistence": {,}\n}')).toThrow(/^\/x\/a\.json:2:\d+: invalid JSON/);
  });

  it('refuses conflicting storage-wide options across files and names both', () => {
    const dir = tree({
      '10-a.toml': '[persistence."/p"]\nhideMounts = true\ndirectories = ["/a"]',
      '20-b.toml': '[persistence."/p"]\nhideMounts = false\ndirectories = ["/b"]',
    });
    expect(problemsOf(() => resolveConfig(loadConfig([dir]), users)).join('\n')).toMatch(/20-b\.toml: persistence\."\/p": hideMounts = false conflicts with hideMounts = true in .*10-a\.toml/);
  });

  it('refuses the same path declared in two files and two storage roots', () => {
    const dir = tree({
      '10-a.toml': '[persistence."/p"]\ndirectories = ["/srv"]',
      '20-b.toml': '[persistence."/q"]\ndirectories = ["/srv"]',
    });
    expect(problemsOf(() => resolveConfig(loadConfig([dir]), users)).join('\n')).toMatch(/20-b\.toml: persistence\."\/q"\.directories\[0\]: duplicate: \/srv is already persisted by .*10-a\.toml/);
  });

  it('reports every problem of every file at once', () => {
    const dir = tree({
      '10-a.toml': '[persistence."/p"]\ndirectories = [{ dir = "/a" }, 7]',
      '20-b.toml': '[persistence."/p"\n',
    });
    const problems = problemsOf(() => resolveConfig(loadConfig([dir]), users));
    expect(problems).toHaveLength(4);
    expect(problems.filter((p) => p.includes('10-a.toml'))).toHaveLength(3);
  });

  it('refuses conflicting parentDirectory declarations for the same parent', () => {
    expect(problemsOf(() => resolveText(`
[persistence."/p"]
files = [
  { file = "/etc/ssh/a", parentDirectory = { mode = "0700" } },
  { file = "/etc/ssh/b", parentDirectory = { mode = "0755" } },
]`)).join('\n')).toMatch(/files\[1\]: parentDirectory of \/etc\/ssh differs/);
  });

  it('does not touch an unreadable file silently', () => {
    const dir = tree({ 'a.toml': '' });
    writeFileSync(join(dir, 'b.toml'), '\u0000garbage = ');
    expect(problemsOf(() => loadConfig([dir])).join('\n')).toMatch(/b\.toml:1:\d+: invalid TOML/);
  });
});
