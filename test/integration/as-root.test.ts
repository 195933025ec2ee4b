/**
 * src/activate/as-root.ts on real files: folders held by descriptor, reached without a symlink;
 * root's temporary folders, which a user may rename but not enter; placing never over anything.
 * The races they close, on whole persist and unpersist runs: test/integration/persist.test.ts.
 */
import { closeSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { at, makeTempDir, openBeneath, placeInto, removeTempDir } from '../../src/activate/as-root';
import { tempDir } from '../helpers';

const isRoot = process.getuid?.() === 0;

(isRoot ? describe : describe.skip)('as root in folders users may write', () => {
  it('openBeneath holds the folder reached one name at a time, and refuses a symlink anywhere below the top (anyone\'s)', () => {
    const top = tempDir();
    mkdirSync(join(top, 'a/b'), { recursive: true });
    const fd = openBeneath(top, join(top, 'a/b'));
    expect(readlinkSync(at(fd))).toBe(join(top, 'a/b'));
    // Renamed after the open: still the same folder, under its new name.
    renameSync(join(top, 'a'), join(top, 'a2'));
    symlinkSync('a2', join(top, 'a'));
    expect(readlinkSync(at(fd))).toBe(join(top, 'a2/b'));
    closeSync(fd);
    lchownSync(join(top, 'a'), 1000, 1000);
    expect(() => openBeneath(top, join(top, 'a/b'))).toThrow(`${join(top, 'a')} is a symlink (made by uid 1000): nothing is done through it`);
    lchownSync(join(top, 'a'), 0, 0);
    expect(() => openBeneath(top, join(top, 'a/b'))).toThrow(/is a symlink \(made by uid 0\)/);
    expect(() => openBeneath(top, join(top, 'missing'))).toThrow(`cannot open the folder ${join(top, 'missing')}: ENOENT`);
    expect(() => openBeneath(join(top, 'a2'), top)).toThrow(/is not below/);
  });

  it('a temporary folder is root\'s (0700); renamed by someone and a symlink put at its name, it is still the one removed, and the symlink stays', () => {
    const dir = tempDir();
    const victim = join(dir, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'keep');
    const parent = openBeneath(dir, dir);
    const temp = makeTempDir(parent, '.x.impermanence-adopt.');
    expect(temp.name).toMatch(/^\.x\.impermanence-adopt\.\w{6}$/);
    const st = lstatSync(join(dir, temp.name));
    expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o700]);
    writeFileSync(at(temp.fd, 'x'), 'copy');
    renameSync(join(dir, temp.name), join(dir, 'stolen'));
    symlinkSync(victim, join(dir, temp.name));
    // Written by descriptor: into root's folder, wherever it is now, not through the symlink.
    writeFileSync(at(temp.fd, 'y'), 'y');
    expect(readdirSync(join(dir, 'stolen')).sort()).toEqual(['x', 'y']);
    removeTempDir(temp);
    expect(readdirSync(dir).sort()).toEqual([temp.name, 'victim'].sort());
    expect(readdirSync(victim)).toEqual(['keep']);
    closeSync(parent);
  });

  it('placeInto renames a folder or links a file into place, never over anything', () => {
    const dir = tempDir();
    const into = openBeneath(dir, dir);
    writeFileSync(join(dir, 'taken'), 'theirs');
    const temp = makeTempDir(into, '.t.');
    writeFileSync(at(temp.fd, 'f'), 'ours');
    mkdirSync(at(temp.fd, 'd'));
    writeFileSync(at(temp.fd, 'd/inside'), 'in');
    expect(placeInto(temp, 'f', into, 'taken')).toBe(false);
    expect(readFileSync(join(dir, 'taken'), 'utf8')).toBe('theirs');
    expect(placeInto(temp, 'f', into, 'free')).toBe(true);
    expect(placeInto(temp, 'd', into, 'folder')).toBe(true);
    expect(readFileSync(join(dir, 'free'), 'utf8')).toBe('ours');
    expect(readFileSync(join(dir, 'folder/inside'), 'utf8')).toBe('in');
    removeTempDir(temp);
    expect(readdirSync(dir).sort()).toEqual(['folder', 'free', 'taken']);
    closeSync(into);
  });
});
