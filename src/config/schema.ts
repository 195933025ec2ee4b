import { z } from 'zod';

/**
 * The file format: nix-community/impermanence's option names, so that its examples translate
 * line by line into TOML (or JSON with the same shape). Only the shape is checked here;
 * paths, modes, users and cross-entry rules are checked by resolve.ts, which knows the context.
 */
const name = z.string({ error: 'expected a user or group name (a string)' }).min(1, 'is empty');

export const PermsSchema = z.strictObject({
  user: name.optional(),
  group: name.optional(),
  mode: z.string({ error: 'expected a mode as a string, such as "0755" or "u=rwx,g=rx,o="' }).optional(),
});

const boolean = z.boolean({ error: 'expected true or false' });
const path = z.string({ error: 'expected a path (a string)' });

export const DirectorySchema = z.strictObject({
  directory: path,
  user: name.optional(),
  group: name.optional(),
  mode: PermsSchema.shape.mode,
  hideMount: boolean.optional(),
  allowTrash: boolean.optional(),
  persistentStoragePath: path.optional(),
  parentDirectory: PermsSchema.optional(),
});

export const FileSchema = z.strictObject({
  file: path,
  parentDirectory: PermsSchema.optional(),
  method: z.enum(['auto', 'symlink'], { error: 'expected "auto" or "symlink"' }).optional(),
  persistentStoragePath: path.optional(),
});

/** An entry is a bare path or a table; a bare path is shorthand for `{ directory = path }`. */
function entry<T extends z.ZodType>(key: string, schema: T) {
  return z.preprocess(
    (v) => (typeof v === 'string' ? { [key]: v } : v),
    z.any().superRefine((v, ctx) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        ctx.addIssue({ code: 'custom', message: `expected a path or a table with "${key}"` });
      }
    }).pipe(schema),
  );
}

const list = <T extends z.ZodType>(item: T) => z.array(item, { error: 'expected a list' });

export const UserSchema = z.strictObject({
  home: path.optional(),
  directories: list(entry('directory', DirectorySchema)).optional(),
  files: list(entry('file', FileSchema)).optional(),
});

export const StorageSchema = z.strictObject({
  enable: boolean.optional(),
  hideMounts: boolean.optional(),
  allowTrash: boolean.optional(),
  directories: list(entry('directory', DirectorySchema)).optional(),
  files: list(entry('file', FileSchema)).optional(),
  users: z.record(z.string(), UserSchema, { error: 'expected a table of users' }).optional(),
});

export const ConfigFileSchema = z.strictObject({
  persistence: z.record(z.string(), StorageSchema, { error: 'expected a table of storage roots' }).optional(),
});

export type ConfigFile = z.infer<typeof ConfigFileSchema>;
export type StorageDecl = z.infer<typeof StorageSchema>;
export type DirectoryDecl = z.infer<typeof DirectorySchema>;
export type FileDecl = z.infer<typeof FileSchema>;
export type PermsDecl = z.infer<typeof PermsSchema>;

/** The options a table may hold, by where it stands (a key path), to suggest the intended one for a misspelled option. */
export function knownKeysAt(path: ReadonlyArray<PropertyKey>): string[] {
  const last = path.at(-1);
  const parent = path.at(-2);
  const keys = (o: object) => Object.keys(o);
  if (path.length === 0) return keys(ConfigFileSchema.shape);
  if (last === 'parentDirectory') return keys(PermsSchema.shape);
  if (parent === 'directories') return keys(DirectorySchema.shape);
  if (parent === 'files') return keys(FileSchema.shape);
  if (parent === 'users') return keys(UserSchema.shape);
  return keys(StorageSchema.shape);
}
