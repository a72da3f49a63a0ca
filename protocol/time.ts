/**
 * ISO-8601 timestamps as Celery writes and reads them (eta / expires headers).
 */

const ISO_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?(Z|z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?$/;

export type NaiveZone = 'utc' | 'local';

/**
 * Parses an ISO-8601 date-time: `YYYY-MM-DD`, optionally `[T ]HH:MM[:SS[.fraction]]`, optionally `Z` or a
 * `±HH[:MM[:SS]]` offset (Python's isoformat() writes seconds in the offset for odd zones). A string without
 * offset is "naive": Celery reads it in the app timezone, UTC by default (`naive` = 'utc'); 'local' uses this
 * process's timezone (v1 messages with `utc: false`). Sub-millisecond digits are truncated (Date has ms).
 * Throws an Error describing what is wrong.
 */
export function parseIsoDateTime(text: string, naive: NaiveZone = 'utc'): Date {
  const m = ISO_RE.exec(text.trim());
  if (m === null) throw new Error(`not an ISO-8601 date-time: ${JSON.stringify(text)}`);
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = m[4] === undefined ? 0 : Number(m[4]);
  const minute = m[5] === undefined ? 0 : Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const ms = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
  if (year < 1) throw new Error(`year out of range in ${JSON.stringify(text)}`);
  if (month < 1 || month > 12) throw new Error(`month out of range in ${JSON.stringify(text)}`);
  if (day < 1 || day > daysInMonth(year, month)) throw new Error(`day out of range in ${JSON.stringify(text)}`);
  if (hour > 23 || minute > 59 || second > 59) throw new Error(`time out of range in ${JSON.stringify(text)}`);

  const zone = m[8];
  if (zone === undefined && naive === 'local') {
    const d = new Date(2000, 0, 1, 0, 0, 0, 0);
    d.setFullYear(year, month - 1, day); // setFullYear: years 1..99 are not shifted to 19xx
    d.setHours(hour, minute, second, ms);
    return d;
  }
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, ms);
  let t = d.getTime();
  if (zone !== undefined && zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const parts = /^[+-](\d{2}):?(\d{2})?(?::?(\d{2})(?:\.(\d{1,6}))?)?$/.exec(zone);
    if (parts === null) throw new Error(`invalid UTC offset in ${JSON.stringify(text)}`);
    const oh = Number(parts[1]);
    const om = parts[2] === undefined ? 0 : Number(parts[2]);
    const os = parts[3] === undefined ? 0 : Number(parts[3]);
    const oms = parts[4] === undefined ? 0 : Number(parts[4].slice(0, 3).padEnd(3, '0'));
    if (oh > 23 || om > 59 || os > 59) throw new Error(`UTC offset out of range in ${JSON.stringify(text)}`);
    // Local time = UTC + offset, so UTC = local - offset.
    t -= sign * (((oh * 60 + om) * 60 + os) * 1000 + oms);
  }
  if (!Number.isFinite(t)) throw new Error(`date-time out of range: ${JSON.stringify(text)}`);
  return new Date(t);
}

function daysInMonth(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
}

/**
 * What Python's `datetime.isoformat()` prints for an aware UTC datetime: `2026-11-25T11:38:10.197000+00:00`,
 * without fraction when the microseconds are 0. This is the form Celery itself puts in eta/expires.
 */
export function formatPythonUtcIso(date: Date): string {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new Error('cannot format an invalid Date');
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ (or ±YYYYYY for far years)
  const year = date.getUTCFullYear();
  if (year < 1 || year > 9999) throw new Error(`year ${year} is outside Python's datetime range`);
  const base = iso.slice(0, 19);
  const ms = date.getUTCMilliseconds();
  const frac = ms === 0 ? '' : `.${String(ms).padStart(3, '0')}000`;
  return `${base}${frac}+00:00`;
}
