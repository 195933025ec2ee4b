import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseContract } from '../../src/bus/contract';

const XML = readFileSync(join(__dirname, '../../dbus/org.impermanence.Manager.xml'), 'utf8');

describe('the contract, parsed as XML', () => {
  it('reads input signatures whatever the order, quoting and form of the attributes', () => {
    const forms = [
      '<method name="M"><arg name="p" type="s" direction="in"/><arg name="o" type="a{sv}" direction="in"/><arg type="o" direction="out"/></method>',
      '<method name="M"><arg direction="in" type="s"/><arg direction=\'in\' name="o" type=\'a{sv}\'></arg><arg direction="out" type="o"/></method>',
      // No direction: an input (D-Bus specification).
      '<method name="M">\n  <arg type="s"/>\n  <!-- a comment <arg type="x" direction="in"/> -->\n  <arg type="a{sv}"/>\n</method>',
    ];
    for (const m of forms) {
      const c = parseContract(`<node><interface name="x.Y">${m}<method name="N"/><property access="read" type="u" name="P"/></interface></node>`);
      expect(c.get('x.Y')!.methods).toEqual(new Map([['M', 'sa{sv}'], ['N', '']]));
      expect(c.get('x.Y')!.properties).toEqual(new Map([['P', 'u']]));
    }
  });

  it('gives the same contract when read back from what it serves', () => {
    const file = parseContract(XML);
    for (const iface of file.values()) {
      const again = parseContract(`<node>${iface.xml}</node>`).get(iface.name)!;
      expect(again).toEqual(iface);
    }
    expect(file.get('org.impermanence.Manager')!.methods.get('Scan')).toBe('a{sv}');
    expect(file.get('org.impermanence.Manager')!.xml).not.toContain('<!--');
  });

  it('refuses an interface or member without a name rather than answering with a wrong one', () => {
    expect(() => parseContract('<node><interface><method name="M"/></interface></node>')).toThrow(/without a name/);
    expect(() => parseContract('<node><interface name="a.B"><method><arg type="s"/></method></interface></node>')).toThrow(/method missing/);
  });
});
