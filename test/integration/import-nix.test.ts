/**
 * `impermanencectl import nix`, on what the real Nix prints: test/fixtures/nix/*.json were made
 * by scripts/nix-fixtures.sh, which evaluates nix-community/impermanence's NixOS module with the
 * real nixpkgs lib (Nix 2.8 from Debian) on the modules beside them, through the README's
 * `--apply` expression (examples/nixos-export.nix). seed.nix is examples/persist.d written as a
 * NixOS user writes it. Round trip: import → `check` passes → the generator's plan is the same
 * as for the original config, and every entry NixOS evaluated is resolved here with the same
 * path, storage, owner, mode, mount flags and method.
 */
import { cpSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { parseMode } from '../../src/config/mode';
import { resolveConfig, type Entry } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { importNix } from '../../src/config/import-nix';
import { CTL, ctl, EXAMPLE_ROOT, EXAMPLES, REPO, run, tempDir } from '../helpers';

const FIXTURES = join(REPO, 'test', 'fixtures', 'nix');
const fixture = (name: string) => join(FIXTURES, `${name}.json`);

/** A root whose user database also has what wide.nix names (carol, www-data, mail). */
function wideRoot(): string {
  const root = tempDir();
  cpSync(join(EXAMPLE_ROOT, 'etc'), join(root, 'etc'), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  writeFileSync(join(root, 'etc', 'passwd'), readFileSync(join(root, 'etc', 'passwd'), 'utf8') + 'carol:x:1002:1002:Carol:/home/carol:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n');
  writeFileSync(join(root, 'etc', 'group'), readFileSync(join(root, 'etc', 'group'), 'utf8') + 'carol:x:1002:\nwww-data:x:33:\nmail:x:8:\n');
  return root;
}

/** Imports a fixture with the real CLI into a new config folder; returns the folder and the CLI's output. */
function importTo(name: string, root: string) {
  const dir = tempDir();
  const file = join(dir, '10-imported.toml');
  const r = ctl('import', 'nix', fixture(name), '--out', file, '--root', root);
  return { dir, file, ...r };
}

/** The generator's output for a config folder, with the config file's name taken out (SourcePath=). */
function plan(dir: string, root: string): Map<string, string> {
  const r = ctl('generate', '--out', '-', '--json', '--config', dir, '--root', root);
  expect(r.code).toBe(0);
  const { files, contents } = JSON.parse(r.stdout) as { files: string[]; contents: Record<string, string> };
  expect(Object.keys(contents).sort()).toEqual([...files].sort());
  const out = new Map<string, string>();
  for (const [name, text] of Object.entries(contents)) {
    // Lines in another order only where entries come in another order (tmpfiles rules).
    out.set(name, text.replace(/^SourcePath=.*$/gm, 'SourcePath=…').split('\n').sort().join('\n'));
  }
  return out;
}

function strip(e: Entry) {
  const { origin: _origin, ...rest } = e;
  return rest;
}

describe('import nix: the seed configs, as nix eval prints them', () => {
  it('gives a config that passes check, whose plan is the original config\'s', () => {
    const r = importTo('seed', EXAMPLE_ROOT);
    expect(r.stderr).not.toMatch(/does not pass/);
    expect(r.code).toBe(0);
    const check = ctl('check', '--config', r.dir, '--root', EXAMPLE_ROOT);
    expect(check.stderr).toBe('');
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^valid: 34 entries/);

    const imported = plan(r.dir, EXAMPLE_ROOT);
    const original = plan(EXAMPLES, EXAMPLE_ROOT);
    expect([...imported.keys()].sort()).toEqual([...original.keys()].sort());
    expect(imported.size).toBeGreaterThan(30);
    for (const [name, text] of original) expect([name, imported.get(name)]).toEqual([name, text]);

    // And entry by entry: the same resolved entries, in any order.
    const users = UserDb.read(EXAMPLE_ROOT);
    const a = resolveConfig(loadConfig([r.dir]), users).entries.map(strip);
    const b = resolveConfig(loadConfig([EXAMPLES]), users).entries.map(strip);
    const byPath = (x: { path: string }, y: { path: string }) => x.path.localeCompare(y.path);
    expect(a.sort(byPath)).toEqual(b.sort(byPath));
  });

  it('writes what NixOS left at its defaults as nothing, and what it set as the same option', () => {
    const { text } = importNix(JSON.parse(readFileSync(fixture('seed'), 'utf8')), { source: 'seed.json', users: UserDb.read(EXAMPLE_ROOT) });
    expect(text).toContain('[persistence."/persistent"]\nhideMounts = true\ndirectories = [\n  "/var/log",\n');
    expect(text).toContain('  { directory = "/var/lib/colord", user = "colord", group = "colord", mode = "u=rwx,g=rx,o=" },\n');
    expect(text).toContain('  { file = "/var/keys/secret_file", parentDirectory = { mode = "u=rwx,g=,o=" } },\n');
    expect(text).toContain('[persistence."/persistent".users.bird]\ndirectories = [\n  "Downloads",\n');
    expect(text).toContain('  { file = ".config/monitors.xml", method = "symlink" },\n');
    // Internal options of the evaluated submodules are never written.
    for (const internal of ['dirPath', 'filePath', 'defaultPerms', 'enableDebugging', 'assertions', 'persistentStoragePath', 'home =']) expect(text).not.toContain(internal);
  });
});

describe('import nix: every option impermanence has (wide.nix)', () => {
  const root = wideRoot();
  const r = importTo('wide', root);

  it('passes check', () => {
    expect(r.stderr).not.toMatch(/does not pass/);
    expect(r.code).toBe(0);
    const check = ctl('check', '--config', r.dir, '--root', root);
    expect(check.stderr).toBe('');
    expect(check.code).toBe(0);
  });

  it('names on stderr, and in comments, each thing that is not carried over', () => {
    const notes = r.stderr.split('\n').filter((l) => l.startsWith('note: '));
    expect(notes).toEqual(expect.arrayContaining([
      'note: environment.persistence.main.enableDebugging: no equivalent (the generator and impermanence-prepare always log to the journal); not carried over',
      'note: environment.persistence.main.enableWarnings: no equivalent (impermanencectl check reports every problem); not carried over',
      expect.stringMatching(/^note: environment\.persistence\.main\.directories\[0\]: \/var\/lib\/nixos is NixOS's own state/),
    ]));
    const text = readFileSync(r.file, 'utf8');
    for (const n of notes) expect(text).toContain(`#   ${n.slice('note: '.length)}\n`);
  });

  it('keys a table by its persistentStoragePath, keeps a disabled one off, and a home that is not /etc/passwd\'s', () => {
    const text = readFileSync(r.file, 'utf8');
    expect(text).toContain('[persistence."/persistent"]\nallowTrash = true\n');
    expect(text).toContain('[persistence."/old"]\nenable = false\n');
    expect(text).toContain('[persistence."/persistent".users.carol]\nhome = "/srv/carol"\n');
    expect(text).toContain('{ directory = "/var/lib/big", persistentStoragePath = "/bulk" }');
  });
});

describe.each(['seed', 'wide'])('import nix: %s.json, entry by entry against what NixOS evaluated', (name) => {
  it('resolves each enabled entry with the same path, storage, owner, mode, mount flags and method', () => {
    const root = name === 'seed' ? EXAMPLE_ROOT : wideRoot();
    const r = importTo(name, root);
    expect(r.code).toBe(0);
    const entries = new Map(resolveConfig(loadConfig([r.dir]), UserDb.read(root)).entries.map((e) => [e.path, e]));
    type Evaluated = Record<string, never> & { directory?: string; file?: string; dirPath: string; filePath: string; persistentStoragePath: string; user: string; group: string; mode: string; hideMount: boolean; allowTrash: boolean; method: string; parentDirectory: { user: string; group: string; mode: string; dirPath: string } };
    const nix = JSON.parse(readFileSync(fixture(name), 'utf8')) as Record<string, { enable: boolean; directories: Evaluated[]; files: Evaluated[]; users: Record<string, { directories: Evaluated[]; files: Evaluated[] }> }>;
    let compared = 0;
    for (const storage of Object.values(nix)) {
      if (!storage.enable) continue;
      const all = [storage, ...Object.values(storage.users)];
      for (const d of all.flatMap((s) => s.directories)) {
        const e = entries.get(d.dirPath);
        expect([d.dirPath, e?.kind, e?.storage, e?.perms, e?.hideMount, e?.allowTrash]).toEqual([d.dirPath, 'directory', d.persistentStoragePath, { user: d.user, group: d.group, mode: parseMode(d.mode) }, d.hideMount, d.allowTrash]);
        compared++;
      }
      for (const f of all.flatMap((s) => s.files)) {
        const e = entries.get(f.filePath);
        expect([f.filePath, e?.kind, e?.storage, e?.method]).toEqual([f.filePath, 'file', f.persistentStoragePath, f.method]);
        const p = f.parentDirectory;
        // A parentDirectory NixOS was told (not its defaults) is the immediate parent's, here too.
        if (e?.parentDirectory) expect(e.parentDirectory).toEqual({ path: p.dirPath, perms: { user: p.user, group: p.group, mode: parseMode(p.mode) } });
        compared++;
      }
    }
    expect(compared).toBe(entries.size);
    expect(compared).toBe(name === 'seed' ? 34 : 8);
  });
});

describe('import nix: input', () => {
  it('reads standard input with "-", and prints the TOML', () => {
    const r = run(process.execPath, [CTL, 'import', 'nix', '-', '--root', EXAMPLE_ROOT], {
      input: JSON.stringify({ '/persist': { directories: ['/srv'], users: { bird: { files: ['.profile'] } } } }),
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`# Imported from NixOS's environment.persistence (standard input) by impermanencectl import nix.

[persistence."/persist"]
directories = [
  "/srv",
]

[persistence."/persist".users.bird]
files = [
  ".profile",
]
`);
  });

  it('names an option it does not know, once with a count, and one impermanence removed', () => {
    const { notes } = importNix(
      { '/p': { allowOther: true, directories: [{ directory: '/a', configureParent: true }, { directory: '/b', configureParent: false }] } },
      { source: 'x.json', users: UserDb.read(EXAMPLE_ROOT) },
    );
    expect(notes).toEqual([
      'environment.persistence."/p".allowOther: removed from impermanence (no effect there); not carried over',
      'environment.persistence."/p".directories[0] (and 1 more): unknown option "configureParent"; not carried over',
    ]);
  });

  it('says what is wrong with input that is not environment.persistence, exit 1, nothing written', () => {
    const dir = tempDir();
    const cases: Array<[string, RegExp]> = [
      ['{"/p": ', /bad\.json: invalid JSON: /],
      ['[1, 2]', /bad\.json: expected environment\.persistence: an object of storage roots, not a list/],
      ['{"/p": {"directories": "/var/log"}}', /environment\.persistence\."\/p"\.directories: expected a list, not the string "\/var\/log"/],
      ['{"/p": {"directories": [{"user": "root"}]}}', /environment\.persistence\."\/p"\.directories\[0\]: no "directory"/],
      ['{"p": {"directories": ["/a"]}}', /the storage root "p" is not an absolute path/],
    ];
    for (const [text, message] of cases) {
      writeFileSync(join(dir, 'bad.json'), text);
      const r = ctl('import', 'nix', join(dir, 'bad.json'), '--out', join(dir, 'out.toml'));
      expect([r.code, r.stdout]).toEqual([1, '']);
      expect(r.stderr).toMatch(message);
      expect(readdirSync(dir)).toEqual(['bad.json']);
    }
  });

  it('exits 1 when the result does not pass check, naming the problem, and still writes the TOML', () => {
    const r = run(process.execPath, [CTL, 'import', 'nix', '-', '--root', EXAMPLE_ROOT], {
      input: JSON.stringify({ '/persist': { users: { nobodyhere: { directories: ['x'] } } } }),
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('[persistence."/persist".users.nobodyhere]');
    expect(r.stderr).toContain('note: environment.persistence."/persist".users.nobodyhere: no user "nobodyhere" in');
    expect(r.stderr).toMatch(/imported\.toml: persistence\."\/persist"\.users\.nobodyhere: unknown user "nobodyhere"/);
  });

  it('never writes over an existing file', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'mine.toml'), 'kept\n');
    const r = ctl('import', 'nix', fixture('seed'), '--out', join(dir, 'mine.toml'), '--root', EXAMPLE_ROOT);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/mine\.toml: it exists; give a new file name/);
    expect(readFileSync(join(dir, 'mine.toml'), 'utf8')).toBe('kept\n');
  });

  it('usage: only the nix format, one file', () => {
    expect(ctl('import', 'yaml', 'x').code).toBe(2);
    expect(ctl('import', 'nix').stderr).toMatch(/^impermanencectl import: .*nix FILE\.json\|-.*; see 'impermanencectl import --help'\n$/);
  });
});

describe('the README', () => {
  it('gives the --apply expression of examples/nixos-export.nix, word for word', () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    const expr = readFileSync(join(REPO, 'examples', 'nixos-export.nix'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).join('\n');
    expect(readme).toContain(expr);
  });
});
