/** Three projects: fast unit tests (npm test), the nspawn boot tests (npm run test:e2e), the qemu wipe test (npm run test:qemu). */
const base = { transform: { '^.+\\.ts$': 'ts-jest' }, testEnvironment: 'node' };
module.exports = {
  projects: [
    { ...base, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...base, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
    { ...base, displayName: 'qemu', testMatch: ['<rootDir>/test/qemu/**/*.test.ts'] },
  ],
};
