/**
 * The shell completions (dist/completions, made from src/cli/spec.ts), driven in the real
 * shells: bash (`complete -p`, then the function with COMP_WORDS/COMP_CWORD, as bash calls it),
 * zsh (its completion system in a pseudo-terminal: test/shells/zsh-complete.zsh) and fish
 * (`complete -C`). Entry paths and storage roots come from a real impermanenced on a private bus.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { PrivateBus } from '../dbus/harness';
import { sandboxRoot, startBus, startDaemon, type Daemon } from '../dbus/daemon';
import { REPO, tempDir } from '../helpers';

jest.setTimeout(60_000);

const COMPLETIONS = join(REPO, 'dist', 'completions');
let bus: PrivateBus;
let daemon: Daemon;
let bin: string;
let cwd: string;
const env = () => ({ ...process.env, PATH: `${bin}:${dirname(process.execPath)}:/usr/bin:/bin`, DBUS_SYSTEM_BUS_ADDRESS: bus.address, HOME: cwd });

beforeAll(async () => {
  for (const shell of ['bash', 'zsh', 'fish']) {
    if (spawnSync(shell, ['-c', 'true']).status !== 0) throw new Error(`${shell} is not installed (apt-get install ${shell})`);
  }
  bin = tempDir();
  symlinkSync(join(REPO, 'dist', 'impermanencectl.js'), join(bin, 'impermanencectl'));
  // A folder to complete file names in.
  cwd = tempDir();
  mkdirSync(join(cwd, 'conf.d'));
  mkdirSync(join(cwd, 'configs'));
  writeFileSync(join(cwd, 'config.toml'), '');
  const root = sandboxRoot({ configName: '10.toml', config: '[persistence."/persistent"]\ndirectories = ["/var/log", "/var/lib/bluetooth", "/srv/data"]\n', dirs: ['persistent'] });
  bus = await startBus();
  daemon = await startDaemon({ bus, root, args: ['--no-watch'] });
});

afterAll(async () => {
  await daemon?.stop();
  await bus?.stop();
});

/** What bash offers for `line` (the cursor at its end), through the installed completion. */
function bash(line: string): string[] {
  const script = `source ${COMPLETIONS}/bash/impermanencectl
[[ $(complete -p impermanencectl) == 'complete -F _impermanencectl impermanencectl' ]] || { echo "not registered" >&2; exit 1; }
COMP_LINE="$1"; COMP_POINT=\${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"; [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
_impermanencectl impermanencectl "\${COMP_WORDS[COMP_CWORD]}" "\${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['-c', script, 'bash', line], { encoding: 'utf8', env: env(), cwd });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.split('\n').filter(Boolean);
}

function zsh(line: string): string[] {
  const out = join(tempDir(), 'candidates');
  const r = spawnSync('zsh', ['-f', join(REPO, 'test/shells/zsh-complete.zsh'), join(COMPLETIONS, 'zsh'), out, line], { encoding: 'utf8', env: env(), cwd, timeout: 30_000 });
  if (r.status !== 0) throw new Error(`zsh: ${r.status} ${r.stderr}`);
  return [...new Set(r.stdout.split('\n').filter(Boolean))];
}

function fish(line: string): string[] {
  const r = spawnSync('fish', ['-N', '-c', `source ${COMPLETIONS}/fish/impermanencectl.fish; complete -C "$argv[1]"`, line], { encoding: 'utf8', env: env(), cwd });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!);
}

describe.each([
  ['bash', bash],
  ['zsh', zsh],
  ['fish', fish],
])('%s completion of impermanencectl', (_shell, complete) => {
  it('completes commands', () => {
    expect(complete('impermanencectl st')).toEqual(['status']);
    expect(complete('impermanencectl ')).toEqual(expect.arrayContaining(['check', 'diff', 'list', 'monitor', 'persist', 'help']));
  });

  it("completes a command's own options, not others'", () => {
    const diff = complete('impermanencectl diff --');
    expect(diff).toEqual(expect.arrayContaining(['--since', '--offline', '--no-legend', '--no-pager', '--help']));
    expect(diff).not.toContain('--storage');
    expect(complete('impermanencectl diff --si')).toEqual(['--since']);
    expect(complete('impermanencectl check --')).not.toContain('--since');
  });

  it('completes option values and arguments', () => {
    expect(complete('impermanencectl diff --since ').sort()).toEqual(['all', 'boot']);
    expect(complete('impermanencectl notify ').sort()).toEqual(['off', 'on', 'status']);
    expect(complete('impermanencectl help di')).toEqual(['diff']);
  });

  it('completes folders for --config', () => {
    const got = complete('impermanencectl check --config con').map((p) => p.replace(/\/$/, ''));
    expect(got).toEqual(expect.arrayContaining(['conf.d', 'configs']));
    expect(got).not.toContain('config.toml');
  });

  it('completes entry paths from the daemon for unpersist, and storage roots for --storage', () => {
    expect(complete('impermanencectl unpersist /var/l').sort()).toEqual(['/var/lib/bluetooth', '/var/log']);
    expect(complete('impermanencectl persist --storage /p')).toEqual(['/persistent']);
  });
});

describe('impermanencectl __complete (for the completions)', () => {
  it('prints the entries one a line, and nothing (exit 0) without a daemon', () => {
    const r = spawnSync(join(bin, 'impermanencectl'), ['__complete', 'entries'], { encoding: 'utf8', env: env() });
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual(['/srv/data', '/var/lib/bluetooth', '/var/log']);
    const none = spawnSync(join(bin, 'impermanencectl'), ['__complete', 'entries'], { encoding: 'utf8', env: { ...env(), DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' } });
    expect([none.status, none.stdout]).toEqual([0, '']);
  });
});
