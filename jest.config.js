/** Two projects: fast unit tests (npm test) and the nspawn boot test (npm run test:e2e). */
const base = { transform: { '^.+\\.ts$': 'ts-jest' }, testEnvironment: 'node' };
module.exports = {
  projects: [
    { ...base, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...base, displayName: 'e2e', testMatch: ['<rootDir>/test/e2e/**/*.test.ts'] },
  ],
};
