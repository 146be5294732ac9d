/**
 * FHIR date, dateTime and instant values as ranges of epoch milliseconds.
 *
 * A FHIR date is an implicit range at its precision (http://hl7.org/fhir/R4/search.html#date):
 * `2013` is all of 2013, `2013-01-14T10:00Z` is that minute. Values without a time zone
 * (dates, and dateTimes the schema lets through) are read as UTC, so the same value always
 * indexes and searches the same way on every server.
 */
export interface DateRange {
  /** First millisecond of the range. */
  readonly lo: number;
  /** Last millisecond of the range (inclusive). */
  readonly hi: number;
}

/** The lowest and highest values a range end may take (open-ended periods). */
export const MIN_DATE = -8_640_000_000_000_000;
export const MAX_DATE = 8_640_000_000_000_000;

const PATTERN =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** Parses a FHIR date/dateTime/instant (or a search value of that shape) into its range; null if malformed. */
export function parseDateRange(value: string): DateRange | null {
  const m = PATTERN.exec(value);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  const month = mo ? Number(mo) : undefined;
  const day = d ? Number(d) : undefined;
  if (month !== undefined && (month < 1 || month > 12)) return null;
  if (day !== undefined && (day < 1 || day > daysIn(year, month!))) return null;
  if (h !== undefined) {
    if (Number(h) > 23 || Number(mi) > 59 || (s !== undefined && Number(s) > 60)) return null;
  }
  const offset = tz && tz !== 'Z' ? (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) : 0;
  if (tz && tz !== 'Z' && (Number(tz.slice(1, 3)) > 14 || Number(tz.slice(4, 6)) > 59)) return null;
  if (month === undefined) return { lo: Date.UTC(year, 0, 1), hi: Date.UTC(year + 1, 0, 1) - 1 };
  if (day === undefined) return { lo: Date.UTC(year, month - 1, 1), hi: Date.UTC(year, month, 1) - 1 };
  if (h === undefined) return { lo: Date.UTC(year, month - 1, day), hi: Date.UTC(year, month - 1, day + 1) - 1 };
  const base = Date.UTC(year, month - 1, day, Number(h), Number(mi), s === undefined ? 0 : Math.min(Number(s), 59)) - offset * 60000;
  if (s === undefined) return { lo: base, hi: base + 60000 - 1 };
  if (frac === undefined) return { lo: base, hi: base + 999 };
  // Precision beyond the millisecond is kept as the containing millisecond.
  const ms = Number(frac.slice(0, 3).padEnd(3, '0'));
  if (frac.length >= 3) return { lo: base + ms, hi: base + ms };
  const width = 10 ** (3 - frac.length);
  return { lo: base + ms, hi: base + ms + width - 1 };
}

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** True when `value` is a complete instant (to the second, with a time zone), as `_since` requires. */
export function isInstant(value: string): boolean {
  return /T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value) && parseDateRange(value) !== null;
}

/** Formats epoch milliseconds as a FHIR instant in UTC with milliseconds. */
export function toInstant(ms: number): string {
  return new Date(ms).toISOString();
}
