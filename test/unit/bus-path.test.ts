/** Entry object paths (sd_bus_path_encode's escaping), and the one way back the front end uses. */
import { ENTRY_PREFIX, entryObjectPath, entryPathOf } from '../../src/bus/names';

describe('entry object paths', () => {
  it.each(['/var/log', '/home/bird/.ssh', '/srv/with space', '/srv/é', '/', '/a_b'])('%s goes there and back', (path) => {
    expect(entryPathOf(entryObjectPath(path))).toBe(path);
  });

  it('escapes as sd_bus_path_encode does', () => {
    expect(entryObjectPath('/var/log')).toBe(`${ENTRY_PREFIX}/_2fvar_2flog`);
  });

  it.each([
    ['another spelling of the same path (upper-case hex)', `${ENTRY_PREFIX}/_2Fvar`],
    ['an unescaped byte', `${ENTRY_PREFIX}/_2fvar.log`],
    ['a broken escape', `${ENTRY_PREFIX}/_2`],
    ['no name', `${ENTRY_PREFIX}/`],
    ['a path elsewhere', '/org/impermanence/Manager'],
    ['a deeper path', `${ENTRY_PREFIX}/_2fvar/x`],
  ])('names no entry: %s', (_, objectPath) => {
    expect(entryPathOf(objectPath)).toBeUndefined();
  });
});
