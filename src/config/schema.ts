import * as z from 'zod/mini';

/**
 * The file format: nix-community/impermanence's option names, so that its examples translate
 * line by line into TOML (or JSON with the same shape). Only the shape is checked here;
 * paths, modes, users and cross-entry rules are checked by resolve.ts, which knows the context.
 * zod/mini rather than zod: the generator parses at every boot, and the full build alone adds
 * about 40 ms to its start.
 */
const name = z.string({ error: 'expected a user or group name (a string)' }).check(z.minLength(1, 'is empty'));
const mode = z.string({ error: 'expected a mode as a string, such as "0755" or "u=rwx,g=rx,o="' });
const boolean = z.boolean({ error: 'expected true or false' });
const path = z.string({ error: 'expected a path (a string)' });
/** Mount options, checked by resolve.ts (mount.impermanence applies some; x-/X- ones are for other programs). */
const mountOptions = z.optional(z.array(z.string({ error: 'expected a mount option (a string)' }), { error: 'expected a list of mount options' }));

export const PermsSchema = z.strictObject({
  user: z.optional(name),
  group: z.optional(name),
  mode: z.optional(mode),
});

export const DirectorySchema = z.strictObject({
  directory: path,
  user: z.optional(name),
  group: z.optional(name),
  mode: z.optional(mode),
  hideMount: z.optional(boolean),
  allowTrash: z.optional(boolean),
  persistentStoragePath: z.optional(path),
  parentDirectory: z.optional(PermsSchema),
  mountOptions,
});

export const FileSchema = z.strictObject({
  file: path,
  parentDirectory: z.optional(PermsSchema),
  method: z.optional(z.enum(['auto', 'symlink'], { error: 'expected "auto" or "symlink"' })),
  persistentStoragePath: z.optional(path),
  mountOptions,
});

/**
 * An entry is a bare path or a table. A union, rather than a preprocess into a table, because it
 * is three times faster on the common case (bare paths); load.ts turns a failed union back into
 * the table's own problems.
 */
const list = <T extends z.ZodMiniType>(table: T) => z.optional(z.array(z.union([path, table]), { error: 'expected a list' }));

/** Presets to include by name (/usr/share/impermanence/presets/NAME.toml: see presets.ts). */
const include = z.optional(z.array(z.string({ error: 'expected a preset name (a string)' }), { error: 'expected a list of preset names' }));

export const UserSchema = z.strictObject({
  home: z.optional(path),
  include,
  directories: list(DirectorySchema),
  files: list(FileSchema),
});

export const StorageSchema = z.strictObject({
  enable: z.optional(boolean),
  hideMounts: z.optional(boolean),
  allowTrash: z.optional(boolean),
  /** Options for every mount of this storage root (preservation's commonMountOptions). */
  mountOptions,
  include,
  directories: list(DirectorySchema),
  files: list(FileSchema),
  users: z.optional(z.record(z.string(), UserSchema, { error: 'expected a table of users' })),
});

/** Drift reporting: paths never reported as about to be lost (added to the built-in list). */
export const DriftSchema = z.strictObject({
  ignore: z.optional(z.array(path, { error: 'expected a list of paths' })),
});

/** Retention of old roots (btrfs): either limit may be left out. */
export const KeepSchema = z.strictObject({
  days: z.optional(z.number({ error: 'expected a number of days' })),
  count: z.optional(z.number({ error: 'expected a number of old roots' })),
});

/**
 * The wipe at boot, done by the initrd (see src/wipe/): the settings are baked into the initrd
 * when it is built (`impermanencectl wipe config`), since the initrd cannot read the root it wipes.
 * One table for the three methods; resolve.ts checks which options go with which method.
 */
export const WipeSchema = z.strictObject({
  method: z.enum(['btrfs', 'zfs', 'tmpfs'], { error: 'expected "btrfs", "zfs" or "tmpfs"' }),
  // btrfs
  device: z.optional(z.string({ error: 'expected a device: LABEL=…, PARTLABEL=…, UUID=… or /dev/…' })),
  subvolume: z.optional(path),
  from: z.optional(z.string({ error: 'expected "empty" or the pristine snapshot\'s subvolume path' })),
  oldRoots: z.optional(path),
  keep: z.optional(KeepSchema),
  timeout: z.optional(z.number({ error: 'expected seconds (a number)' })),
  // zfs
  dataset: z.optional(z.string({ error: 'expected a dataset name such as "rpool/root"' })),
  snapshot: z.optional(z.string({ error: 'expected a snapshot name such as "blank"' })),
  // tmpfs
  size: z.optional(z.string({ error: 'expected a size such as "2G" or "50%"' })),
  mode: z.optional(mode),
});

export const ConfigFileSchema = z.strictObject({
  persistence: z.optional(z.record(z.string(), StorageSchema, { error: 'expected a table of storage roots' })),
  drift: z.optional(DriftSchema),
  wipe: z.optional(WipeSchema),
});

/**
 * A preset file: entries for the system (included from a storage root) and for a home
 * (`home`, included from `users.<name>`), with the same entry syntax as a config.
 */
export const PresetSchema = z.strictObject({
  description: z.optional(z.string({ error: 'expected a description (a string)' })),
  directories: list(DirectorySchema),
  files: list(FileSchema),
  home: z.optional(z.strictObject({ directories: list(DirectorySchema), files: list(FileSchema) })),
});

export type ConfigFile = z.infer<typeof ConfigFileSchema>;
export type PresetDecl = z.infer<typeof PresetSchema>;
export type StorageDecl = z.infer<typeof StorageSchema>;
export type DirectoryDecl = z.infer<typeof DirectorySchema>;
export type FileDecl = z.infer<typeof FileSchema>;
export type PermsDecl = z.infer<typeof PermsSchema>;
export type WipeDecl = z.infer<typeof WipeSchema>;

/** The options a table may hold, by where it stands (a key path), to suggest the intended one for a misspelled option. */
export function knownKeysAt(path: ReadonlyArray<PropertyKey>): string[] {
  const last = path.at(-1);
  const parent = path.at(-2);
  const keys = (o: object) => Object.keys(o);
  if (path.length === 0) return keys(ConfigFileSchema.shape);
  if (last === 'parentDirectory') return keys(PermsSchema.shape);
  if (last === 'drift') return keys(DriftSchema.shape);
  if (last === 'wipe') return keys(WipeSchema.shape);
  if (last === 'keep' && parent === 'wipe') return keys(KeepSchema.shape);
  if (parent === 'directories') return keys(DirectorySchema.shape);
  if (parent === 'files') return keys(FileSchema.shape);
  if (parent === 'users') return keys(UserSchema.shape);
  return keys(StorageSchema.shape);
}
