/**
 * Loaded in every integration test file (jest.config.js): real processes on a machine that may be
 * busy get 60 s a test, not jest's 5 s; how long a test takes is not what it asserts.
 */
jest.setTimeout(60_000);
