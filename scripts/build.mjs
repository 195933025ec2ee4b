// Bundles each program into one file under dist/: the generator runs at every boot, so it must
// start fast and need no node_modules.
import { build } from 'esbuild';
import { chmodSync, readFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync('package.json', 'utf8'));

// The generator's V8 flags (its shebang line; systemd executes the file, so they apply at boot),
// measured with bench/generator.mjs at 10,000 entries: a 1 MB young generation instead of up to
// 16 MB cuts its peak RSS by about 30 MiB at no cost in time (its data lives until it exits, and
// scavenges of a small space are cheap), and --jitless (no optimizing compilers: the run is too short
// for them to pay off) about 5 MiB more at the same CPU time (--no-expose-wasm: or Node warns that
// --jitless disables WebAssembly, on stderr, at every boot). `env -S`: coreutils >= 8.30.
const GENERATOR_FLAGS = '--max-semi-space-size=1 --jitless --no-expose-wasm';

const programs = {
  'impermanence-generator': 'src/generator/main.ts',
  impermanencectl: 'src/cli/main.ts',
  impermanenced: 'src/daemon/main.ts',
  'impermanence-notify': 'src/agent/main.ts',
  'impermanence-prepare': 'src/activate/main.ts',
};
await Promise.all(
  Object.entries(programs).map(async ([name, entry]) => {
    const outfile = `dist/${name}.js`;
    await build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      banner: { js: name === 'impermanence-generator' ? `#!/usr/bin/env -S node ${GENERATOR_FLAGS}` : '#!/usr/bin/env node' },
      legalComments: 'none',
      logLevel: 'warning',
      loader: { '.xml': 'text' },
      define: { VERSION: JSON.stringify(version) },
      // Native: loaded from node_modules beside the bundle (packaging installs it there).
      external: ['unix-dgram'],
    });
    chmodSync(outfile, 0o755);
  }),
);
