/**
 * A fuzzer of config files, shared by the integration test (test/integration/fuzz.test.ts, 1,000 cases) and
 * the bench (bench/fuzz.mjs, FUZZ_CASES=10000). Random TOML and JSON config files, valid and
 * broken (random keys, huge strings, control characters, invalid UTF-8, odd paths, long names,
 * symlinked storage folders, a storage root that is a file), run in process through
 * `impermanencectl check` and the generator as systemd runs it (NORMAL EARLY LATE with
 * IMPERMANENCE_CONFIG=dir). Each case must end in one of two ways:
 *   - check exits 0, the generator writes units and no error unit; or
 *   - check exits 1 with one line per problem, each naming a config file (or folder), the
 *     generator logs the same lines and leaves impermanence-config-error.service (and, when the
 *     config itself is invalid, nothing else);
 * never an exception or a stack trace, never partial output; and every unit written passes
 * `systemd-analyze verify`, run on batches of cases (unit names prefixed per case) to keep the
 * number of processes low.
 */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run as ctl } from '../../src/cli/main';
import { runGenerator } from '../../src/generator/run';

export interface FuzzFigures {
  cases: number;
  valid: number;
  invalid: number;
  notActivated: number;
  crashes: number;
  partialOutputs: number;
  disagreements: number;
  badLines: number;
  unitsVerified: number;
  verifyFailures: number;
  verifyRuns: number;
  seconds: number;
  /** Where the time went, in seconds. */
  phases: Record<string, number>;
  /** The first few failures, to reproduce (seed and case number). */
  examples: string[];
}

/** mulberry32: a small seeded generator, so that a failing case can be run again. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const chance = (p: number) => next() < p;
  return { next, int, pick, chance };
}
type Rng = ReturnType<typeof rng>;

const WORDS = ['var', 'lib', 'log', 'etc', 'srv', 'home', 'data', 'cache', '.ssh', 'a', 'b', 'x.conf', 'machine-id', 'NetworkManager'];
const ODD = [' ', 'with space', 'ünï', '日本', '🙂', 'a-b', 'back\\slash', '%d', '$HOME', '"q"', "'s'", '.', '..', '', '-', 'trail ', ' lead', '\u00a0', '\ufffd', 'x\ny', 'tab\t', '\u0000', '\u001b[2J', '\ud800', ':', '@', '*', '[', '#'];

/** Characters systemd and the config take in a path: clean cases use only these. */
const BENIGN = [' x', '-y', 'ü', '%', '\\z', '"', "'", '🙂', ':', '.d', '\u00a0'];
/** Per case: a clean case has only accepted paths and values (mostly valid); a noisy one anything. */
let clean = false;
let oddness = 0.3;

function component(r: Rng): string {
  if (clean || !r.chance(oddness)) return r.pick(WORDS) + (r.chance(0.3) ? r.pick(BENIGN) : '') + (r.chance(0.5) ? String(r.int(1000)) : '');
  const roll = r.next();
  if (roll < 0.6) return r.pick(WORDS) + r.pick(ODD);
  if (roll < 0.85) return r.pick(ODD);
  return 'n'.repeat(200 + r.int(120)); // around NAME_MAX
}

function path(r: Rng, absolute = true): string {
  const n = r.chance(0.03) ? 30 + r.int(60) : 1 + r.int(4);
  const parts = Array.from({ length: n }, () => component(r));
  let p = (absolute ? '/' : '') + parts.join('/');
  if (r.chance(0.05)) p += '/';
  if (r.chance(0.03)) p = p.replace('/', '//');
  if (!clean && r.chance(0.02)) p = p.slice(1); // relative where absolute is wanted, and the reverse
  return p;
}

function mode(r: Rng): unknown {
  if (clean) return r.pick(['0755', '0700', 'u=rwx,g=rx,o=', '01777']);
  return r.pick(['0755', '0700', 'u=rwx,g=rx,o=', '0644', 'rwx', '9999', '', 755, '01777', 'u=rwx,g=,o=']);
}

function owner(r: Rng): unknown {
  if (clean) return r.pick(['root', '0', '1000']);
  return r.pick(['root', '0', '1000', 'ghost', '', 12, 'nobody']);
}

function entry(r: Rng, kind: 'directory' | 'file', storages: string[], home: boolean): unknown {
  const p = path(r, !home);
  if (r.chance(0.5)) return p;
  const t: Record<string, unknown> = { [kind]: p };
  if (kind === 'directory') {
    if (r.chance(0.3)) t.mode = mode(r);
    if (r.chance(0.2)) t.user = owner(r);
    if (r.chance(0.2)) t.group = owner(r);
    if (r.chance(0.2)) t.hideMount = clean || r.chance(0.9) ? r.chance(0.5) : 'yes';
    if (r.chance(0.2)) t.allowTrash = r.chance(0.5);
  } else if (r.chance(0.4)) t.method = r.pick(clean ? ['auto', 'symlink'] : ['auto', 'symlink', 'bind']);
  if (r.chance(0.2)) t.parentDirectory = clean || r.chance(0.9) ? { mode: mode(r), user: owner(r) } : 'oops';
  if (r.chance(0.1)) t.persistentStoragePath = r.pick(clean ? [storages[0]!, storages[1]!] : storages);
  if (!clean && r.chance(0.05)) t[r.pick(['owner', 'mod', 'directry', 'x'.repeat(100 + r.int(1000))])] = 1;
  return t;
}

/** One config file's data; storages are the case's folders (some odd, some missing). */
function configData(r: Rng, storages: string[]): Record<string, unknown> {
  const persistence: Record<string, unknown> = {};
  const nStorages = 1 + r.int(2);
  for (let s = 0; s < nStorages; s++) {
    const storage = r.chance(0.9) ? r.pick(clean ? [storages[0]!, storages[1]!, storages[4]!] : storages) : path(r);
    const decl: Record<string, unknown> = {};
    if (r.chance(0.1)) decl.enable = r.chance(0.7);
    if (r.chance(0.2)) decl.hideMounts = r.chance(0.5);
    if (r.chance(0.1)) decl.allowTrash = r.chance(0.5);
    decl.directories = Array.from({ length: r.int(6) }, () => entry(r, 'directory', storages, false));
    if (r.chance(0.7)) decl.files = Array.from({ length: r.int(4) }, () => entry(r, 'file', storages, false));
    if (r.chance(0.2)) {
      decl.users = { [clean ? 'root' : r.pick(['root', 'ghost', 'root'])]: { directories: Array.from({ length: 1 + r.int(2) }, () => entry(r, 'directory', storages, true)) } };
    }
    if (!clean && r.chance(0.03)) decl.directories = 'not a list';
    persistence[storage] = decl;
  }
  const data: Record<string, unknown> = { persistence };
  if (r.chance(0.1)) data.drift = { ignore: [path(r), path(r)] };
  if (!clean && r.chance(0.05)) data[r.pick(['persistance', 'x\u0001y', 'k'.repeat(r.chance(0.1) ? 2_000_000 : 5000)])] = r.chance(0.5) ? {} : 'v';
  return data;
}

function tomlString(s: string): string {
  return JSON.stringify(s); // a TOML basic string, except lone surrogates, which TOML refuses
}

function toToml(data: Record<string, unknown>): string {
  const value = (v: unknown): string => {
    if (typeof v === 'string') return tomlString(v);
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v)) return `[${v.map(value).join(', ')}]`;
    return `{ ${Object.entries(v as object).map(([k, x]) => `${tomlString(k)} = ${value(x)}`).join(', ')} }`;
  };
  let out = '';
  for (const [top, v] of Object.entries(data)) {
    if (top !== 'persistence' || typeof v !== 'object' || v === null) {
      out = `${tomlString(top)} = ${value(v)}\n` + out;
      continue;
    }
    for (const [storage, decl] of Object.entries(v)) {
      out += `[persistence.${tomlString(storage)}]\n`;
      for (const [k, x] of Object.entries(decl as object)) out += `${tomlString(k)} = ${value(x)}\n`;
    }
  }
  return out;
}

/** Breaks a file's text the ways editors and disks do. */
function mangle(r: Rng, text: string): string | Buffer {
  const roll = r.next();
  if (roll < 0.25) return text.slice(0, r.int(text.length + 1)); // cut short
  if (roll < 0.45) {
    const at = r.int(text.length + 1);
    return text.slice(0, at) + r.pick(['"', '[', '}', '\n', '\u0000', '\u0007', '=', ',', '\\', '\u001b[31m', '\r']) + text.slice(at);
  }
  if (roll < 0.55) {
    const at = r.int(text.length + 1);
    const b = Buffer.from(text);
    return Buffer.concat([b.subarray(0, at), Buffer.of(0xff, 0xfe, 0xc3), b.subarray(at)]); // not UTF-8
  }
  if (roll < 0.65) return '['.repeat(5000 + r.int(50_000)); // nested past any sane depth
  if (roll < 0.75) return text.replace(/"/g, "'");
  if (roll < 0.85) return '\ufeff' + text; // a BOM
  return text.replace(/\n/g, r.pick(['\r\n', ' ', '\n\n']));
}

const snapshotNames = (dir: string, prefix = ''): string[] => {
  let names: string[];
  try {
    names = readdirSync(join(dir, prefix));
  } catch {
    return [];
  }
  return names.sort().flatMap((name) => {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = lstatSync(join(dir, rel));
    return st.isDirectory() ? snapshotNames(dir, rel) : [rel];
  });
};

const ERROR_UNIT = 'impermanence-config-error.service';
const TARGET = 'impermanence.target';
/** Names of our units that every case has: prefixed per case in a verify batch. */
const OURS = /impermanence-prepare@|impermanence\.target|impermanence-config-error\.service|impermanence-machine-id-journal\.service/g;

export async function fuzzConfigs(opts: { cases: number; seed: number; base: string; prepare: string; batch?: number }): Promise<FuzzFigures> {
  const started = process.hrtime.bigint();
  const f: FuzzFigures = {
    cases: 0, valid: 0, invalid: 0, notActivated: 0, crashes: 0, partialOutputs: 0, disagreements: 0, badLines: 0,
    unitsVerified: 0, verifyFailures: 0, verifyRuns: 0, seconds: 0, examples: [], phases: { setup: 0, check: 0, generator: 0, verify: 0 },
  };
  const fail = (what: string, i: number, detail: string) => {
    if (f.examples.length < 10) f.examples.push(`seed ${opts.seed} case ${i}: ${what}: ${detail.slice(0, 500)}`);
  };
  const batchSize = opts.batch ?? 250;
  let batch: { dir: string; names: Set<string>; owner: Map<string, number> } | undefined;
  let batchNo = 0;
  const clock = () => Number(process.hrtime.bigint()) / 1e9;
  const flush = () => {
    if (!batch || batch.names.size === 0) return;
    const t0 = clock();
    // Templates are loaded through their instances. systemd-analyze verify (252) cannot take a
    // file whose name has a ":" ("Couldn't process aliases"), though systemd loads such a unit:
    // those are verified as the dependencies of one target, which fails if any of them does.
    const names = [...batch.names].filter((n) => !n.includes('@.service') && !n.includes(':'));
    const colons = [...batch.names].filter((n) => n.includes(':'));
    if (colons.length) {
      writeFileSync(join(batch.dir, 'fuzz-colon-check.target'), `[Unit]\n${colons.map((n) => `Requires=${n}\n`).join('')}`);
      names.push('fuzz-colon-check.target');
    }
    f.verifyRuns++;
    const v = spawnSync('systemd-analyze', ['verify', '--man=no', ...names], {
      cwd: batch.dir, encoding: 'utf8', maxBuffer: 64 << 20,
      env: { ...process.env, SYSTEMD_UNIT_PATH: `${batch.dir}:`, SYSTEMD_LOG_LEVEL: 'notice' },
    });
    f.unitsVerified += names.length;
    const output = (v.stdout ?? '') + (v.stderr ?? '');
    if (v.status !== 0 || output.trim()) {
      const failed = new Set<number>();
      for (const line of output.split('\n')) {
        const m = /^(?:Unit )?(\S+?\.(?:mount|service|target))/.exec(line);
        const who = m && batch.owner.get(m[1]!);
        if (who !== undefined && who !== null) failed.add(who);
      }
      f.verifyFailures += Math.max(1, failed.size);
      fail('systemd-analyze verify', failed.size ? [...failed][0]! : -1, output);
      if (process.env.FUZZ_KEEP) spawnSync('cp', ['-a', batch.dir, `${process.env.FUZZ_KEEP}-${batchNo}`]);
    }
    rmSync(batch.dir, { recursive: true, force: true });
    batch = undefined;
    f.phases.verify! += clock() - t0;
  };
  const addToBatch = (i: number, out: string) => {
    const units = readdirSync(out).filter((n) => /\.(mount|service|target)$/.test(n));
    const renamed = units.map((n) => (n.match(OURS) ? `c${i}-${n}` : n));
    if (batch && (batch.names.size > batchSize * 4 || renamed.some((n) => batch!.names.has(n)))) flush();
    if (!batch) {
      batch = { dir: join(opts.base, `verify-${batchNo++}`), names: new Set(), owner: new Map() };
      mkdirSync(batch.dir, { recursive: true });
    }
    units.forEach((n, k) => {
      const st = lstatSync(join(out, n));
      const text = st.isSymbolicLink() ? readFileSync(join(out, readlinkSync(join(out, n)))) : readFileSync(join(out, n), 'utf8');
      writeFileSync(join(batch!.dir, renamed[k]!), text.toString().replace(OURS, (m) => `c${i}-${m}`));
      batch!.names.add(renamed[k]!);
      batch!.owner.set(renamed[k]!, i);
    });
  };

  for (let i = 0; i < opts.cases; i++) {
    const t0 = clock();
    const r = rng(opts.seed * 1_000_003 + i);
    const dir = join(opts.base, `case-${i}`);
    const conf = join(dir, 'conf');
    mkdirSync(conf, { recursive: true });
    // Storage roots: real folders, one that is a file, one missing, one with symlinked folders.
    const storages = [join(dir, 'store'), join(dir, 'other store'), join(dir, 'file-root'), join(dir, 'missing'), join(dir, 'links')];
    mkdirSync(storages[0]!, { recursive: true });
    mkdirSync(storages[1]!, { recursive: true });
    writeFileSync(storages[2]!, 'not a folder');
    mkdirSync(join(storages[4]!, 'real'), { recursive: true });
    for (const w of ['var', 'srv', 'etc', 'home', 'data']) if (r.chance(0.3)) symlinkSync(r.chance(0.5) ? 'real' : '/etc', join(storages[4]!, w));
    for (const w of ['var', 'srv', 'etc']) if (r.chance(0.2)) writeFileSync(join(storages[0]!, w), 'a file where a folder goes');
    clean = r.chance(0.5);
    oddness = r.pick([0.02, 0.1, 0.3]);
    const nFiles = 1 + r.int(3);
    for (let k = 0; k < nFiles; k++) {
      const json = r.chance(0.4);
      const name = `${10 + k}-${!clean && r.chance(0.05) ? r.pick(['a b', 'x\ny', 'é', '%']) : 'c'}.${json ? 'json' : 'toml'}`;
      const data = configData(r, storages);
      let text: string | Buffer = json ? JSON.stringify(data, null, r.chance(0.5) ? 1 : undefined) : toToml(data);
      if (!clean && r.chance(0.3)) text = mangle(r, text);
      writeFileSync(join(conf, name), text);
    }
    f.cases++;

    const checkOut: string[] = [];
    const checkErr: string[] = [];
    const log: string[] = [];
    const out = join(dir, 'out');
    let checkCode: number;
    let genCode: number;
    try {
      const t1 = clock();
      f.phases.setup! += t1 - t0;
      checkCode = await ctl(['check', '--config', conf], (s) => void checkOut.push(s), (s) => void checkErr.push(s));
      const t2 = clock();
      f.phases.check! += t2 - t1;
      genCode = runGenerator([out, `${out}-early`, `${out}-late`], { IMPERMANENCE_CONFIG: conf, IMPERMANENCE_PREPARE: opts.prepare }, (s) => void log.push(s));
      f.phases.generator! += clock() - t2;
    } catch (err) {
      f.crashes++;
      fail('exception', i, (err as Error)?.stack ?? String(err));
      rmSync(dir, { recursive: true, force: true });
      continue;
    }
    const problems = checkErr.join('').split('\n').filter(Boolean);
    const logged = log.join('').split('\n').filter(Boolean);
    if ([...problems, ...logged].some((l) => /^\s+at |internal error/.test(l))) {
      f.crashes++;
      fail('stack trace', i, [...problems, ...logged].join('\n'));
    }
    const names = snapshotNames(out);
    const hasError = names.includes(ERROR_UNIT);
    if (genCode !== 0) {
      f.crashes++;
      fail('generator exit', i, logged.join('\n'));
    }
    if (checkCode === 0) {
      f.valid++;
      // Units and no error unit; or nothing at all (no entries).
      if (hasError || (names.length > 0 && !names.includes(TARGET))) {
        f.partialOutputs++;
        fail('valid but output', i, names.join(' '));
      }
      if (logged.length) {
        f.disagreements++;
        fail('check valid, generator complained', i, logged.join('\n'));
      }
    } else {
      if (checkCode !== 1) {
        f.crashes++;
        fail('check exit', i, `${checkCode} ${problems.join('\n')}`);
      }
      const notActivated = problems.every((p) => /; not activated$/.test(p));
      if (notActivated) f.notActivated++;
      else f.invalid++;
      // One line per problem, each naming a file or folder of the config.
      for (const p of problems) {
        if (!p.startsWith(conf)) {
          f.badLines++;
          fail('problem line names no config file', i, p);
        }
      }
      if (!hasError) {
        f.partialOutputs++;
        fail('no error unit', i, names.join(' '));
      } else if (!notActivated && names.join(' ') !== `${ERROR_UNIT} local-fs.target.wants/${ERROR_UNIT}`) {
        f.partialOutputs++;
        fail('invalid config but more than the error unit', i, names.join(' '));
      }
      const expected = problems.map((p) => `<3>impermanence-generator: ${p}`);
      if (expected.join('\n') !== logged.join('\n')) {
        f.disagreements++;
        fail('check and generator disagree', i, `${problems.join('\n')}\n--- generator:\n${logged.join('\n')}`);
      }
    }
    if (names.length) addToBatch(i, out);
    rmSync(dir, { recursive: true, force: true });
  }
  flush();
  f.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return f;
}
