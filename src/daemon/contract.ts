/**
 * The D-Bus contract, read from dbus/org.impermanence.Manager.xml (bundled into the daemon):
 * each interface's XML as introspection returns it, its property types and its methods' input
 * signatures. The front end answers from it, so the live service and the file cannot drift apart.
 */
export interface InterfaceContract {
  name: string;
  xml: string;
  /** property name → D-Bus type */
  properties: Map<string, string>;
  /** method name → input signature */
  methods: Map<string, string>;
}

export function parseContract(xml: string): Map<string, InterfaceContract> {
  const interfaces = new Map<string, InterfaceContract>();
  const withoutComments = xml.replace(/<!--[\s\S]*?-->/g, '');
  for (const m of withoutComments.matchAll(/<interface name="([^"]+)">([\s\S]*?)<\/interface>/g)) {
    const body = m[2]!;
    const properties = new Map<string, string>();
    for (const p of body.matchAll(/<property name="([^"]+)" type="([^"]+)"/g)) properties.set(p[1]!, p[2]!);
    const methods = new Map<string, string>();
    for (const meth of body.matchAll(/<method name="([^"]+)">([\s\S]*?)<\/method>|<method name="([^"]+)"\/>/g)) {
      const name = meth[1] ?? meth[3]!;
      const args = [...(meth[2] ?? '').matchAll(/<arg[^>]*type="([^"]+)"[^>]*direction="in"/g)].map((a) => a[1]).join('');
      methods.set(name, args);
    }
    const compact = m[0].replace(/\n\s*\n/g, '\n');
    interfaces.set(m[1]!, { name: m[1]!, xml: compact, properties, methods });
  }
  return interfaces;
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
