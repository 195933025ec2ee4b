/**
 * The suggestions of one drift report, applied together, always make a config that `check`
 * accepts: on random trees, every "to keep it" line is added to the config and the result must
 * resolve. And nested items are folded into one.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse } from 'smol-toml';
import { InvalidConfig } from '../../src/config/errors';
import { parseConfigText, type LoadedFile } from '../../src/config/load';
import { resolveConfig } from '../../src/config/resolve';
import { UserDb } from '../../src/config/userdb';
import { foldNested, NO_STORAGE, type DriftItem } from '../../src/drift/report';
import { scanDrift } from '../../src/drift/scan';
import { rootWithUsers } from '../helpers';

const item = (kind: DriftItem['kind'], path: string, files: number): DriftItem => ({ kind, path, files, bytes: files * 10, detail: '', suggestion: `s ${path}` });

describe('foldNested', () => {
  it('folds what lies inside another item of the same kind into it, and nothing else', () => {
    const folded = foldNested([
      item('ephemeral', '/var/opt/sub', 2), item('ephemeral', '/var/opt', 1), item('ephemeral', '/var/opt-x', 1),
      item('ephemeral', '/var/opt/sub/deeper', 1), item('orphan', '/persistent/var/opt/sub', 3), item('unmounted', '/var/opt/sub', 0),
    ]);
    expect(folded.map((i) => `${i.kind} ${i.path} ${i.files} ${i.bytes}`).sort()).toEqual([
      'ephemeral /var/opt 4 40', 'ephemeral /var/opt-x 1 10', 'orphan /persistent/var/opt/sub 3 30', 'unmounted /var/opt/sub 0',
    ].map((l) => (l.startsWith('unmounted') ? `${l} 0` : l)).sort());
    expect(folded.find((i) => i.path === '/var/opt')!.detail).toBe('4 files, 40 B: will be lost at reboot');
  });
});

/** A small deterministic PRNG (mulberry32), so that a failing tree can be made again. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CONFIG = `
[persistence."/persistent"]
directories = ["/var/log", "/var/lib/kept", "/srv/data/inner"]
files = ["/etc/kept.conf"]
[persistence."/persistent".users.bird]
directories = [".ssh", ".config/app"]
`;
const TOPS = ['/var', '/var/lib', '/var/opt', '/etc', '/etc/app', '/srv', '/srv/data', '/opt', '/home/bird', '/home/bird/.config', '/home/bird/.local/share', '/persistent/var/lib'];
const NAMES = ['a', 'b', 'sub', 'sub-x', 'deep', 'x.conf', 'kept', 'log'];

describe('suggestions applied together', () => {
  it.each(Array.from({ length: 40 }, (_, i) => i + 1))('pass check on random tree %i', async (seed) => {
    const rand = prng(seed);
    const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!;
    const root = rootWithUsers();
    mkdirSync(join(root, 'persistent'), { recursive: true });
    for (let n = 0; n < 25; n++) {
      let p = pick(TOPS);
      for (let depth = Math.floor(rand() * 4); depth > 0; depth--) p += '/' + pick(NAMES);
      p += '/' + pick(NAMES) + (rand() < 0.5 ? '.f' : '');
      try {
        mkdirSync(join(root, dirname(p)), { recursive: true });
        writeFileSync(join(root, p), 'x'.repeat(Math.floor(rand() * 100)));
      } catch {
        // a name already taken by a file or folder: skip it
      }
    }
    const users = UserDb.read(root);
    const base: LoadedFile = { file: '/etc/impermanence/persist.d/10-base.toml', config: parseConfigText('10-base.toml', CONFIG) };
    const config = resolveConfig([base], users);
    const report = await scanDrift({ root, config, users, mountPoints: new Set(['/']), since: 0 });
    const suggestions = report.items.filter((i) => i.kind === 'ephemeral').map((i) => i.suggestion);
    expect(suggestions.length).toBeGreaterThan(0);
    const added: LoadedFile[] = suggestions.map((s, i) => {
      expect(() => parse(s)).not.toThrow();
      return { file: `/etc/impermanence/persist.d/90-suggested-${i}.toml`, config: parseConfigText(`90-suggested-${i}.toml`, s) };
    });
    try {
      resolveConfig([base, ...added], users);
    } catch (err) {
      if (err instanceof InvalidConfig) throw new Error(`seed ${seed}: ${err.message}\nsuggestions:\n${suggestions.join('\n')}`);
      throw err;
    }
  });

  it('invents no storage root when none is declared', async () => {
    const root = rootWithUsers();
    mkdirSync(join(root, 'var/lib/app'), { recursive: true });
    writeFileSync(join(root, 'var/lib/app/db'), 'x');
    const users = UserDb.read(root);
    const config = resolveConfig([], users);
    const report = await scanDrift({ root, config, users, mountPoints: new Set(['/']), since: 0 });
    expect(report.items.find((i) => i.path === '/var/lib/app')!.suggestion).toBe(`[persistence."${NO_STORAGE}"]\ndirectories = ["/var/lib/app"]`);
  });
});
