/** HTTP-dates (RFC 9110 §5.6.7): the three forms a recipient must take, in GMT, and nothing else. */
import { describe, expect, it } from 'vitest';
import { parseHttpDate } from '../../src/api/http-date.js';

const INSTANT = Date.UTC(1994, 10, 6, 8, 49, 37);

describe('parseHttpDate', () => {
  it('reads the three forms of one instant alike, asctime as GMT', () => {
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(INSTANT);
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', Date.UTC(2026, 0, 1))).toBe(INSTANT);
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994')).toBe(INSTANT);
  });

  it('takes a two-digit year whose date would be more than 50 years ahead as the most recent past one', () => {
    const year = (value: string, now: number) => new Date(parseHttpDate(value, now)!).getUTCFullYear();
    const newYear2026 = Date.UTC(2026, 0, 1);
    expect(year('Wednesday, 06-Nov-75 08:49:37 GMT', newYear2026)).toBe(2075); // 49.9 years ahead
    expect(year('Friday, 06-Nov-76 08:49:37 GMT', newYear2026)).toBe(1976); // 2076 would be 50.9 years ahead
    expect(year('Tuesday, 31-Dec-76 23:59:59 GMT', Date.UTC(2026, 10, 30))).toBe(1976); // 50.1 years
    expect(year('Thursday, 30-Nov-76 00:00:00 GMT', Date.UTC(2026, 10, 30, 12))).toBe(2076); // 49.99 years
  });

  it('refuses what is not an HTTP-date, though Date.parse takes it', () => {
    for (const value of ['2099', '1', 'rev 2001', '2026-11-30T08:00:00Z', 'Sun, 06 Nov 1994 08:49:37 PST', 'sun, 06 nov 1994 08:49:37 GMT']) {
      expect(Date.parse(value) || 'not even Date.parse', value).toBeDefined();
      expect(parseHttpDate(value), value).toBeUndefined();
    }
  });

  it('refuses days and times that do not exist', () => {
    for (const value of ['Thu, 31 Apr 2026 00:00:00 GMT', 'Mon, 30 Nov 2026 24:00:00 GMT', 'Mon, 30 Nov 2026 12:60:00 GMT']) {
      expect(parseHttpDate(value), value).toBeUndefined();
    }
  });
});
