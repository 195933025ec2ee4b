/** impermanence-prepare's storage check: which mount holds a storage root, and why one cannot be used (adoption, as root: test/integration/prepare.test.ts). */
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { storageProblem } from '../../src/activate/prepare';
import { mountOf, storageIsMounted } from '../../src/drift/mountinfo';
import { tempDir } from '../helpers';

describe('storage check', () => {
  const mounts = new Set(['/', '/persistent', '/srv/sandbox', '/srv/sandbox/persistent']);

  it('finds the mount that holds a path', () => {
    expect(mountOf('/persistent/var/log', mounts)).toBe('/persistent');
    expect(mountOf('/persist', mounts)).toBe('/');
    expect(mountOf('/', mounts)).toBe('/');
  });

  it('accepts a storage root on a filesystem of its own, and refuses a folder on the root', () => {
    expect(storageIsMounted('/persistent', '/', mounts)).toBe(true);
    expect(storageIsMounted('/persistent/nested', '/', mounts)).toBe(true);
    expect(storageIsMounted('/persist', '/', mounts)).toBe(false);
    expect(storageIsMounted('/persistent', '/srv/sandbox', mounts)).toBe(true);
    expect(storageIsMounted('/persistent', '/srv/other', mounts)).toBe(false);
  });

  it('says why a storage root cannot be used', () => {
    const dir = tempDir();
    expect(storageProblem(join(dir, 'missing'), mounts)).toMatch(/does not exist$/);
    symlinkSync(dir, join(dir, 'link'));
    expect(storageProblem(join(dir, 'link'), mounts)).toMatch(/is a symlink/);
    writeFileSync(join(dir, 'file'), '');
    expect(storageProblem(join(dir, 'file'), mounts)).toMatch(/is not a folder$/);
    expect(storageProblem(dir, mounts)).toMatch(/is not mounted: it is a folder on the root filesystem, which is wiped at every boot$/);
    expect(storageProblem(dir, new Set(['/', dir]))).toBeUndefined();
  });
});
