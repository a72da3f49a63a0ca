/**
 * Body decompression for kombu's `compression` header (celery `compression=` / `task_compression`).
 *
 * kombu compresses the serialized body and records the codec's MIME type (or an alias) in the message header
 * `compression`; content_type stays the serializer's. Only codecs Node ships natively are supported; the
 * others fail loudly so the message is set aside with a reason rather than misread.
 */
import * as zlib from 'node:zlib';

export interface DecompressOptions {
  /**
   * Upper bound for the decompressed size, so a small malicious message cannot inflate to gigabytes
   * (a "zip bomb") and take the worker down. Default 64 MiB, far above any real event batch.
   */
  maxOutputBytes?: number;
}

export const DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024;

type Codec = 'zlib' | 'brotli' | 'bz2' | 'lzma' | 'zstd';

/** kombu's registered codecs: canonical MIME type and aliases (compared case-insensitively). */
const CODECS: Record<string, Codec> = {
  // Despite the name, kombu's "application/x-gzip" is a zlib stream (RFC 1950, starts 78 9c): zlib.compress.
  'application/x-gzip': 'zlib',
  gzip: 'zlib',
  zlib: 'zlib',
  'application/x-brotli': 'brotli',
  brotli: 'brotli',
  'application/x-bz2': 'bz2',
  bzip2: 'bz2',
  bzip: 'bz2',
  'application/x-lzma': 'lzma',
  lzma: 'lzma',
  xz: 'lzma',
  'application/zstd': 'zstd',
  zstd: 'zstd',
  zstandard: 'zstd',
};

/** Returns the decompressed body. Throws an Error naming the codec on unknown/unsupported codecs or bad data. */
export function decompress(body: Buffer, mime: string, opts: DecompressOptions = {}): Buffer {
  const key = mime.trim().toLowerCase();
  const codec = CODECS[key];
  const maxOutputLength = opts.maxOutputBytes ?? DEFAULT_MAX_DECOMPRESSED_BYTES;
  if (codec === undefined) {
    throw new Error(`unknown compression ${JSON.stringify(mime)}`);
  }
  try {
    switch (codec) {
      case 'zlib':
        // A real gzip member (1f 8b) is not what kombu writes, but accepting it costs nothing.
        if (body.length >= 2 && body[0] === 0x1f && body[1] === 0x8b) {
          return zlib.gunzipSync(body, { maxOutputLength });
        }
        return zlib.inflateSync(body, { maxOutputLength });
      case 'brotli':
        return zlib.brotliDecompressSync(body, { maxOutputLength });
      case 'bz2':
      case 'lzma':
      case 'zstd':
        // Node 20 has no bz2/xz/zstd decoder and protocol/ must stay dependency-free.
        throw new UnsupportedCompressionError(`unsupported compression ${mime} (${codec})`);
    }
  } catch (err) {
    if (err instanceof UnsupportedCompressionError) throw err;
    const e = err as NodeJS.ErrnoException;
    const detail = e.code === 'ERR_BUFFER_TOO_LARGE' ? `output exceeds ${maxOutputLength} bytes` : e.message;
    throw new Error(`cannot decompress ${mime} body (${body.length} bytes): ${detail}`);
  }
}

class UnsupportedCompressionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedCompressionError';
  }
}
