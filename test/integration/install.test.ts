import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, run, tempDir } from '../helpers';

/** packaging/install.sh: the one list of files every package (deb, rpm, Arch) and the boot test install. */
describe('packaging/install.sh', () => {
  const install = (...args: string[]) => {
    const dest = tempDir('impermanence-install-');
    const r = run(join(REPO, 'packaging', 'install.sh'), [...args, dest]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return dest;
  };

  it('links the generator from systemd\'s folder to the programs, and installs every preset', () => {
    const dest = install('--package');
    const link = join(dest, 'usr/lib/systemd/system-generators/impermanence-generator');
    expect(readlinkSync(link)).toBe('../../impermanence/impermanence-generator');
    expect(realpathSync(link)).toBe(join(realpathSync(dest), 'usr/lib/impermanence/impermanence-generator'));
    expect(readdirSync(join(dest, 'usr/share/impermanence/presets')).sort()).toEqual(readdirSync(join(REPO, 'presets')).sort());
    expect(existsSync(join(dest, 'usr/lib/systemd/system-preset/80-impermanence.preset'))).toBe(true);
  });

  it('installs the initrd scripts beside the shell library they both source, which the initrd hooks copy', () => {
    const lib = join(install('--package'), 'usr/lib/impermanence');
    for (const f of ['impermanence-wipe', 'impermanence-tmpfs-root', 'impermanence-lib.sh']) expect(existsSync(join(lib, f))).toBe(true);
    // Each initrd builder that installs a script installs the library with it.
    for (const hook of ['packaging/dracut/90impermanence/module-setup.sh', 'packaging/initramfs-tools/hooks/impermanence', 'packaging/mkinitcpio/install/impermanence']) {
      const text = readFileSync(join(REPO, hook), 'utf8');
      const scripts = (text.match(/\/usr\/lib\/impermanence\/impermanence-(wipe|tmpfs-root)(?![.\w-])/g) ?? []).length;
      expect([hook, scripts > 0]).toEqual([hook, true]);
      expect([hook, text.includes('/usr/lib/impermanence/impermanence-lib.sh')]).toEqual([hook, true]);
    }
  });

  it('--package leaves enabling to the package manager; a plain install enables the desktop agent itself', () => {
    const wants = 'etc/systemd/user/graphical-session.target.wants/impermanence-notify.service';
    expect(existsSync(join(install('--package'), 'etc/systemd'))).toBe(false);
    expect(readlinkSync(join(install(), wants))).toBe('/usr/lib/systemd/user/impermanence-notify.service');
  });
});
