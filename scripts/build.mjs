// Bundles each program into one file under dist/: the generator runs at every boot, so it must
// start fast and need no node_modules.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

const programs = {
  'impermanence-generator': 'src/generator/main.ts',
  impermanencectl: 'src/cli/main.ts',
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
      banner: { js: '#!/usr/bin/env node' },
      legalComments: 'none',
      logLevel: 'warning',
    });
    chmodSync(outfile, 0o755);
  }),
);
