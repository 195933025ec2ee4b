// Bundles each program into one file under dist/: the generator runs at every boot, so it must
// start fast and need no node_modules.
import { build } from 'esbuild';
import { chmodSync, readFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync('package.json', 'utf8'));

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
      // The daemon without V8's memory reducer, which wakes an idle process every few seconds for
      // as long as it lives (src/daemon/idle.ts collects once after work instead).
      banner: { js: name === 'impermanenced' ? '#!/usr/bin/env -S node --no-memory-reducer' : '#!/usr/bin/env node' },
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
