/**
 * Loaded before every unit test file (jest.config.js): a unit test that starts a process fails
 * at once, naming the call, so that what needs real tools lands in test/integration/.
 */
for (const id of ['node:child_process', 'child_process']) {
  jest.mock(id, () => {
    const real = jest.requireActual<typeof import('node:child_process')>('node:child_process');
    const refuse = (name: string) => () => {
      throw new Error(`child_process.${name}: unit tests start no processes; this test belongs in test/integration/`);
    };
    return { ...real, ...Object.fromEntries(['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork'].map((n) => [n, refuse(n)])) };
  });
}
