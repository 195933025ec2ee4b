/**
 * Four projects, by what a test needs (README "Testing"):
 * unit: pure and fast, in process: no root, no child processes, no mounts, no buses;
 * integration: root, private buses and daemons, dunst, fanotify, loop devices, real shells and tools;
 * e2e: booted systemd-nspawn containers; qemu: a real kernel under qemu.
 * `npm test` runs unit and integration; `npm run test:e2e` and `npm run test:qemu` the others.
 */
const base = { transform: { '^.+\\.ts$': 'ts-jest' }, testEnvironment: 'node' };
module.exports = {
  projects: [
    { ...base, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'], setupFiles: ['<rootDir>/test/unit/no-processes.ts'] },
    { ...base, displayName: 'integration', testMatch: ['<rootDir>/test/integration/**/*.test.ts'], setupFilesAfterEnv: ['<rootDir>/test/integration/setup.ts'] },
    { ...base, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
    { ...base, displayName: 'qemu', testMatch: ['<rootDir>/test/qemu/**/*.test.ts'] },
  ],
};
