// Builds what the packages install besides the programs, into dist/:
//   dist/man/man{1,5,8}/*.{1,5,8}   from man/*.md (a small Markdown subset, below), with the
//                                   command and option tables filled in from src/cli/spec.ts
//   dist/json/impermanencectl-COMMAND.schema.json   the JSON Schemas of --json, from src/cli/json-schema.ts
//   dist/completions/bash/impermanencectl, zsh/_impermanencectl, fish/impermanencectl.fish
//                                   from completions/*.in, with the commands and options from spec.ts
// One source of truth: `help`, the man page and the completions all come from spec.ts.
import { build } from 'esbuild';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const { version } = JSON.parse(readFileSync('package.json', 'utf8'));
const tmp = mkdtempSync(join(tmpdir(), 'impermanence-docs-'));
let spec, schemas;
try {
  for (const name of ['spec', 'json-schema']) {
    await build({ entryPoints: [`src/cli/${name}.ts`], outfile: join(tmp, `${name}.cjs`), bundle: true, platform: 'node', format: 'cjs', logLevel: 'warning' });
  }
  const load = createRequire(import.meta.url);
  spec = load(join(tmp, 'spec.cjs'));
  schemas = load(join(tmp, 'json-schema.cjs')).jsonSchemas();
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
const { COMMANDS, OPTIONS, EXIT_CODES, GROUPS, optionsOf } = spec;

// ── Man pages ────────────────────────────────────────────────────────────────────────────────
const optionLabel = (o) => `${o.short ? `\`-${o.short}\`, ` : ''}\`--${o.name}${o.value ? (o.optional ? `[=${o.value}]` : ` ${o.value}`) : ''}\``;
const generated = {
  commands: () =>
    Object.entries(GROUPS)
      .map(([group, title]) => {
        const cmds = COMMANDS.filter((c) => c.group === group);
        return `### ${title}\n\n` + cmds.map((c) => `\`${c.name}\`${c.args ? ' ' + c.args.replace(/[A-Z]{2,}/g, (w) => `*${w}*`) : ''}\n: ${c.description}\n${c.options.length ? `\n: Options: ${c.options.map((o) => `\`--${o}\``).join(', ')}.\n` : ''}`).join('\n');
      })
      .join('\n'),
  options: () => OPTIONS.map((o) => `${optionLabel(o)}\n: ${o.help[0].toUpperCase()}${o.help.slice(1)}. Taken by ${o.name === 'help' || o.name === 'version' || o.name === 'no-pager' ? 'every command' : COMMANDS.filter((c) => c.options.includes(o.name)).map((c) => `\`${c.name}\``).join(', ')}.\n`).join('\n'),
  'exit-codes': () => EXIT_CODES.map(([code, what]) => `\`${code}\`\n: ${what[0].toUpperCase()}${what.slice(1)}.\n`).join('\n'),
};

/** roff-escapes text and turns the inline Markdown (**b**, *i*, `code`) into fonts. */
function inline(text) {
  let s = text.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  s = s.replace(/`([^`]+)`/g, (_, c) => `\\fB${c}\\fR`);
  s = s.replace(/\*\*([^*]+)\*\*/g, (_, c) => `\\fB${c}\\fR`);
  s = s.replace(/(^|[^\w*])\*([^*\s][^*]*)\*/g, (_, pre, c) => `${pre}\\fI${c}\\fR`);
  return s;
}
/** A line of text that roff would take for a request if it starts with . or '. */
const safe = (line) => (/^[.']/.test(line) ? `\\&${line}` : line);

export function toRoff(md, name, section) {
  md = md.replace(/^\{\{([a-z-]+)\}\}$/gm, (_, key) => {
    if (!generated[key]) throw new Error(`${name}.${section}.md: unknown {{${key}}}`);
    return generated[key]();
  });
  const out = [`.TH ${name.toUpperCase()} ${section} "" "impermanence ${version}" "impermanence"`];
  const lines = md.split('\n');
  let para = [];
  const flush = () => {
    if (para.length) out.push('.PP', ...para.map((l) => safe(inline(l))));
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith('```')) {
      flush();
      out.push('.PP', '.RS 4', '.nf');
      for (i++; i < lines.length && !lines[i].startsWith('```'); i++) out.push(safe(lines[i].replace(/\\/g, '\\e').replace(/-/g, '\\-')));
      out.push('.fi', '.RE');
    } else if (/^## /.test(line)) {
      flush();
      out.push(`.SH ${inline(line.slice(3)).toUpperCase()}`);
    } else if (/^### /.test(line)) {
      flush();
      out.push(`.SS ${inline(line.slice(4))}`);
    } else if (/^- /.test(line)) {
      flush();
      out.push('.IP \\(bu 2', safe(inline(line.slice(2))));
      while (lines[i + 1] && /^  \S/.test(lines[i + 1])) out.push(safe(inline(lines[++i].trim())));
    } else if (lines[i + 1]?.startsWith(': ') && line.trim() && !line.startsWith(': ')) {
      flush();
      out.push('.TP', safe(inline(line)));
      i++;
      out.push(safe(inline(lines[i].slice(2))));
      while (lines[i + 1] && /^  \S/.test(lines[i + 1])) out.push(safe(inline(lines[++i].trim())));
      // A further paragraph of the same item: ": text" after a blank line.
      while (lines[i + 1] === '' && lines[i + 2]?.startsWith(': ')) {
        i += 2;
        out.push('.IP', safe(inline(lines[i].slice(2))));
        while (lines[i + 1] && /^  \S/.test(lines[i + 1])) out.push(safe(inline(lines[++i].trim())));
      }
    } else if (line.trim() === '') flush();
    else para.push(line.trim());
  }
  flush();
  return out.join('\n') + '\n';
}

for (const file of readdirSync('man').filter((f) => f.endsWith('.md')).sort()) {
  const m = /^(.+)\.(\d)\.md$/.exec(file);
  if (!m) continue;
  const [, name, section] = m;
  const dir = join('dist', 'man', `man${section}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.${section}`), toRoff(readFileSync(join('man', file), 'utf8'), name, section));
}

// ── JSON Schemas of impermanencectl --json ───────────────────────────────────────────────────
mkdirSync(join('dist', 'json'), { recursive: true });
for (const [name, schema] of Object.entries(schemas)) writeFileSync(join('dist', 'json', `impermanencectl-${name}.schema.json`), JSON.stringify(schema, null, 2) + '\n');

// ── Shell completions ────────────────────────────────────────────────────────────────────────
const shQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
const valueOptions = OPTIONS.filter((o) => o.value);
const fill = {
  // bash: plain words and case arms
  '@COMMANDS@': COMMANDS.map((c) => c.name).join(' '),
  '@GLOBAL_OPTIONS@': optionsOf(undefined).map((o) => `--${o.name}`).join(' '),
  '@OPTIONS_CASE@': COMMANDS.map((c) => `        ${c.name}) opts=${shQuote(optionsOf(c).flatMap((o) => [`--${o.name}`, ...(o.short ? [`-${o.short}`] : [])]).join(' '))} ;;`).join('\n'),
  '@VALUE_OPTIONS@': valueOptions.filter((o) => !o.optional).map((o) => `--${o.name}`).join('|'),
  '@VALUE_CASE@': valueOptions.filter((o) => !o.optional).map((o) => `        --${o.name}) kind=${shQuote(Array.isArray(o.complete) ? 'words:' + o.complete.join(' ') : o.complete ?? 'none')} ;;`).join('\n'),
  '@ARGS_CASE@': COMMANDS.filter((c) => c.complete).map((c) => `        ${c.name}) kind=${shQuote(Array.isArray(c.complete) ? 'words:' + c.complete.join(' ') : c.complete)} ;;`).join('\n'),
  // zsh: 'name:description' lists
  '@ZSH_COMMANDS@': COMMANDS.map((c) => `    ${shQuote(`${c.name}:${c.summary.replace(/:/g, '\\:')}`)}`).join('\n'),
  '@ZSH_OPTIONS_CASE@': COMMANDS.map((c) => `    (${c.name}) opts=(${optionsOf(c).flatMap(zshSpecs).map(shQuote).join(' ')}) ;;`).join('\n'),
  '@ZSH_GLOBAL_OPTIONS@': optionsOf(undefined).flatMap(zshSpecs).map(shQuote).join(' '),
  '@ZSH_ARGS_CASE@': COMMANDS.filter((c) => c.complete).map((c) => `    (${c.name}) _impermanencectl_complete ${shQuote(Array.isArray(c.complete) ? 'words:' + c.complete.join(' ') : c.complete)} ;;`).join('\n'),
  // fish: complete lines
  '@FISH_LINES@': [
    ...COMMANDS.map((c) => `complete -c impermanencectl -n __fish_use_subcommand -a ${c.name} -d ${shQuote(c.summary)}`),
    ...OPTIONS.map((o) => {
      const takers = o.name === 'help' || o.name === 'version' || o.name === 'no-pager' ? null : COMMANDS.filter((c) => c.options.includes(o.name)).map((c) => c.name);
      const cond = takers ? ` -n ${shQuote(`__fish_seen_subcommand_from ${takers.join(' ')}`)}` : '';
      const value = o.value ? (o.optional ? '' : ' -r') + fishValues(o) : '';
      return `complete -c impermanencectl${cond} -l ${o.name}${o.short ? ` -s ${o.short}` : ''}${value} -d ${shQuote(o.help)}`;
    }),
    ...COMMANDS.filter((c) => c.complete).map((c) => `complete -c impermanencectl -n ${shQuote(`__fish_seen_subcommand_from ${c.name}`)} -f -a ${fishWords(c.complete)}`),
  ].join('\n'),
};

/** _arguments specs for an option: `--config=[help]:DIR:_directories`, and `-q[help]` for a short name. */
function zshSpecs(o) {
  const help = o.help.replace(/[[\]:\\]/g, '\\$&');
  const action = o.value ? `:${o.value}:${zshAction(o.complete)}` : '';
  const long = `${o.multiple ? '*' : ''}--${o.name}${o.optional ? '=-' : o.value ? '=' : ''}[${help}]${action}`;
  return o.short ? [long, `-${o.short}[${help}]`] : [long];
}
function zshAction(c) {
  if (Array.isArray(c)) return `(${c.join(' ')})`;
  return { dir: '_directories', file: '_files', path: '_files', entry: '_impermanencectl_entries', storage: '_impermanencectl_storages', user: '_users', none: ' ' }[c] ?? ' ';
}
function fishValues(o) {
  if (Array.isArray(o.complete)) return ` -f -a ${shQuote(o.complete.join(' '))}`;
  return { dir: " -f -a '(__fish_complete_directories)'", storage: " -f -a '(impermanencectl __complete storages 2>/dev/null)'", user: " -f -a '(__fish_complete_users)'", none: ' -f' }[o.complete] ?? '';
}
function fishWords(c) {
  if (Array.isArray(c)) return shQuote(c.join(' '));
  return { command: shQuote(COMMANDS.map((x) => x.name).join(' ')), entry: "'(impermanencectl __complete entries 2>/dev/null)'", path: "'(__fish_complete_path (commandline -ct))'" }[c] ?? "''";
}

for (const [template, out] of [
  ['impermanencectl.bash.in', 'bash/impermanencectl'],
  ['_impermanencectl.zsh.in', 'zsh/_impermanencectl'],
  ['impermanencectl.fish.in', 'fish/impermanencectl.fish'],
]) {
  let text = readFileSync(join('completions', template), 'utf8');
  text = text.replace(/@[A-Z_]+@/g, (key) => {
    if (!(key in fill)) throw new Error(`completions/${template}: unknown ${key}`);
    return fill[key];
  });
  mkdirSync(join('dist', 'completions', out, '..'), { recursive: true });
  writeFileSync(join('dist', 'completions', out), text);
}
