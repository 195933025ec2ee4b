/** The [wipe] table as the initrd and the CLI read it: the shell file sh sources, `impermanencectl wipe config` (resolving and errors: test/unit/wipe-config.test.ts). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { wipeConfText } from '../../src/config/wipe';
import { ctl, EXAMPLE_ROOT, REPO, resolveFiles, run, tree } from '../helpers';

/** A btrfs wipe (keep 14 days, 5 roots) and one storage root, /persist. */
const BTRFS = readFileSync(join(REPO, 'test/fixtures/wipe/btrfs.toml'), 'utf8');

describe('[wipe]', () => {
  it('turns into the shell file the initrd sources, with the storage roots', () => {
    const config = resolveFiles({ 'a.toml': BTRFS + `[persistence."/mnt/it's here"]\ndirectories = ["/srv"]\n` });
    const text = wipeConfText(config.wipe!, config.storages.map((s) => s.path));
    const file = `${tree({ 'wipe.conf': text })}/wipe.conf`;
    const sourced = run('sh', ['-c', '. "$0"; printf "%s|" "$WIPE_METHOD" "$WIPE_DEVICE" "$WIPE_SUBVOLUME" "$WIPE_FROM" "$WIPE_OLD_ROOTS" "$WIPE_KEEP_DAYS" "$WIPE_KEEP_COUNT" "$WIPE_STORAGES"', file]);
    expect(sourced.stdout).toBe("btrfs|LABEL=system|@root|@pristine|old_roots|14|5|/persist\n/mnt/it's here|");
  });

  it('impermanencectl wipe config prints it, or exits 3 without [wipe]', () => {
    const dir = tree({ 'a.toml': BTRFS });
    const r = ctl('wipe', 'config', '--config', dir, '--root', EXAMPLE_ROOT);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^WIPE_METHOD=btrfs$/m);
    const none = ctl('wipe', 'config', '--config', tree({ 'a.toml': '[persistence."/p"]\n' }), '--root', EXAMPLE_ROOT);
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/no \[wipe\] table/);
    const bad = ctl('wipe', 'config', '--config', tree({ 'a.toml': '[wipe]\nmethod = "zfs"\n' }), '--root', EXAMPLE_ROOT);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/wipe\.dataset.*required/);
  });
});
