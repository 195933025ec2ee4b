import { XMLParser } from 'fast-xml-parser';

/**
 * The D-Bus contract, read from dbus/org.impermanence.Manager.xml (bundled into the daemon):
 * each interface's XML as introspection returns it, its property types and its methods' input
 * signatures. The front end answers from it, so the live service and the file cannot drift apart.
 * The file is parsed with a real XML parser (fast-xml-parser, which the D-Bus library brings
 * already): attribute order, quoting, self-closing elements and comments are XML's business.
 */
export interface InterfaceContract {
  name: string;
  xml: string;
  /** property name → D-Bus type */
  properties: Map<string, string>;
  /** method name → input signature */
  methods: Map<string, string>;
}

interface XmlAnnotation { name?: string; value?: string }
interface XmlArg { name?: string; type?: string; direction?: string }
interface XmlMember { name?: string; type?: string; access?: string; arg?: XmlArg[]; annotation?: XmlAnnotation[] }
interface XmlInterface { name?: string; method?: XmlMember[]; signal?: XmlMember[]; property?: XmlMember[]; annotation?: XmlAnnotation[] }
interface XmlNode { interface?: XmlInterface[] }

const REPEATED = new Set(['node', 'interface', 'method', 'signal', 'property', 'arg', 'annotation']);

export function parseContract(xml: string): Map<string, InterfaceContract> {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    ignoreDeclaration: true,
    processEntities: true,
    parseAttributeValue: false,
    isArray: (name) => REPEATED.has(name),
  });
  const doc = parser.parse(xml, true) as { node?: XmlNode[] };
  const interfaces = new Map<string, InterfaceContract>();
  for (const node of doc.node ?? []) {
    for (const i of node.interface ?? []) {
      if (!i.name) throw new Error('an <interface> without a name in the contract');
      const properties = new Map<string, string>();
      for (const p of i.property ?? []) properties.set(need(p.name, i.name, 'property'), need(p.type, i.name, `property ${p.name} type`));
      const methods = new Map<string, string>();
      for (const m of i.method ?? []) {
        // A method argument without a direction is an input (D-Bus specification).
        methods.set(need(m.name, i.name, 'method'), (m.arg ?? []).filter((a) => (a.direction ?? 'in') === 'in').map((a) => need(a.type, i.name!, `${m.name} argument type`)).join(''));
      }
      interfaces.set(i.name, { name: i.name, xml: serialize(i), properties, methods });
    }
  }
  return interfaces;
}

function need(value: string | undefined, iface: string, what: string): string {
  if (!value) throw new Error(`the contract's ${iface} has a ${what} missing`);
  return value;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const attrs = (pairs: Array<[string, string | undefined]>) => pairs.filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}="${esc(v!)}"`).join('');

/** An interface as introspection XML (two-space indents, as sd-bus writes it), comments left out. */
function serialize(i: XmlInterface): string {
  const lines = [`  <interface${attrs([['name', i.name]])}>`];
  const annotations = (list: XmlAnnotation[] | undefined, indent: string) => {
    for (const a of list ?? []) lines.push(`${indent}<annotation${attrs([['name', a.name], ['value', a.value]])}/>`);
  };
  annotations(i.annotation, '    ');
  const member = (tag: string, m: XmlMember, own: Array<[string, string | undefined]>) => {
    const children = (m.arg?.length ?? 0) + (m.annotation?.length ?? 0);
    if (!children) {
      lines.push(`    <${tag}${attrs(own)}/>`);
      return;
    }
    lines.push(`    <${tag}${attrs(own)}>`);
    for (const a of m.arg ?? []) lines.push(`      <arg${attrs([['name', a.name], ['type', a.type], ['direction', a.direction]])}/>`);
    annotations(m.annotation, '      ');
    lines.push(`    </${tag}>`);
  };
  for (const p of i.property ?? []) member('property', p, [['name', p.name], ['type', p.type], ['access', p.access]]);
  for (const m of i.method ?? []) member('method', m, [['name', m.name]]);
  for (const s of i.signal ?? []) member('signal', s, [['name', s.name]]);
  lines.push('  </interface>');
  return lines.join('\n');
}

/** Peer and Introspectable: what every object of ours implements (the D-Bus specification's). */
export const BASE_INTERFACES = `  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg type="s" name="machine_uuid" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
`;

/** Objects with properties (the manager and the entries) implement Properties too. */
export const STANDARD_INTERFACES = BASE_INTERFACES + `  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="props" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg type="s" name="interface_name"/>
      <arg type="a{sv}" name="changed_properties"/>
      <arg type="as" name="invalidated_properties"/>
    </signal>
  </interface>
`;

export const OBJECT_MANAGER_INTERFACE = `  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects">
      <arg type="a{oa{sa{sv}}}" name="object_paths_interfaces_and_properties" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg type="o" name="object_path"/>
      <arg type="a{sa{sv}}" name="interfaces_and_properties"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg type="o" name="object_path"/>
      <arg type="as" name="interfaces"/>
    </signal>
  </interface>
`;

export const STANDARD_METHODS: Record<string, Record<string, string>> = {
  'org.freedesktop.DBus.Peer': { Ping: '', GetMachineId: '' },
  'org.freedesktop.DBus.Introspectable': { Introspect: '' },
  'org.freedesktop.DBus.Properties': { Get: 'ss', GetAll: 's', Set: 'ssv' },
  'org.freedesktop.DBus.ObjectManager': { GetManagedObjects: '' },
};

export const DOCTYPE =
  '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n';
