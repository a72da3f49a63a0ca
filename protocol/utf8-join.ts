/**
 * The UTF-8 bytes of several strings joined, written straight into one Buffer. `Buffer.from(a + b + …)` first
 * flattens the concatenation into one more copy of the whole text on the V8 heap; for the messages published per
 * event (a ~1.5 KB body, a ~3.7 KB envelope) that copy is a large part of what the event path allocates.
 * Each part is encoded on its own, so a surrogate pair split between two parts would become two replacement
 * characters: callers cut only at JSON punctuation.
 */
export function utf8Join(parts: readonly string[]): Buffer {
  let size = 0;
  for (const part of parts) size += Buffer.byteLength(part, 'utf8');
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const part of parts) at += out.write(part, at, 'utf8');
  // byteLength and write agree on every string (lone surrogates included); a gap would publish stale memory.
  if (at !== size) throw new Error(`utf8Join: wrote ${at} of ${size} bytes`);
  return out;
}
