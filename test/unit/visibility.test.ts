import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { canSee, canSeeContents } from '../../src/daemon/visibility';
import { tempDir } from '../helpers';

/** Real folders with real owners and modes (the tests run as root). */
describe('what a caller may see', () => {
  const root = tempDir();
  chmodSync(root, 0o755);
  const bob = { uid: 1001, gids: [1001] };
  const alice = { uid: 1000, gids: [1000] };
  const dir = (p: string, mode: number, uid = 0) => {
    mkdirSync(join(root, p), { recursive: true });
    chownSync(join(root, p), uid, uid);
    chmodSync(join(root, p), mode);
  };
  dir('home', 0o755);
  dir('home/alice', 0o711, 1000); // others may pass through, not list
  dir('home/alice/project', 0o755, 1000);
  dir('home/carol', 0o755, 1002);
  dir('root', 0o700);
  dir('var/lib/app', 0o755);
  writeFileSync(join(root, 'home/alice/notes'), 'x');

  it('root sees everything', () => {
    expect(canSeeContents({ uid: 0, gids: [] }, '/root/x', root)).toBe(true);
  });

  it('a name is seen only by whoever could list its folder', () => {
    expect(canSeeContents(bob, '/var/lib/app', root)).toBe(true);
    expect(canSeeContents(bob, '/home/carol', root)).toBe(true);
    expect(canSeeContents(bob, '/home/alice/project', root)).toBe(false); // 0711: names are alice's
    expect(canSeeContents(bob, '/home/alice/notes', root)).toBe(false);
    expect(canSeeContents(alice, '/home/alice/project', root)).toBe(true);
    expect(canSeeContents(bob, '/root', root)).toBe(false); // its name is public, what is in it is not
    expect(canSeeContents(bob, '/root/.bash_history', root)).toBe(false);
  });

  it('an entry path (declared in the config) needs only a way through', () => {
    expect(canSee(bob, '/home/alice/project', root)).toBe(true);
    expect(canSee(bob, '/root/.ssh', root)).toBe(false);
  });
});
