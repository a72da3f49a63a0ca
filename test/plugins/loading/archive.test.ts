import assert from 'node:assert/strict';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { describe, it } from 'node:test';
import { openArchive, sniffArchive } from '../../../src/plugins/loading/archive';
import { readPluginArchive } from '../../../src/plugins/loading/source';
import { makeArchive } from '../helpers';

// Multi-byte characters of 2, 3 and 4 bytes, long enough to cross any 16/64 KB chunk boundary many times.
const UNICODE = 'héllo wörld — 日本語テキスト 🎉🚀 '.repeat(5000);
const PLUGIN_JSON = JSON.stringify({ name: 'Unicode plugin', main: 'index.ts', config: [{ key: 'a' }] });
const INDEX_TS = `export const text: string = ${JSON.stringify(UNICODE)}\nexport function processEvent(e: any) { return e }\n`;

describe('archive readers', () => {
  for (const kind of ['zip', 'tgz'] as const) {
    it(`${kind}: GitHub layout (one top-level folder), UTF-8 intact`, () => {
      const file = makeArchive(kind, {
        'posthog-unicode-plugin-0123abc/plugin.json': PLUGIN_JSON,
        'posthog-unicode-plugin-0123abc/index.ts': INDEX_TS,
        'posthog-unicode-plugin-0123abc/README.md': '# readme',
      });
      const buf = fs.readFileSync(file);
      assert.equal(sniffArchive(buf), kind);
      const archive = openArchive(buf);
      assert.deepEqual(archive.paths().sort(), [
        'posthog-unicode-plugin-0123abc/README.md',
        'posthog-unicode-plugin-0123abc/index.ts',
        'posthog-unicode-plugin-0123abc/plugin.json',
      ]);
      const src = readPluginArchive(buf);
      assert.equal(src.name, 'Unicode plugin');
      assert.equal(src.main, 'index.ts');
      assert.equal(src.code, INDEX_TS);
      assert.ok(!src.code.includes('\uFFFD'));
      assert.deepEqual(src.pluginJson?.config, [{ key: 'a' }]);
    });

    it(`${kind}: files at the root`, () => {
      const buf = fs.readFileSync(
        makeArchive(kind, {
          'plugin.json': JSON.stringify({ name: 'root' }),
          'index.js': 'exports.processEvent = e => e',
        }),
      );
      const src = readPluginArchive(buf);
      assert.equal(src.main, 'index.js');
      assert.equal(src.code, 'exports.processEvent = e => e');
    });

    it(`${kind}: no plugin.json → clear error`, () => {
      const buf = fs.readFileSync(makeArchive(kind, { 'top/index.js': 'x' }));
      assert.throws(() => readPluginArchive(buf), /archive has no plugin\.json/);
    });

    it(`${kind}: main missing → clear error`, () => {
      const buf = fs.readFileSync(
        makeArchive(kind, { 'top/plugin.json': JSON.stringify({ main: 'index.ts' }), 'top/other.ts': 'x' }),
      );
      assert.throws(() => readPluginArchive(buf), /main file index\.ts not found in archive/);
    });
  }

  it('zip with stored (uncompressed) entries', () => {
    const buf = fs.readFileSync(
      makeArchive('zip', { 'a/plugin.json': '{}', 'a/index.js': 'stored ✓' }, undefined, { stored: true }),
    );
    assert.equal(readPluginArchive(buf).code, 'stored ✓');
  });

  it('tar: long paths (pax) and default main index.ts when there is no index.js', () => {
    const deep = 'very-long-directory-name-'.repeat(6);
    const buf = fs.readFileSync(
      makeArchive('tgz', { [`${deep}/plugin.json`]: '{"name":"deep"}', [`${deep}/index.ts`]: 'export const x = 1' }),
    );
    const src = readPluginArchive(buf);
    assert.equal(src.main, 'index.ts');
    assert.equal(src.code, 'export const x = 1');
  });

  it('plain (uncompressed) tar is accepted too', () => {
    const tgz = fs.readFileSync(makeArchive('tgz', { 'p/plugin.json': '{}', 'p/index.js': 'plain' }));
    const tar = zlib.gunzipSync(tgz);
    assert.equal(sniffArchive(tar), 'tar');
    assert.equal(readPluginArchive(tar).code, 'plain');
  });

  it('rejects garbage and truncated archives with readable errors', () => {
    assert.throws(() => readPluginArchive(Buffer.from('definitely not an archive')), /unknown archive format/);
    const zip = fs.readFileSync(makeArchive('zip', { 'p/plugin.json': '{}', 'p/index.js': 'x'.repeat(1000) }));
    assert.throws(
      () => readPluginArchive(zip.subarray(0, zip.length - 30)),
      /cannot read archive: corrupt zip archive/,
    );
    const tgz = fs.readFileSync(makeArchive('tgz', { 'p/plugin.json': '{}', 'p/index.js': 'x' }));
    assert.throws(() => readPluginArchive(tgz.subarray(0, 20)), /cannot read archive: cannot decompress gzip/);
  });

  it('zip: an entry must hold exactly the size its header declares (a bomb that lies stops there)', () => {
    const zip = fs.readFileSync(makeArchive('zip', { 'p/plugin.json': '{}', 'p/index.js': 'x'.repeat(100_000) }));
    const declare = (size: number): Buffer => {
      const b = Buffer.from(zip);
      // The name's second occurrence is in the central directory, the only size the reader trusts.
      const cdName = b.indexOf('p/index.js', b.indexOf('p/index.js') + 1);
      b.writeUInt32LE(size, cdName - 46 + 24);
      return b;
    };
    assert.equal(readPluginArchive(declare(100_000)).code.length, 100_000);
    assert.throws(
      () => readPluginArchive(declare(100)),
      /cannot read index\.js from archive: cannot inflate p\/index\.js: .*100 bytes/,
    );
    assert.throws(() => readPluginArchive(declare(200_000)), /p\/index\.js holds 100000 bytes, its header says 200000/);
  });

  it('several top-level plugin.json files are ambiguous', () => {
    const buf = fs.readFileSync(makeArchive('zip', { 'a/plugin.json': '{}', 'b/plugin.json': '{}', 'a/index.js': '' }));
    assert.throws(() => readPluginArchive(buf), /several plugin\.json/);
  });
});
