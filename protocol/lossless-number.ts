/**
 * A JSON number token kept as written, where JS could not carry it back the same (see lossless-numbers.ts for
 * when and why). Immutable. Its own module, without imports: the JSON types (types.ts) include it, and the
 * parser that makes it returns those types.
 */
export class LosslessNumber {
  /** What a plugin sees (see toJSON), fixed at construction. */
  private readonly seen: number | null;

  /** `text` is a JSON number token, or `Infinity`, `-Infinity`, `NaN` (Python's spellings). */
  constructor(readonly text: string) {
    const n = Number(text);
    // A double as JSON carries it: -0 is written "0"; inf and nan (and 1e400, inf once parsed) become null.
    this.seen = Number.isFinite(n) ? n + 0 : null;
    Object.freeze(this);
  }

  /** The value as a JS number (NaN/±Infinity included); may have lost digits. */
  get value(): number {
    return Number(this.text);
  }

  /** True when Python reads the token as an int (no fraction, no exponent, not inf/nan). */
  get isInteger(): boolean {
    return /^-?\d+$/.test(this.text);
  }

  /** What JSON.stringify writes for it, i.e. what a plugin receives: the nearest double, or null for inf/nan. */
  toJSON(): number | null {
    return this.seen;
  }
}
