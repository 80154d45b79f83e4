/**
 * The current time as an ISO 8601 string, formatted once per millisecond: every write and event carries one, and
 * `Date#toISOString` costs more than the rest of building a small event.
 */
let lastMs = Number.NaN;
let lastIso = '';

export function nowIso(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}
