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

  it('ranks old roots as the wipe does, by btrfs creation generation then subvolume ID, not by name (the initrd\'s clock may be wrong)', async () => {
    const { oldRootsOf } = await import('../../src/cli/wipe-status');
    const { parseSubvolumeList } = await import('../../src/cli/old-roots');
    const { wipe } = resolveFiles({ 'a.toml': BTRFS.replace('count = 5', 'count = 3') });
    if (wipe?.method !== 'btrfs') throw new Error('expected btrfs');
    const now = Date.parse('2026-11-26T12:00:00Z');
    // `btrfs subvolume list -a -c /` as it prints them. Boots with the clock right (11-24, 11-25),
    // then one with the clock reset (2025-06-01), then two at the same second with no clock
    // (.10 made after .9); old_roots/x is no old root.
    const list = [
      'ID 256 gen 90 cgen 5 top level 5 path @pristine',
      'ID 300 gen 40 cgen 30 top level 5 path <FS_TREE>/old_roots/2026-11-25_000000',
      'ID 290 gen 35 cgen 20 top level 5 path <FS_TREE>/old_roots/2026-11-24_000000',
      'ID 310 gen 50 cgen 40 top level 5 path <FS_TREE>/old_roots/2025-06-01_000000',
      'ID 331 gen 70 cgen 60 top level 5 path <FS_TREE>/old_roots/2025-06-01_000000.10',
      'ID 320 gen 60 cgen 50 top level 5 path <FS_TREE>/old_roots/2025-06-01_000000.9',
      'ID 332 gen 70 cgen 60 top level 331 path <FS_TREE>/old_roots/2025-06-01_000000.10/var/lib/machines',
      'ID 340 gen 80 cgen 70 top level 5 path <FS_TREE>/old_roots/x',
      'ID 350 gen 95 cgen 80 top level 5 path @root',
      '',
    ].join('\n');
    const subvolumes = parseSubvolumeList(list);
    expect(subvolumes.find((s) => s.path === 'old_roots/2025-06-01_000000.10/var/lib/machines')).toEqual({ id: 332, cgen: 60, path: 'old_roots/2025-06-01_000000.10/var/lib/machines' });
    // The clock right again: the 2025 ones are old by their names; the 11-24 and 11-25 ones are
    // beyond the 3 newest (the wipe's own count: the root it moves, then these by creation).
    expect(oldRootsOf(subvolumes, wipe, now).map((r) => [r.name, r.expires])).toEqual([
      ['2025-06-01_000000.10', 'older than 14 days'],
      ['2025-06-01_000000.9', 'older than 14 days'],
      ['2025-06-01_000000', 'older than 14 days'],
      ['2026-11-25_000000', 'beyond the 3 newest'],
      ['2026-11-24_000000', 'beyond the 3 newest'],
    ]);
    // The same generation (one transaction): the higher ID was made later.
    const same = parseSubvolumeList('ID 400 gen 9 cgen 9 top level 5 path old_roots/2026-01-01_000000\nID 401 gen 9 cgen 9 top level 5 path old_roots/2025-01-01_000000\n');
    expect(oldRootsOf(same, wipe, now).map((r) => r.name)).toEqual(['2025-01-01_000000', '2026-01-01_000000']);
  });

  it('predicts no expiry by age when an old root is named later than now, as the wipe then expires none by age', async () => {
    const { oldRootsOf } = await import('../../src/cli/wipe-status');
    const { parseSubvolumeList } = await import('../../src/cli/old-roots');
    const { wipe } = resolveFiles({ 'a.toml': BTRFS.replace('count = 5', 'count = 0') });
    if (wipe?.method !== 'btrfs') throw new Error('expected btrfs');
    const list = 'ID 300 gen 9 cgen 8 top level 5 path old_roots/2025-01-01_000000\nID 301 gen 9 cgen 9 top level 5 path old_roots/2026-11-26_000000\n';
    // The clock is behind (or was wrong when 2026-11-26 was named): no age can be trusted.
    expect(oldRootsOf(parseSubvolumeList(list), wipe, Date.parse('2025-06-01T00:00:00Z')).map((r) => [r.name, r.expires])).toEqual([
      ['2026-11-26_000000', null],
      ['2025-01-01_000000', null],
    ]);
    // The clock right: 2025-01-01 is old.
    expect(oldRootsOf(parseSubvolumeList(list), wipe, Date.parse('2026-11-27T00:00:00Z')).map((r) => r.expires)).toEqual([null, 'older than 14 days']);
  });
});
