import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  configSchemaOf,
  readPluginPath,
  readPluginRowSource,
  resolveFileUrl,
} from '../../../src/plugins/loading/source';
import { transpilePlugin } from '../../../src/plugins/loading/transpile';
import type { PluginRow } from '../../../src/store/types';
import { FIXTURES, fixture, makeArchive, tempDir } from '../helpers';

function row(p: Partial<PluginRow>): PluginRow {
  return {
    id: 1,
    name: 'row plugin',
    pluginType: 'custom',
    url: null,
    archive: null,
    source: null,
    sourceFiles: null,
    configSchema: {},
    updatedAt: null,
    ...p,
  };
}

describe('plugin sources', () => {
  it('folder with plugin.json (main index.js, config as array)', () => {
    const src = readPluginPath(fixture('add-property'));
    assert.equal(src.name, 'Add property');
    assert.equal(src.main, 'index.js');
    assert.match(src.code, /module\.exports/);
    const schema = configSchemaOf(src.pluginJson);
    assert.ok(Array.isArray(schema));
    assert.equal((schema as Array<{ key: string }>)[0].key, 'propertyName');
  });

  it('folder with plugin.json (main index.ts, config as map)', () => {
    const src = readPluginPath(fixture('drop-events'));
    assert.equal(src.main, 'index.ts');
    assert.deepEqual(Object.keys(configSchemaOf(src.pluginJson)), ['eventToDrop']);
  });

  it('folder without plugin.json falls back to index.js / index.ts; missing main is a clear error', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'index.ts'), 'export const a = 1');
    assert.equal(readPluginPath(dir).main, 'index.ts');
    const empty = tempDir();
    assert.throws(() => readPluginPath(empty), /main file index\.js or index\.ts not found/);
    const escape = tempDir();
    fs.writeFileSync(path.join(escape, 'plugin.json'), JSON.stringify({ main: '../../etc/passwd' }));
    assert.throws(() => readPluginPath(escape), /outside the plugin folder/);
    const bad = tempDir();
    fs.writeFileSync(path.join(bad, 'plugin.json'), '{ not json');
    assert.throws(() => readPluginPath(bad), /invalid plugin\.json/);
  });

  it('single .js and .ts files', () => {
    const js = readPluginPath(fixture('module-exports.js'));
    assert.equal(js.main, 'module-exports.js');
    assert.equal(js.name, 'module-exports');
    assert.equal(js.pluginJson, null);
    assert.equal(readPluginPath(fixture('typescript-esm.ts')).main, 'typescript-esm.ts');
  });

  it('.zip and .tgz files on disk', () => {
    const files = {
      'repo-main/plugin.json': JSON.stringify({ name: 'zipped', main: 'src/main.js' }),
      'repo-main/src/main.js': 'exports.processEvent = e => e',
    };
    for (const kind of ['zip', 'tgz'] as const) {
      const src = readPluginPath(makeArchive(kind, files));
      assert.equal(src.name, 'zipped');
      assert.equal(src.main, 'src/main.js');
      assert.equal(src.code, 'exports.processEvent = e => e');
    }
  });

  it('missing path and unknown file types', () => {
    assert.throws(() => readPluginPath('/nonexistent/plugin'), /plugin path not found/);
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'hello');
    assert.throws(() => readPluginPath(path.join(dir, 'notes.txt')), /don't know how to load/);
  });

  it('rows: file: url relative to baseDir, absolute, and file:// forms', () => {
    const base = path.dirname(FIXTURES);
    assert.equal(resolveFileUrl('file:plugins/add-property', base), fixture('add-property'));
    assert.equal(resolveFileUrl(`file://${fixture('add-property')}`, '/elsewhere'), fixture('add-property'));
    const rel = readPluginRowSource(row({ url: 'file:plugins/drop-events', pluginType: 'local' }), { baseDir: base });
    assert.equal(rel.main, 'index.ts');
    assert.equal(rel.name, 'row plugin'); // the row's name wins
    const abs = readPluginRowSource(row({ url: `file:${fixture('trail.js')}` }), { baseDir: '/nowhere' });
    assert.match(abs.code, /config\.tag/);
    assert.throws(
      () => readPluginRowSource(row({ url: 'file:missing-plugin' }), { baseDir: base }),
      /plugin path not found/,
    );
  });

  it('rows: archive bytes (zip and tgz sniffed), source column, un-downloaded', () => {
    const files = {
      'x/plugin.json': '{"main":"index.ts"}',
      'x/index.ts': 'export function processEvent(e: any) { return e }',
    };
    for (const kind of ['zip', 'tgz'] as const) {
      const archive = fs.readFileSync(makeArchive(kind, files));
      const src = readPluginRowSource(row({ archive, url: 'https://github.com/x/y' }), { baseDir: '/' });
      assert.equal(src.main, 'index.ts');
      assert.match(src.origin, new RegExp(kind));
    }
    const source = readPluginRowSource(
      row({ pluginType: 'source', source: 'export function processEvent(e) { return e }' }),
      { baseDir: '/' },
    );
    assert.equal(source.main, 'index.ts');
    const files2 = readPluginRowSource(
      row({
        pluginType: 'source',
        sourceFiles: { 'plugin.json': '{"main":"main.ts"}', 'main.ts': 'export const y = 2' },
      }),
      { baseDir: '/' },
    );
    assert.equal(files2.code, 'export const y = 2');
    assert.throws(
      () => readPluginRowSource(row({ url: 'https://github.com/PostHog/x' }), { baseDir: '/' }),
      /un-downloaded remote plugin row plugin \(https:\/\/github\.com\/PostHog\/x\)/,
    );
    assert.throws(() => readPluginRowSource(row({ pluginType: 'source' }), { baseDir: '/' }), /has no source/);
    assert.throws(
      () => readPluginRowSource(row({ archive: Buffer.from('zzzz') }), { baseDir: '/' }),
      /cannot read archive of plugin row plugin/,
    );
  });
});

describe('transpile', () => {
  it('TypeScript + ESM → CommonJS; type-only imports vanish', () => {
    const t = transpilePlugin(fs.readFileSync(fixture('typescript-esm.ts'), 'utf8'), 'typescript-esm.ts');
    assert.doesNotMatch(t.code, /^\s*import /m);
    assert.doesNotMatch(t.code, /^export /m);
    assert.match(t.code, /module\.exports/);
    assert.deepEqual(t.imports, []);
    // cached by content
    assert.equal(transpilePlugin(fs.readFileSync(fixture('typescript-esm.ts'), 'utf8'), 'typescript-esm.ts'), t);
  });

  it('plain scripts run as written (top-level functions, comments and line numbers kept)', () => {
    const src = fs.readFileSync(fixture('global-functions.js'), 'utf8');
    const t = transpilePlugin(src, 'global-functions.js');
    assert.equal(t.code, src);
    const esm = transpilePlugin('// comment\nexport const processEvent = (e) => e\n', 'esm.js');
    assert.match(esm.code, /module\.exports/);
  });

  it('lists required and imported modules', () => {
    assert.deepEqual(transpilePlugin(fs.readFileSync(fixture('hostile/requires-fs.js'), 'utf8'), 'index.js').imports, [
      'fs',
    ]);
    assert.deepEqual(
      transpilePlugin(fs.readFileSync(fixture('hostile/imports-module.ts'), 'utf8'), 'index.ts').imports,
      ['crypto'],
    );
    assert.deepEqual(transpilePlugin('const s = \'require("fs")\'; export const x = s', 'a.ts').imports, []);
  });

  it('syntax errors name file, line and column', () => {
    assert.throws(
      () => transpilePlugin(fs.readFileSync(fixture('hostile/syntax-error.js'), 'utf8'), 'index.js'),
      /cannot compile index\.js:2:\d+: /,
    );
  });
});
