/**
 * The command-line conventions of systemctl/busctl users (issue 12), driven through the built
 * programs: --version, help and COMMAND --help, one-line usage errors with did-you-mean, the
 * options every systemd tool takes (--no-pager, --no-legend, -q, --json=MODE), JSON documents
 * that match their schema, and log lines with <N> prefixes only on the journal's stream.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SCHEMAS } from '../../src/cli/json-schema';
import { COMMANDS, OPTIONS } from '../../src/cli/spec';
import { CTL, ctl, EXAMPLES, REPO, rootWithUsers, run, tempDir, tree } from '../helpers';

const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const prog = (name: string, ...args: string[]) => run(process.execPath, [join(REPO, 'dist', `${name}.js`), ...args]);
const widest = (text: string) => Math.max(...text.split('\n').map((l) => l.length));

describe('--version and --help of every program', () => {
  it.each(['impermanencectl', 'impermanenced', 'impermanence-generator', 'impermanence-notify'])('%s --version prints its name and version, exit 0', (name) => {
    expect(prog(name, '--version')).toEqual({ code: 0, stdout: `${name} ${VERSION}\n`, stderr: '' });
  });

  it.each(['impermanencectl', 'impermanenced', 'impermanence-generator', 'impermanence-notify'])('%s --help exits 0 with a usage line, within 100 columns', (name) => {
    const r = prog(name, '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`Usage: ${name}`));
    expect(widest(r.stdout)).toBeLessThanOrEqual(100);
  });

  it.each([
    ['impermanenced', ['--frobnicate'], "impermanenced: unknown option --frobnicate; see 'impermanenced --help'\n"],
    ['impermanenced', ['--root'], "impermanenced: --root needs a value; see 'impermanenced --help'\n"],
    ['impermanence-generator', ['--frobnicate'], "impermanence-generator: unknown option --frobnicate; see 'impermanence-generator --help'\n"],
    ['impermanence-notify', ['--frobnicate'], "impermanence-notify: unknown option \"--frobnicate\"; see 'impermanence-notify --help'\n"],
  ])('%s %s: one line, exit 2', (name, args, line) => {
    expect(prog(name, ...args)).toEqual({ code: 2, stdout: '', stderr: line });
  });
});

describe('impermanencectl help', () => {
  it('help, --help and no command print the list of commands, exit 0', () => {
    const help = ctl('help');
    expect(help.code).toBe(0);
    for (const c of COMMANDS) expect(help.stdout).toMatch(new RegExp(`^  ${c.name}\\b`, 'm'));
    for (const o of OPTIONS) expect(help.stdout).toContain(`--${o.name}`);
    expect(ctl('--help').stdout).toBe(help.stdout);
    expect(ctl().stdout).toBe(help.stdout);
    expect(widest(help.stdout)).toBeLessThanOrEqual(100);
  });

  it.each(COMMANDS.filter((c) => c.name !== 'help').map((c) => c.name))('%s --help is its own text, the same as help %s', (name) => {
    const r = ctl(name, '--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: impermanencectl ${name}\\b`));
    expect(r.stdout).not.toBe(ctl('help').stdout);
    expect(ctl('help', name).stdout).toBe(r.stdout);
    expect(ctl('--help', name).stdout).toBe(r.stdout);
    expect(widest(r.stdout)).toBeLessThanOrEqual(100);
    // Only the options it takes.
    const own = new Set(COMMANDS.find((c) => c.name === name)!.options);
    for (const o of OPTIONS.filter((o) => !['help', 'version', 'no-pager'].includes(o.name))) expect(r.stdout.includes(`--${o.name} `) || r.stdout.includes(`--${o.name}[`) || r.stdout.includes(`--${o.name}\n`)).toBe(own.has(o.name));
  });

  it('help of an unknown command suggests the nearest', () => {
    expect(ctl('help', 'dif')).toEqual({ code: 2, stdout: '', stderr: "impermanencectl help: no command \"dif\" (did you mean diff?); see 'impermanencectl --help'\n" });
  });
});

describe('impermanencectl usage errors: one line, the nearest name, where the help is', () => {
  it.each([
    [['check', '--jsno'], "impermanencectl check: unknown option --jsno (did you mean --json?); see 'impermanencectl check --help'\n"],
    [['--no-legnd', 'list'], "impermanencectl list: unknown option --no-legnd (did you mean --no-legend?); see 'impermanencectl list --help'\n"],
    [['stauts'], "impermanencectl: unknown command \"stauts\" (did you mean status?); see 'impermanencectl --help'\n"],
    [['frobnicate'], "impermanencectl: unknown command \"frobnicate\"; see 'impermanencectl --help'\n"],
    [['check', '--since', 'all'], "impermanencectl check: --since is not an option of check (only of diff); see 'impermanencectl check --help'\n"],
    [['check', '-x'], "impermanencectl check: unknown option -x; see 'impermanencectl check --help'\n"],
    [['check', '--config'], "impermanencectl check: --config needs a value (DIR); see 'impermanencectl check --help'\n"],
    [['check', '--json=yaml'], "impermanencectl check: --json takes pretty, short or off, not \"yaml\"; see 'impermanencectl check --help'\n"],
    [['check', '--offline=yes'], "impermanencectl check: --offline takes no value; see 'impermanencectl check --help'\n"],
    [['check', 'extra'], "impermanencectl check: unexpected argument \"extra\"; see 'impermanencectl check --help'\n"],
    [['persist'], "impermanencectl persist: persist needs PATH; see 'impermanencectl persist --help'\n"],
    [['notify', 'maybe'], "impermanencectl notify: expected on, off or status, not \"maybe\"; see 'impermanencectl notify --help'\n"],
    [['check', '--\u001b[2Jx'], "impermanencectl check: unknown option --\\u{1b}[2Jx; see 'impermanencectl check --help'\n"],
  ])('%j', (args, line) => {
    expect(ctl(...args)).toEqual({ code: 2, stdout: '', stderr: line });
  });
});

describe('impermanencectl options of the systemd tools', () => {
  const config = tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = ["/var/log"]\n' });

  it('--no-pager is accepted everywhere and changes nothing', () => {
    const plain = ctl('check', '--config', config);
    expect(plain.code).toBe(0);
    expect(ctl('--no-pager', 'check', '--config', config)).toEqual(plain);
    expect(ctl('check', '--no-pager', '--config', config)).toEqual(plain);
  });

  it('-q and --quiet: nothing on stdout, the exit code tells', () => {
    expect(ctl('check', '-q', '--config', config)).toEqual({ code: 0, stdout: '', stderr: '' });
    const bad = tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = ["var/log"]\n' });
    const r = ctl('check', '--quiet', '--config', bad);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/is relative/); // errors still say what is wrong
  });

  it('--json is pretty, --json=short one line, --json=off text', () => {
    const pretty = ctl('check', '--json', '--config', config);
    expect(pretty.stdout.split('\n').length).toBeGreaterThan(3);
    expect(ctl('check', '--json=pretty', '--config', config).stdout).toBe(pretty.stdout);
    const short = ctl('check', '--json=short', '--config', config);
    expect(short.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(short.stdout)).toEqual(JSON.parse(pretty.stdout));
    expect(ctl('check', '--json=off', '--config', config).stdout).toMatch(/^valid: 1 entries/);
  });
});

describe('impermanencectl JSON documents match their schema (version 1, lowercase keys)', () => {
  const keys = (v: unknown): string[] =>
    Array.isArray(v) ? v.flatMap(keys) : v && typeof v === 'object' ? Object.entries(v).flatMap(([k, x]) => [k, ...(k === 'contents' || k === 'links' ? [] : keys(x))]) : [];
  const check = (schema: keyof typeof SCHEMAS, stdout: string) => {
    const doc = JSON.parse(stdout);
    expect(SCHEMAS[schema].safeParse(doc).error).toBeUndefined();
    expect(doc.version).toBe(1);
    for (const k of keys(doc)) expect(k).toMatch(/^[a-z][a-z0-9_]*$/);
    return doc;
  };

  it('check, valid and invalid', () => {
    expect(check('check', ctl('check', '--json', '--config', EXAMPLES, '--root', rootWithUsers()).stdout)).toMatchObject({ valid: true, entries: 34 });
    const bad = tree({ 'a.toml': '[persistence."/p"]\ndirectories = ["rel"]\n' });
    expect(check('check', ctl('check', '--json', '--config', bad).stdout)).toMatchObject({ valid: false });
  });

  it('generate, to a folder and to standard output', () => {
    const out = join(tempDir(), 'out');
    expect(check('generate', ctl('generate', '--json', '--config', EXAMPLES, '--root', rootWithUsers(), '--out', out).stdout).out).toBe(out);
    expect(check('generate', ctl('generate', '--json=short', '--config', EXAMPLES, '--root', rootWithUsers(), '--out', '-').stdout).contents).toBeDefined();
  });

  it('diff --offline', () => {
    const root = tempDir();
    mkdirSync(join(root, 'persistent'));
    mkdirSync(join(root, 'var/lib/app'), { recursive: true });
    writeFileSync(join(root, 'var/lib/app/state'), 'x');
    const r = ctl('diff', '--json', '--config', tree({ 'a.toml': '[persistence."/persistent"]\ndirectories = ["/var/log"]\n' }), '--root', root, '--since', 'all');
    expect(r.code).toBe(3);
    const doc = check('diff', r.stdout);
    expect(doc.items).toContainEqual(expect.objectContaining({ kind: 'unmounted', path: '/var/log' }));
  });

  it('notify status', () => {
    const home = tempDir();
    const r = run(process.execPath, [CTL, 'notify', 'status', '--json'], { env: { HOME: home, XDG_CONFIG_HOME: join(home, '.config') } });
    expect(check('notify', r.stdout)).toEqual({ version: 1, enabled: true, file: join(home, '.config/impermanence/notify.toml') });
  });
});

describe('log lines: <N> prefixes only for the journal', () => {
  const daemon = (env: Record<string, string>, stderrFile: string) => {
    // A bus that is not there: the daemon logs what it loaded, then that it lost the bus, and exits 1.
    const r = spawnSync(process.execPath, [join(REPO, 'dist', 'impermanenced.js'), '--no-watch', '--root', tempDir(), '--config', tempDir(), '--bus', 'unix:path=/nonexistent/bus'], {
      env: { ...process.env, JOURNAL_STREAM: '', ...env },
      stdio: ['ignore', 'ignore', require('node:fs').openSync(stderrFile, 'w')],
      timeout: 20_000,
    });
    expect(r.status).toBe(1);
    return readFileSync(stderrFile, 'utf8');
  };

  it('impermanenced writing to a file (or a terminal) prints "impermanenced: message", no <N>', () => {
    const log = daemon({}, join(tempDir(), 'stderr'));
    expect(log).toMatch(/^impermanenced: Lost the bus: /m);
    expect(log).not.toMatch(/^<\d>/m);
  });

  it('impermanenced whose stderr is the journal stream named by $JOURNAL_STREAM prefixes <N>', () => {
    const file = join(tempDir(), 'stderr');
    writeFileSync(file, '');
    const st = statSync(file, { bigint: true });
    const log = daemon({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, file);
    expect(log).toMatch(/^<3>Lost the bus: /m);
    // A $JOURNAL_STREAM that is not this stderr (inherited by a program run from a service) does not count.
    expect(daemon({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1n}` }, join(tempDir(), 'stderr'))).not.toMatch(/^<\d>/m);
  });

  it('impermanence-generator prefixes <3> off a terminal (the kernel log), not on one', () => {
    const config = tree({ 'a.toml': '[persistence."/p"]\ndirectories = ["rel"]\n' });
    const args = [join(REPO, 'dist', 'impermanence-generator.js'), tempDir()];
    const piped = run(process.execPath, args, { env: { IMPERMANENCE_CONFIG: config } });
    expect(piped.stderr).toMatch(/^<3>impermanence-generator: .*is relative/m);
    // On a terminal: script(1) gives it one.
    const cmd = `IMPERMANENCE_CONFIG=${config} ${process.execPath} ${args.join(' ')}`;
    const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8' });
    expect(tty.stdout).toMatch(/^impermanence-generator: .*is relative/m);
    expect(tty.stdout).not.toMatch(/<\d>/);
  });
});
