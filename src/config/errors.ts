/**
 * A problem in the configuration, located as precisely as we can: the file, the entry inside it
 * (a TOML-style key path such as `persistence."/persistent".directories[2]`), and what is wrong.
 */
export class ConfigError extends Error {
  /** What is wrong, and the entry: one line each, cut to a readable length (see oneLine). */
  readonly problem: string;
  readonly entry: string | undefined;
  constructor(
    readonly file: string,
    entry: string | undefined,
    problem: string,
    /** For syntax errors: where in the file. */
    readonly line?: number,
    readonly column?: number,
  ) {
    // One line whatever the config holds: a problem quotes keys and values from the file.
    const shown = oneLine(file, MAX_FILE);
    const where = line === undefined ? shown : `${shown}:${line}:${column ?? 1}`;
    const what = oneLine(problem, MAX_PROBLEM);
    const at = entry === undefined ? undefined : oneLine(entry, MAX_ENTRY);
    super(at ? `${where}: ${at}: ${what}` : `${where}: ${what}`);
    this.name = 'ConfigError';
    this.problem = what;
    this.entry = at;
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

const MAX_FILE = 1024;
const MAX_ENTRY = 256;
const MAX_PROBLEM = 1024;

/**
 * `text` as one printable line of at most about `max` characters: control characters (a newline
 * would start a new line in a unit file, in `check`'s output and in the log) and lone UTF-16
 * surrogates (not encodable as UTF-8) are shown as escapes; a longer text is cut, saying how
 * many characters were cut.
 */
export function oneLine(text: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
  const cut = text.length > max ? text.length - max : 0;
  // Cut first (a 10 MB key is not escaped whole), never inside a surrogate pair.
  let kept = cut ? text.slice(0, max) : text;
  if (cut && /[\ud800-\udbff]$/.test(kept)) kept = kept.slice(0, -1);
  const escaped = kept.replace(UNPRINTABLE, (c) => {
    const code = c.charCodeAt(0);
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  return cut ? `${escaped}… (${text.length - kept.length} more characters)` : escaped;
}
