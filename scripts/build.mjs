// Bundles each program into one file under dist/: the generator runs at every boot, so it must
// start fast and need no node_modules.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const { version } = JSON.parse(readFileSync('package.json', 'utf8'));

// The generator's V8 flags (its shebang line; systemd executes the file, so they apply at boot),
// measured with bench/generator.mjs at 10,000 entries: a 1 MB young generation instead of up to
// 16 MB cuts its peak RSS by about 30 MiB at no cost in time (its data lives until it exits, and
// scavenges of a small space are cheap). Of V8's compilers only Sparkplug, the baseline one, which
// turns bytecode into machine code without optimizing it (and lets regular expressions run as
// machine code): 0.35 -> 0.32 s at 10,000 entries for +1.4 MiB, 1-2 ms more at 100 entries (1.18x
// -> 1.20x `node -e 0` over 25 runs). The optimizing compilers (TurboFan; Maglev, on by default
// from Node 22) cost another 6 MiB, and compile on other threads for a run too short to repay it.
// --jitless (no compiler at all) was used before: 1.4 MiB less, 0.03 s slower. `env -S`: coreutils >= 8.30.
const GENERATOR_FLAGS = '--max-semi-space-size=1 --no-turbofan --no-maglev';

/**
 * node:crypto is loaded on first use, in every program: loading it costs about 6 ms at each start
 * (`impermanencectl --version`: 92.5 -> 86.4 and 94.5 -> 88.4 ms in two runs of 40 or more, beside
 * `node -e 0` at 64-65 ms), and most runs never use it (the D-Bus library imports it for a cookie
 * authentication the system bus never uses; our own code, to name a temporary file or a unit).
 */
const LAZY_CRYPTO =
  "let m; const c = () => (m ??= require('node:crypto'));\n" +
  // What the bundles import from it: a name not here fails the build.
  'export const randomBytes = (...a) => c().randomBytes(...a);\n' +
  'export const createHash = (...a) => c().createHash(...a);\n';
const lazyCrypto = {
  name: 'lazy-node-crypto',
  setup(b) {
    b.onResolve({ filter: /^(node:)?crypto$/ }, (args) =>
      args.namespace === 'lazy' ? { path: 'node:crypto', external: true } : { path: 'node:crypto', namespace: 'lazy' },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy' }, () => ({ contents: LAZY_CRYPTO, loader: 'js' }));
  },
};

/**
 * The daemon's memory at idle (bench/live.mjs: target RSS <= 45 MiB; `node -e` alone idles at
 * about 41 MiB here, 34 of them the pages of the node binary it touched). Measured per change,
 * RSS: its bundle is minified (no renaming: stack traces keep their function names), -1.6 MiB:
 * V8 keeps a script's whole source in its heap, and one non-ASCII character in a comment of a
 * dependency (there were some) makes it two bytes a character: 1.26 MB before, 0.43 MB after.
 * node:crypto loaded on first use (above): -0.3 to -0.5 MiB. Tried and not kept (no gain, or a
 * loss): --max-semi-space-size=1 (+1 MiB), --optimize-for-size (+1.5), --jitless (+0.5),
 * --lite-mode, --max-lazy, --single-threaded, --v8-pool-size=1 (within 0.3 MiB); the contract
 * parsed at build time instead of by fast-xml-parser at start (-0.3 MiB: not worth a second way
 * to read it).
 */
const DAEMON = { minifyWhitespace: true, minifySyntax: true };

const programs = {
  'impermanence-generator': 'src/generator/main.ts',
  impermanencectl: 'src/cli/main.ts',
  impermanenced: 'src/daemon/main.ts',
  'impermanence-notify': 'src/agent/main.ts',
  'impermanence-prepare': 'src/activate/main.ts',
};
// The generator is written by hand (writeGenerator), maybe before esbuild has made dist/ for the others.
mkdirSync('dist', { recursive: true });
await Promise.all(
  Object.entries(programs).map(async ([name, entry]) => {
    const outfile = `dist/${name}.js`;
    const generator = name === 'impermanence-generator';
    const result = await build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      // The generator's shebang (with its V8 flags) comes from its own source. The daemon runs without
      // V8's memory reducer, which wakes an idle process every few seconds for as long as it lives
      // (src/daemon/idle.ts collects once after work instead).
      banner: generator ? undefined : { js: name === 'impermanenced' ? '#!/usr/bin/env -S node --no-memory-reducer' : '#!/usr/bin/env node' },
      legalComments: 'none',
      logLevel: 'warning',
      loader: { '.xml': 'text' },
      define: { VERSION: JSON.stringify(version) },
      // Native: loaded from node_modules beside the bundle (packaging installs it there).
      external: ['unix-dgram'],
      write: !generator,
      plugins: [lazyCrypto],
      ...(name === 'impermanenced' ? DAEMON : {}),
    });
    if (generator) writeGenerator(outfile, result.outputFiles[0].text);
    chmodSync(outfile, 0o755);
  }),
);

/**
 * The generator is written as a small loader with its bundled code as one string, compiled with
 * vm.Script and V8's code cache (bytecode, functions compiled during a sample run included): about
 * a third of its start-up above `node -e 0` at 100 entries is compiling its own code. The cache is
 * made here, by running the generator on a sample config under the generator's own V8 flags (V8
 * rejects a cache made under other flags or by another V8), into
 * dist/impermanence-generator.HASH.cache, HASH being of the code: V8 checks a cache against the
 * length of the source only, so the name ties each cache to exactly one build. The loader looks
 * for it beside itself, then in /usr/lib/impermanence (packaging/install.sh); without it, or when
 * V8 rejects it (Node upgraded), the code is compiled as usual: the cache only saves time.
 */
function writeGenerator(outfile, code) {
  const body = `(function (require, module, exports, __filename, __dirname) {${code}\n})`;
  const hash = createHash('sha256').update(body).update(GENERATOR_FLAGS).digest('hex').slice(0, 16);
  const cache = `impermanence-generator.${hash}.cache`;
  const loader = `#!/usr/bin/env -S node ${GENERATOR_FLAGS}
'use strict';
// Built by scripts/build.mjs: the generator's code, compiled with its V8 code cache when found.
const { readFileSync } = require('node:fs');
const { Script } = require('node:vm');
const CODE = ${JSON.stringify(body)};
let cachedData;
for (const dir of [__dirname, '/usr/lib/impermanence']) {
  try {
    cachedData = readFileSync(dir + '/${cache}');
    break;
  } catch {
    // no cache there: compiled without it
  }
}
new Script(CODE, { filename: __filename, cachedData }).runInThisContext()(require, module, exports, __filename, __dirname);
`;
  writeFileSync(outfile, loader);
  for (const old of readdirSync('dist')) if (/^impermanence-generator\.[0-9a-f]+\.cache$/.test(old)) rmSync(`dist/${old}`);
  // The sample run: a config with directories, files, a user's home and options, into a scratch folder.
  const scratch = mkdtempSync(join(tmpdir(), 'impermanence-build-'));
  try {
    mkdirSync(`${scratch}/config`);
    writeFileSync(
      `${scratch}/config/sample.toml`,
      '[persistence."/persist"]\nhideMounts = true\ndirectories = ["/var/lib/a", { directory = "/srv/b", mode = "0700" }]\n' +
        'files = ["/etc/machine-id", { file = "/etc/c.conf", parentDirectory = { mode = "0755" } }]\n' +
        '[persistence."/persist".users.root]\ndirectories = [".ssh"]\nfiles = [".bashrc"]\n',
    );
    writeFileSync(`${scratch}/body.js`, body);
    const maker = `const { readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');
const script = new Script(readFileSync(process.env.BODY, 'utf8'), { filename: process.env.GEN });
script.runInThisContext()(require, module, exports, process.env.GEN, require('node:path').dirname(process.env.GEN));
if (process.exitCode) process.exit(1);
writeFileSync(process.env.CACHE, script.createCachedData());`;
    writeFileSync(`${scratch}/maker.js`, maker);
    const r = spawnSync(process.execPath, [...GENERATOR_FLAGS.split(' '), `${scratch}/maker.js`, `${scratch}/out`], {
      encoding: 'utf8',
      env: { ...process.env, IMPERMANENCE_CONFIG: `${scratch}/config`, BODY: `${scratch}/body.js`, GEN: resolve(outfile), CACHE: `dist/${cache}` },
    });
    if (r.status !== 0) throw new Error(`making the generator's code cache failed: ${r.stderr}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
