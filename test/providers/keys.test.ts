/** Key rules and key order: the fast paths in keys.ts must agree with the plain definitions they stand for. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidKeyError } from '../../src/providers/errors.js';
import { compareKeys, MAX_KEY_BYTES, validateKey } from '../../src/providers/keys.js';

const sign = (n: number) => Math.sign(n);

// Strings drawn from the ranges where UTF-16 order and UTF-8 order can disagree: ASCII, U+E000..U+FFFF, astral.
const unit = fc.oneof(
  fc.integer({ min: 0x20, max: 0x7e }),
  fc.integer({ min: 0xe000, max: 0xffff }),
  fc.integer({ min: 0x10000, max: 0x10ffff }),
  fc.integer({ min: 0x80, max: 0xd7ff }),
);
const text = fc.array(unit, { maxLength: 8 }).map((points) => String.fromCodePoint(...points));

describe('compareKeys', () => {
  it('orders as UTF-8 bytes do (S3 order), astral characters above U+E000..U+FFFF', () => {
    fc.assert(
      fc.property(text, text, (a, b) => {
        expect(sign(compareKeys(a, b))).toBe(sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))));
      }),
      { numRuns: 20_000 },
    );
    expect(compareKeys('\u{1F600}', '\uFFFD')).toBeGreaterThan(0);
    expect(compareKeys('a', 'ab')).toBeLessThan(0);
    expect(compareKeys('same', 'same')).toBe(0);
  });
});

describe('validateKey', () => {
  it.each([
    ['back\\slash', 'backslash'],
    ['nul\u0000', 'control characters'],
    ['c1\u0085', 'control characters'],
    ['lone\ud800', 'not valid Unicode'],
    ['lone\udc00x', 'not valid Unicode'],
    ['a//b', 'empty segment'],
    ['a/../b', "'..' segment"],
  ])('refuses %j (%s)', (key, why) => {
    expect(() => validateKey(key)).toThrow(InvalidKeyError);
    expect(() => validateKey(key)).toThrow(why);
  });

  it('measures length in UTF-8 bytes, also past the short-string shortcut', () => {
    expect(validateKey('é'.repeat(MAX_KEY_BYTES / 2))).toHaveLength(MAX_KEY_BYTES / 2);
    expect(() => validateKey('é'.repeat(MAX_KEY_BYTES / 2 + 1))).toThrow('longer than');
    expect(() => validateKey('€'.repeat(342))).toThrow('longer than');
    expect(validateKey('😀/ok')).toBe('😀/ok');
  });
});
