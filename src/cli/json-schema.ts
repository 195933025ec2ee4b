/**
 * The JSON documents impermanencectl prints (--json), one schema per command, each with
 * `version` (JSON_VERSION in output.ts). Not used at run time: scripts/build-docs.mjs writes them
 * as JSON Schema files (dist/json/impermanencectl-COMMAND.schema.json, installed in
 * /usr/share/impermanence/json/), and the unit tests check the real output against them.
 * A change a reader could trip over (a key renamed or removed, a type changed) bumps the version.
 */
import * as z from 'zod';

const version = z.literal(1).describe('the version of this schema');
const item = z.strictObject({
  kind: z.enum(['ephemeral', 'unmounted', 'replaced', 'orphan', 'attributes', 'shadowed']),
  path: z.string().describe('the path on the root (for an orphan: in storage)'),
  detail: z.string().describe('what is wrong, for a person'),
  files: z.number().int(),
  bytes: z.number().int(),
  suggestion: z.string().describe('the config lines that would keep it (ephemeral), or what declares it'),
});
const problem = z.strictObject({
  file: z.string(),
  line: z.number().int().nullable(),
  column: z.number().int().nullable(),
  entry: z.string().nullable().describe('the entry, as persistence."/persistent".directories[1]'),
  problem: z.string(),
});
const status = {
  state: z.enum(['ok', 'degraded', 'invalid-config']),
  daemon_version: z.string(),
  entry_count: z.number().int(),
  active_count: z.number().int(),
  drift_count: z.number().int(),
  storage_roots: z.array(z.string()),
  config_files: z.array(z.string()),
  config_problems: z.array(z.string()),
};
const at = { version, time: z.string().describe('ISO 8601, UTC') };
const changed = { properties: z.record(z.string(), z.unknown()).describe('changed properties, snake_case'), invalidated: z.array(z.string()) };

/** What check, generate and diff (offline) print for an invalid config. */
const invalid = z.strictObject({ version, valid: z.literal(false), problems: z.array(problem) });

export const SCHEMAS = {
  check: z.union([
    z.strictObject({ version, valid: z.literal(true), files: z.array(z.string()), storages: z.array(z.string()), entries: z.number().int(), mounts: z.number().int() }),
    invalid,
  ]),
  generate: z.union([z.strictObject({
    version,
    out: z.string().describe('the folder written, or "-"'),
    files: z.array(z.string()),
    links: z.record(z.string(), z.string()),
    problems: z.array(z.string()).describe('entries not activated'),
    contents: z.optional(z.record(z.string(), z.string())).describe('with --out -: each file\'s text'),
  }), invalid]),
  diff: z.union([z.strictObject({ version, since: z.number().describe('seconds since the epoch; 0: everything'), items: z.array(item) }), invalid]),
  status: z.strictObject({ version, ...status }),
  list: z.strictObject({
    version,
    entries: z.array(z.strictObject({ path: z.string(), kind: z.enum(['directory', 'file']), state: z.string(), storage: z.string(), object: z.string() })),
  }),
  reload: z.strictObject({ version, reloaded: z.literal(true), ...status }),
  monitor: z.discriminatedUnion('event', [
    z.strictObject({ ...at, event: z.literal('entry-added'), path: z.string(), kind: z.string().nullable(), state: z.string().nullable() }),
    z.strictObject({ ...at, event: z.literal('entry-removed'), path: z.string() }),
    z.strictObject({ ...at, event: z.literal('entry-changed'), path: z.string(), ...changed }),
    z.strictObject({ ...at, event: z.literal('manager-changed'), ...changed }),
    z.strictObject({ ...at, event: z.literal('drift-appeared'), items: z.array(item) }),
    z.strictObject({ ...at, event: z.literal('drift-resolved'), items: z.array(z.strictObject({ kind: z.string(), path: z.string() })) }),
    z.strictObject({ ...at, event: z.literal('scan-progress'), files: z.number().int() }),
    z.strictObject({ ...at, event: z.literal('other'), interface: z.string(), member: z.string(), object: z.string(), body: z.array(z.unknown()) }),
  ]),
  notify: z.strictObject({ version, enabled: z.boolean(), file: z.string() }),
} as const;

/** Each schema as a JSON Schema document. */
export function jsonSchemas(): Record<string, object> {
  return Object.fromEntries(
    Object.entries(SCHEMAS).map(([name, schema]) => [
      name,
      { $id: `impermanencectl-${name}.schema.json`, title: `impermanencectl ${name} --json`, ...z.toJSONSchema(schema, { unrepresentable: 'any' }) },
    ]),
  );
}
