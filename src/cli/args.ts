/**
 * impermanencectl's argument parsing, from the table in spec.ts: options go anywhere (before or
 * after the command, as systemctl's), `--opt VALUE` or `--opt=VALUE`, `-q`, `--` ends them. A
 * mistake is one line naming it, with the nearest known command or option, and where the help is.
 */
import { closest } from '../config/load';
import { printable } from '../shared/printable';
import { COMMANDS, command as findCommand, OPTIONS, optionsOf, type CommandSpec } from './spec';

export type JsonMode = 'off' | 'pretty' | 'short';

export interface Parsed {
  command: CommandSpec | undefined;
  args: string[];
  /** Option values: strings (last one wins), string[] for `multiple`, true for flags. */
  values: Record<string, string | string[] | true>;
  json: JsonMode;
}

export class UsageError extends Error {}

const quote = (s: string) => printable(s);

/** Parses argv; throws UsageError with the one line to print. */
export function parse(argv: readonly string[]): Parsed {
  const values: Parsed['values'] = {};
  const positionals: string[] = [];
  const given: string[] = []; // option names, in order, to check against the command
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const spec = OPTIONS.find((o) => o.name === name);
      if (!spec) {
        const near = closest(name, OPTIONS.map((o) => o.name));
        throw new UsageError(`unknown option --${quote(name)}${near ? ` (did you mean --${near}?)` : ''}`);
      }
      let value: string | true = true;
      if (spec.value && !spec.optional) {
        if (eq >= 0) value = a.slice(eq + 1);
        else if (i + 1 < argv.length) value = argv[++i]!;
        else throw new UsageError(`--${name} needs a value (${spec.value})`);
      } else if (eq >= 0) {
        if (!spec.optional) throw new UsageError(`--${name} takes no value`);
        value = a.slice(eq + 1);
      }
      set(values, spec.name, value, spec.multiple);
      given.push(spec.name);
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      for (const ch of a.slice(1)) {
        const spec = OPTIONS.find((o) => o.short === ch);
        if (!spec) throw new UsageError(`unknown option -${quote(ch)}`);
        if (spec.value) throw new UsageError(`-${ch} needs a value: write --${spec.name}=${spec.value}`);
        set(values, spec.name, true, false);
        given.push(spec.name);
      }
      continue;
    }
    positionals.push(a);
  }
  const [name, ...args] = positionals;
  const command = name === undefined ? undefined : findCommand(name);
  if (name !== undefined && !command) {
    const near = closest(name, COMMANDS.map((c) => c.name));
    throw new UsageError(`unknown command ${JSON.stringify(quote(name))}${near ? ` (did you mean ${near}?)` : ''}`);
  }
  if (command && !values.help && !values.version) {
    const allowed = new Set(optionsOf(command).map((o) => o.name));
    for (const o of given) {
      if (allowed.has(o)) continue;
      const takers = COMMANDS.filter((c) => c.options.includes(o)).map((c) => c.name);
      throw new UsageError(`--${o} is not an option of ${command.name}${takers.length ? ` (only of ${takers.join(', ')})` : ''}`);
    }
    if (args.length > command.maxArgs) throw new UsageError(`unexpected argument ${JSON.stringify(quote(args[command.maxArgs]!))}`);
    if (args.length < command.minArgs) throw new UsageError(`${command.name} needs ${command.args}`);
  }
  const mode = values.json;
  if (Array.isArray(mode)) throw new Error('unreachable');
  let json: JsonMode = 'off';
  if (mode === true) json = 'pretty';
  else if (mode !== undefined) {
    if (mode !== 'pretty' && mode !== 'short' && mode !== 'off') throw new UsageError(`--json takes pretty, short or off, not ${JSON.stringify(quote(mode))}`);
    json = mode;
  }
  return { command, args, values, json };
}

function set(values: Parsed['values'], name: string, value: string | true, multiple: boolean | undefined): void {
  if (multiple) values[name] = [...((values[name] as string[] | undefined) ?? []), value as string];
  else values[name] = value;
}

/** Where a UsageError sends the user, as the end of its line. */
export function helpHint(commandName: string | undefined): string {
  return `see 'impermanencectl ${commandName ? `${commandName} ` : ''}--help'`;
}
