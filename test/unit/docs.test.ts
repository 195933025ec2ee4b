/**
 * impermanence.toml(5) (man/impermanence.toml.5.md) documents exactly the options the config
 * schema (src/config/schema.ts) accepts: a key added to the schema without a line in the man
 * page, or a documented key the schema does not know, fails here. The built pages and JSON
 * Schemas are checked in test/integration/man.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigFileSchema } from '../../src/config/schema';
import { REPO } from '../helpers';

/** Every option name the schema accepts, anywhere in a config file. */
function schemaKeys(): Set<string> {
  const keys = new Set<string>();
  const walk = (schema: unknown): void => {
    const def = (schema as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
    switch (def.type) {
      case 'object':
        for (const [key, value] of Object.entries(def.shape as Record<string, unknown>)) {
          keys.add(key);
          walk(value);
        }
        break;
      case 'optional':
      case 'nullable':
      case 'default':
        return walk(def.innerType);
      case 'array':
        return walk(def.element);
      case 'union':
        return (def.options as unknown[]).forEach(walk);
      case 'record':
        return walk(def.valueType);
    }
  };
  walk(ConfigFileSchema);
  return keys;
}

/** The option names impermanence.toml(5) documents: the terms of its OPTIONS section. */
function documentedKeys(): Set<string> {
  const md = readFileSync(join(REPO, 'man', 'impermanence.toml.5.md'), 'utf8');
  const options = md.slice(md.indexOf('## OPTIONS'), md.indexOf('\n## ', md.indexOf('## OPTIONS') + 1));
  const lines = options.split('\n');
  const keys = new Set<string>();
  lines.forEach((line, i) => {
    if (!lines[i + 1]?.startsWith(': ') || line.startsWith(': ')) return;
    for (const [, term] of line.matchAll(/`([^`]+)`/g)) keys.add(term!.replace(/\..*$/, ''));
  });
  return keys;
}

describe('impermanence.toml(5) and the config schema', () => {
  it('documents exactly the options the schema accepts', () => {
    const schema = [...schemaKeys()].sort();
    expect(schema.length).toBeGreaterThan(15);
    expect([...documentedKeys()].sort()).toEqual(schema);
  });
});
