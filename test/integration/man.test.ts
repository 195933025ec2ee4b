/**
 * The built documents: the man pages (man/*.md, built into dist/man by scripts/build-docs.mjs)
 * each render with groff and man(1) without a warning, and every command with --json has its
 * JSON Schema in dist/json. That impermanence.toml(5) documents exactly what the config schema
 * accepts is a unit test (test/unit/docs.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMANDS, OPTIONS } from '../../src/cli/spec';
import { REPO } from '../helpers';

const PAGES = ['man1/impermanencectl.1', 'man1/impermanence-notify.1', 'man5/impermanence.toml.5', 'man8/impermanenced.8', 'man8/impermanence-generator.8'];
const built = (page: string) => join(REPO, 'dist', 'man', page);

describe('man pages', () => {
  it.each(PAGES)('%s renders with groff -ww without a warning', (page) => {
    expect(existsSync(built(page))).toBe(true);
    const r = spawnSync('groff', ['-ww', '-z', '-man', built(page)], { encoding: 'utf8' });
    expect({ code: r.status, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  });

  it.each(PAGES)('man -l %s shows NAME, within 100 columns', (page) => {
    const r = spawnSync('man', ['-l', built(page)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '100', MANPAGER: 'cat', PAGER: 'cat', MAN_KEEP_FORMATTING: '' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^NAME\n/m);
    expect(Math.max(...r.stdout.split('\n').map((l) => l.length))).toBeLessThanOrEqual(100);
  });

  it('impermanencectl(1) describes every command and option of the program', () => {
    const text = spawnSync('man', ['-l', built('man1/impermanencectl.1')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '200', MANPAGER: 'cat' } }).stdout;
    for (const c of COMMANDS) expect(text).toMatch(new RegExp(`^ +${c.name}\\b`, 'm'));
    for (const o of OPTIONS) expect(text).toMatch(new RegExp(`^ +(-${o.short}, )?--${o.name}\\b`, 'm'));
  });
});

describe('JSON Schemas of impermanencectl --json', () => {
  it('one per command that takes --json, each with version 1 required, built into dist/json', () => {
    const withJson = COMMANDS.filter((c) => c.options.includes('json')).map((c) => c.name).sort();
    expect(COMMANDS.filter((c) => c.json).map((c) => c.json).sort()).toEqual(withJson);
    for (const name of withJson) {
      const schema = JSON.parse(readFileSync(join(REPO, 'dist', 'json', `impermanencectl-${name}.schema.json`), 'utf8'));
      expect(schema.$schema).toMatch(/json-schema\.org/);
      const variants: Array<{ required: string[]; properties: { version: { const: number } } }> = schema.anyOf ?? schema.oneOf ?? [schema];
      for (const v of variants) {
        expect(v.required).toContain('version');
        expect(v.properties.version.const).toBe(1);
      }
    }
  });
});
