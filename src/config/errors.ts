/**
 * A problem in the configuration, located as precisely as we can: the file, the entry inside it
 * (a TOML-style key path such as `persistence."/persistent".directories[2]`), and what is wrong.
 */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly entry: string | undefined,
    readonly problem: string,
    /** For syntax errors: where in the file. */
    readonly line?: number,
    readonly column?: number,
  ) {
    const where = line === undefined ? file : `${file}:${line}:${column ?? 1}`;
    super(entry ? `${where}: ${entry}: ${problem}` : `${where}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** Thrown when a configuration has one or more problems; nothing from it may be activated. */
export class InvalidConfig extends Error {
  constructor(readonly problems: ConfigError[]) {
    super(problems.map((p) => p.message).join('\n'));
    this.name = 'InvalidConfig';
  }
}

/** Renders a key path the way TOML would write it: bare keys stay bare, others are quoted. */
export function keyPath(parts: ReadonlyArray<string | number>): string {
  let out = '';
  for (const part of parts) {
    if (typeof part === 'number') out += `[${part}]`;
    else {
      const key = /^[A-Za-z0-9_-]+$/.test(part) ? part : JSON.stringify(part);
      out += out ? `.${key}` : key;
    }
  }
  return out;
}
