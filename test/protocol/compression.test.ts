import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { decompress } from '../../protocol/compression';

// Python: base64.b64encode(zlib.compress(json.dumps([["é", 1], {}, None]).encode()))
const PY_ZLIB = 'eJyLjlaKKTUwSLVU0lEwjNVRqK7VUcgrzcmJBQBZWQdM';

test('decompress: kombu "application/x-gzip" is a zlib stream (Python zlib.compress output)', () => {
  const out = decompress(Buffer.from(PY_ZLIB, 'base64'), 'application/x-gzip');
  assert.equal(out.toString('utf8'), '[["\\u00e9", 1], {}, null]');
});

test('decompress: aliases gzip / zlib, case-insensitive, and a real gzip member', () => {
  const data = Buffer.from('[[1],{},null]');
  assert.deepEqual(decompress(zlib.deflateSync(data), 'gzip'), data);
  assert.deepEqual(decompress(zlib.deflateSync(data), 'ZLIB'), data);
  assert.deepEqual(decompress(zlib.gzipSync(data), 'application/x-gzip'), data);
});

test('decompress: brotli', () => {
  const data = Buffer.from('{"x": "brotli"}');
  assert.deepEqual(decompress(zlib.brotliCompressSync(data), 'application/x-brotli'), data);
  assert.deepEqual(decompress(zlib.brotliCompressSync(data), 'brotli'), data);
});

test('decompress: bz2, lzma and zstd are reported as unsupported', () => {
  assert.throws(() => decompress(Buffer.from('BZh9'), 'application/x-bz2'), {
    message: 'unsupported compression application/x-bz2 (bz2)',
  });
  assert.throws(() => decompress(Buffer.alloc(4), 'xz'), /unsupported compression xz \(lzma\)/);
  assert.throws(
    () => decompress(Buffer.alloc(4), 'application/zstd'),
    /unsupported compression application\/zstd \(zstd\)/,
  );
});

test('decompress: unknown codec and corrupt data throw with context', () => {
  assert.throws(
    () => decompress(Buffer.alloc(4), 'application/x-snappy'),
    /unknown compression "application\/x-snappy"/,
  );
  assert.throws(
    () => decompress(Buffer.from('not zlib at all'), 'application/x-gzip'),
    /cannot decompress application\/x-gzip body \(15 bytes\)/,
  );
});

test('decompress: output limit stops decompression bombs', () => {
  const bomb = zlib.deflateSync(Buffer.alloc(1024 * 1024));
  assert.throws(() => decompress(bomb, 'zlib', { maxOutputBytes: 1000 }), /output exceeds 1000 bytes/);
  assert.equal(decompress(bomb, 'zlib').length, 1024 * 1024);
});
