/**
 * HTTP-dates as RFC 9110 §5.6.7 defines them, and nothing else: `Date.parse` takes far more (`2099`, `1`,
 * `rev 2001`), and reads the asctime form in the server's time zone where HTTP means GMT. A conditional header
 * whose value is not an HTTP-date is ignored (§13.1.3-4), so anything else parses as `undefined`.
 */
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const LONG_DAY = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTH = `(${MONTHS.join('|')})`;
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';

/** `Sun, 06 Nov 1994 08:49:37 GMT` (what this API sends). */
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
/** `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete). */
const RFC850_DATE = new RegExp(`^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
/** `Sun Nov  6 08:49:37 1994` (obsolete; C's asctime, in GMT). */
const ASCTIME_DATE = new RegExp(`^${DAY} ${MONTH} ([ \\d]\\d) ${TIME} (\\d{4})$`);

/** Milliseconds since the epoch of an HTTP-date, or `undefined` for anything that is not one. */
export function parseHttpDate(value: string, now = Date.now()): number | undefined {
  let match = IMF_FIXDATE.exec(value);
  if (match) return utc(Number(match[3]), match[2]!, match[1]!, match.slice(4));
  match = RFC850_DATE.exec(value);
  if (match) return inThisCentury(Number(match[3]), now, (year) => utc(year, match![2]!, match![1]!, match!.slice(4)));
  match = ASCTIME_DATE.exec(value);
  if (match) return utc(Number(match[6]), match[1]!, match[2]!, match.slice(3, 6));
  return undefined;
}

/**
 * The time of a date with a two-digit year, `at(year)` for a full one: in this century, unless that date appears
 * more than 50 years in the future, then in the one before (§5.6.7).
 */
function inThisCentury(twoDigits: number, now: number, at: (year: number) => number | undefined): number | undefined {
  const year = Math.floor(new Date(now).getUTCFullYear() / 100) * 100 + twoDigits;
  const time = at(year);
  if (time === undefined) return undefined;
  const fiftyYearsAhead = new Date(now);
  fiftyYearsAhead.setUTCFullYear(fiftyYearsAhead.getUTCFullYear() + 50);
  return time > fiftyYearsAhead.getTime() ? at(year - 100) : time;
}

function utc(year: number, month: string, day: string, [hours, minutes, seconds]: string[]): number | undefined {
  const monthIndex = MONTHS.indexOf(month);
  const dayOfMonth = Number(day.trim());
  const [h, m, s] = [Number(hours), Number(minutes), Number(seconds)];
  if (h > 23 || m > 59 || s > 60) return undefined;
  const time = Date.UTC(year, monthIndex, dayOfMonth, h, m, Math.min(s, 59)); // a leap second as the second before it
  // Day 31 of a 30-day month would roll over into the next: not a date.
  return new Date(time).getUTCDate() === dayOfMonth ? time : undefined;
}
