/** `impermanencectl help`, `--help` and `help COMMAND`, rendered from spec.ts. */
import { COMMANDS, EXIT_CODES, GROUPS, OPTIONS, optionsOf, type CommandSpec, type OptionSpec } from './spec';

const WIDTH = 100;

/** Words wrapped to lines of at most `width` characters, every line after the first indented by `indent` more. */
export function wrap(text: string, width: number, indent: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.map((l, i) => (i ? ' '.repeat(indent) + l : l)).join('\n');
}

export function optionLabel(o: OptionSpec): string {
  const long = `--${o.name}${o.value ? (o.optional ? `[=${o.value}]` : ` ${o.value}`) : ''}`;
  return o.short ? `-${o.short}, ${long}` : long;
}

function table(rows: Array<[string, string]>, col = Math.min(26, Math.max(...rows.map(([l]) => l.length)) + 2)): string {
  return rows.map(([label, text]) => `  ${label.padEnd(col)}${wrap(text, WIDTH - 2 - col, 2 + col)}`.trimEnd() + '\n').join('');
}

export function synopsis(c: CommandSpec): string {
  return `impermanencectl ${c.name}${c.args ? ' ' + c.args : ''} [OPTIONS]`;
}

export function globalHelp(version: string): string {
  let text = `impermanencectl ${version}: check the config, see what a reboot would lose, talk to impermanenced.\n\nUsage: impermanencectl COMMAND [OPTIONS]\n`;
  const label = (c: CommandSpec) => `${c.name}${c.args ? ' ' + c.args : ''}`;
  const col = Math.max(...COMMANDS.map((c) => label(c).length)) + 2;
  for (const [group, title] of Object.entries(GROUPS)) {
    const cmds = COMMANDS.filter((c) => c.group === group);
    text += `\n${title}:\n` + table(cmds.map((c) => [label(c), c.summary]), col);
  }
  text += `\nOptions (each command takes those that apply to it: see 'impermanencectl COMMAND --help'):\n`;
  text += table(OPTIONS.map((o) => [optionLabel(o), o.help]));
  text += `\nExit codes:\n` + table(EXIT_CODES.map(([code, what]) => [String(code), what]));
  text += `\nSee impermanencectl(1) and impermanence.toml(5).\n`;
  return text;
}

export function commandHelp(c: CommandSpec): string {
  let text = `Usage: ${synopsis(c)}\n\n${wrap(c.description, WIDTH, 0)}\n\nOptions:\n`;
  text += table(optionsOf(c).map((o) => [optionLabel(o), o.name === 'help' ? 'show this help and exit' : o.help]));
  return text;
}
