/**
 * The slow tier: tests that run whole commands in child processes for their messages and refusals (or train for
 * tens of seconds) and take minutes together. `npm test` skips them, naming why; `npm test -- --all` runs every test.
 */
export const SLOW: string | false = process.env.EDGEREASON_ALL_TESTS === '1' ? false : 'slow tier: `npm test -- --all` (or EDGEREASON_ALL_TESTS=1) runs it';

/** A slow test's options. */
export const slow = { skip: SLOW };
