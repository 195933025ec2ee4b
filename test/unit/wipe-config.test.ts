import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { problemsOf, REPO, resolveFiles } from '../helpers';

/** A btrfs wipe (keep 14 days, 5 roots) and one storage root, /persist. */
const BTRFS = readFileSync(join(REPO, 'test/fixtures/wipe/btrfs.toml'), 'utf8');

describe('[wipe]', () => {
  it('resolves a btrfs wipe with its defaults', () => {
    const { wipe } = resolveFiles({ 'a.toml': BTRFS });
    expect(wipe).toMatchObject({ method: 'btrfs', device: 'LABEL=system', subvolume: '@root', from: '@pristine', oldRoots: 'old_roots', keep: { days: 14, count: 5 }, timeout: 30 });
    const { wipe: bare } = resolveFiles({ 'a.toml': '[wipe]\nmethod = "btrfs"\ndevice = "/dev/vda2"\nsubvolume = "/root/"\n' });
    expect(bare).toMatchObject({ subvolume: 'root', from: 'empty', keep: { days: 30, count: 0 } });
  });

  it('names the file and option of every mistake', () => {
    const problems = problemsOf(() =>
      resolveFiles({ 'a.toml': '[wipe]\nmethod = "btrfs"\ndevice = "sda1"\nsubvolume = "../x"\nfrom = "@root/p"\nkeep = { days = -1, count = 2.5 }\nsize = "1G"\n' }),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/a\.toml.*wipe\.size.*not an option of method = "btrfs"/),
        expect.stringMatching(/a\.toml.*wipe\.device.*"sda1": expected LABEL=/),
        expect.stringMatching(/a\.toml.*wipe\.subvolume.*"\.\.\/x"/),
        expect.stringMatching(/a\.toml.*wipe\.keep\.days.*-1: expected a whole number/),
        expect.stringMatching(/a\.toml.*wipe\.keep\.count.*2\.5/),
      ]),
    );
    expect(problemsOf(() => resolveFiles({ 'a.toml': '[wipe]\nmethod = "btrfs"\ndevice = "LABEL=x"\nsubvolume = "@root"\nfrom = "@root/pristine"\n' }))).toEqual([
      expect.stringMatching(/wipe\.from.*inside the root subvolume "@root", which is wiped/),
    ]);
    expect(problemsOf(() => resolveFiles({ 'a.toml': '[wipe]\nmethod = "btrfs"\n' }))).toEqual([
      expect.stringMatching(/wipe\.device.*required/),
      expect.stringMatching(/wipe\.subvolume.*required/),
    ]);
    expect(problemsOf(() => resolveFiles({ 'a.toml': '[wipe]\nmethod = "ext4"\n' }))).toEqual([expect.stringMatching(/a\.toml.*wipe\.method.*expected "btrfs", "zfs" or "tmpfs"/)]);
    expect(problemsOf(() => resolveFiles({ 'a.toml': '[wipe]\nmethod = "tmpfs"\nsize = "lots"\nmode = "999"\n' }))).toHaveLength(2);
  });

  it('suggests the intended option for a misspelled one', () => {
    expect(problemsOf(() => resolveFiles({ 'a.toml': '[wipe]\nmethod = "btrfs"\nsubvolum = "@root"\n' })).join('\n')).toMatch(/subvolum.*subvolume/);
  });

  it('is declared in one file only', () => {
    expect(problemsOf(() => resolveFiles({ 'a.toml': BTRFS, 'b.toml': '[wipe]\nmethod = "tmpfs"\n' }))).toEqual([expect.stringMatching(/b\.toml.*\[wipe\] is already declared in .*a\.toml/)]);
  });
});

describe('wipe status', () => {
  it('lists old roots newest first, with what the next wipe deletes (it adds one first)', async () => {
    const { oldRootsOf } = await import('../../src/cli/wipe-status');
    const { wipe } = resolveFiles({ 'a.toml': BTRFS.replace('count = 5', 'count = 3') });
    if (wipe?.method !== 'btrfs') throw new Error('expected btrfs');
    const now = Date.parse('2026-11-26T12:00:00Z');
    const paths = ['@root', '@pristine', 'old_roots/2026-11-26_110000', 'old_roots/2026-11-26_110000/var/lib/machines', 'old_roots/2026-11-25_110000', 'old_roots/2026-11-20_000000', 'old_roots/2026-11-01_000000', 'old_roots/junk'];
    expect(oldRootsOf(paths, wipe, now).map((r) => [r.name, r.expires])).toEqual([
      ['2026-11-26_110000', null],
      ['2026-11-25_110000', null],
      ['2026-11-20_000000', 'beyond the 3 newest'],
      ['2026-11-01_000000', 'older than 14 days'],
    ]);
  });
});
