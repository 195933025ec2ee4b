import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load';
import { presetsIn, systemPresets } from '../../src/config/presets';
import { resolveConfig, type ResolvedConfig } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { EXAMPLE_ROOT, problemsOf, REPO, tree } from '../helpers';

const users = UserDb.read(EXAMPLE_ROOT);
const SHIPPED = join(REPO, 'presets');
const shipped = presetsIn([SHIPPED]);

function resolveText(text: string, presets = shipped): ResolvedConfig {
  return resolveConfig(loadConfig([tree({ 'a.toml': text })]), users, presets);
}

const paths = (c: ResolvedConfig) => c.entries.map((e) => e.path);

describe('presets', () => {
  it('include their system paths from a storage root, and their home paths from users.<name>', () => {
    const c = resolveText(`
[persistence."/persistent"]
include = ["ssh", "networkmanager"]
users.bird.include = ["ssh", "gnupg"]
`);
    expect(paths(c)).toEqual(expect.arrayContaining([
      '/etc/ssh/ssh_host_ed25519_key', '/etc/NetworkManager/system-connections', '/var/lib/NetworkManager',
      '/home/bird/.ssh', '/home/bird/.gnupg',
    ]));
    const ssh = c.entries.find((e) => e.path === '/home/bird/.ssh')!;
    expect(ssh).toMatchObject({ source: '/persistent/home/bird/.ssh', perms: { user: 'bird', mode: 0o700 } });
    // The origin names the line to change (the include), and the preset.
    expect(ssh.origin.file).toMatch(/a\.toml$/);
    expect(ssh.origin.entry).toBe('persistence."/persistent".users.bird.include[0] (preset ssh: home.directories[0])');
  });

  it('leave out what the config declares itself, or holds in a persisted folder, and what an earlier preset gave', () => {
    const c = resolveText(`
[persistence."/persistent"]
include = ["base", "gnome", "kde"]
directories = ["/var/lib/systemd"]
files = [{ file = "/etc/machine-id", method = "symlink" }]
`);
    expect(paths(c).filter((p) => p.startsWith('/var/lib/systemd'))).toEqual(['/var/lib/systemd']);
    expect(c.entries.filter((e) => e.path === '/etc/machine-id').map((e) => e.method)).toEqual(['symlink']);
    expect(paths(c).filter((p) => p === '/var/lib/AccountsService')).toHaveLength(1);
    expect(paths(c)).toContain('/var/log/journal');
  });

  it('an unknown preset is an error naming the entry, the nearest name and the presets there are', () => {
    const [problem] = problemsOf(() => resolveText('[persistence."/persistent"]\ninclude = ["base", "shh"]\n'));
    expect(problem).toMatch(/a\.toml: persistence\."\/persistent"\.include\[1\]: unknown preset "shh" \(did you mean "ssh"\?\); presets: base, bluetooth, .*ssh/);
  });

  it('a preset included at the wrong level says where it belongs', () => {
    expect(problemsOf(() => resolveText('[persistence."/persistent"]\ninclude = ["firefox"]\n'))[0])
      .toMatch(/include\[0\]: preset "firefox" has only paths in a home .*users\.<name>\.include = \["firefox"\]/);
    expect(problemsOf(() => resolveText('[persistence."/persistent".users.bird]\ninclude = ["docker"]\n'))[0])
      .toMatch(/users\.bird\.include\[0\]: preset "docker" has no paths in a home/);
  });

  it('a broken preset file is reported with its own file name and a did-you-mean', () => {
    const dir = tree({ 'mine.toml': 'directorys = ["/var/lib/mine"]\n' });
    const problems = problemsOf(() => resolveText('[persistence."/persistent"]\ninclude = ["mine"]\n', presetsIn([dir])));
    expect(problems[0]).toBe(`${join(dir, 'mine.toml')}: unknown option "directorys" (did you mean "directories"?)`);
  });

  it('an /etc preset replaces the shipped one of the same name', () => {
    const etc = tree({ 'ssh.toml': 'files = ["/etc/ssh/ssh_host_ed25519_key"]\n' });
    const c = resolveText('[persistence."/persistent"]\ninclude = ["ssh"]\n', presetsIn([etc, SHIPPED]));
    expect(paths(c)).toEqual(['/etc/ssh/ssh_host_ed25519_key']);
  });

  it('a misspelled include option gets a did-you-mean like any other', () => {
    expect(problemsOf(() => resolveText('[persistence."/persistent"]\ninclud = ["ssh"]\n'))[0]).toMatch(/unknown option "includ" \(did you mean "include"\?\)/);
  });

  it('every shipped preset resolves, all of them together without a conflict', () => {
    const names = readdirSync(SHIPPED).map((n) => n.replace(/\.toml$/, '')).sort();
    expect(shipped.names()).toEqual(names);
    expect(names).toEqual(expect.arrayContaining(['base', 'ssh', 'networkmanager', 'bluetooth', 'gnome', 'kde', 'firefox', 'keyrings', 'gnupg', 'postgresql', 'docker', 'libvirt']));
    const system = names.filter((n) => shipped.get(n)!.decl.directories?.length || shipped.get(n)!.decl.files?.length);
    const home = names.filter((n) => shipped.get(n)!.decl.home);
    const c = resolveText(`[persistence."/persistent"]\ninclude = ${JSON.stringify(system)}\nusers.bird.include = ${JSON.stringify(home)}\n`);
    expect(c.entries.length).toBeGreaterThan(40);
    for (const n of names) expect(shipped.get(n)!.decl.description).toBeTruthy();
  });

  it('are looked for in /etc/impermanence/presets then /usr/share/impermanence/presets under the root', () => {
    delete process.env.IMPERMANENCE_PRESETS_PATH;
    expect(systemPresets('/img').dirs).toEqual(['/img/etc/impermanence/presets', '/img/usr/share/impermanence/presets']);
  });
});
