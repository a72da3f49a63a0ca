import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { closeHarness, fixture, harness, Harness, makeArchive, makeEvent, props } from './helpers';

describe('export styles and sources through PluginManager', () => {
  let h: Harness;
  const TS_SOURCE = `export function processEvent(event: { properties: Record<string, unknown> }): typeof event {
    event.properties.style = 'source column'
    return event
  }`;
  const archiveFiles = {
    'plugin-repo-abc123/plugin.json': JSON.stringify({ name: 'archived', main: 'index.ts' }),
    'plugin-repo-abc123/index.ts':
      "export const processEvent = (e: any) => ({ ...e, properties: { ...e.properties, style: 'archive ✓' } })",
  };

  before(async () => {
    h = await harness([
      { url: 'file:add-property', name: 'add-property', teamId: 1 },
      { url: 'file:drop-events', name: 'drop-events', teamId: 2, config: { eventToDrop: '$drop_me' } },
      { url: 'file:typescript-esm.ts', name: 'typescript-esm', teamId: 3, config: { tag: 'ts' } },
      { url: 'file:global-functions.js', name: 'global-functions', teamId: 4 },
      { url: 'file:module-exports.js', name: 'module-exports', teamId: 5 },
      { url: 'file:exports-dot.js', name: 'exports-dot', teamId: 6 },
      { url: 'file:export-default.ts', name: 'export-default', teamId: 7 },
      { url: 'file:process-event-batch.js', name: 'batch-only', teamId: 8 },
      { url: 'file:no-exports.js', name: 'no-exports', teamId: 9 },
      { source: TS_SOURCE, name: 'source plugin', teamId: 10 },
      {
        archive: fs.readFileSync(makeArchive('zip', archiveFiles)),
        url: 'https://github.com/x/archived',
        name: 'archived zip',
        teamId: 11,
      },
      {
        archive: fs.readFileSync(makeArchive('tgz', archiveFiles)),
        url: 'https://github.com/x/archived',
        name: 'archived tgz',
        teamId: 12,
      },
      {
        url: `file:${fixture('add-property')}`,
        name: 'absolute url',
        teamId: 13,
        config: { propertyName: 'abs', propertyValue: 'yes' },
      },
    ]);
  });
  after(() => closeHarness(h));

  it('loads every config', () => {
    for (let team = 1; team <= 13; team++) {
      assert.deepEqual(
        h.manager.configsFor(team).map((c) => c.state),
        ['ready'],
        `team ${team}`,
      );
    }
    assert.deepEqual(h.manager.configsFor(99), []);
  });

  it('folder plugin with plugin.json defaults', async () => {
    const [e] = await h.manager.runChain(1, [makeEvent('$pageview')]);
    assert.equal(props(e).processed_by, 'posthog-plugins');
  });

  it('folder TS plugin drops by config', async () => {
    const r = await h.manager.runChain(2, [makeEvent('a'), makeEvent('$drop_me'), makeEvent('b')]);
    assert.deepEqual(
      r.map((e) => (e ? e.event : null)),
      ['a', null, 'b'],
    );
  });

  it('TypeScript ESM file with async processEvent', async () => {
    const [e] = await h.manager.runChain(3, [makeEvent('x')]);
    assert.deepEqual(props(e).trail, ['ts']);
  });

  it('global functions, module.exports, exports.x, export default', async () => {
    const [g] = await h.manager.runChain(4, [makeEvent('x')]);
    assert.equal(props(g).style, 'global');
    assert.equal(props(g).greeting, 'hello from globals');
    assert.equal(props((await h.manager.runChain(5, [makeEvent('x')]))[0]).style, 'module.exports');
    assert.equal(props((await h.manager.runChain(6, [makeEvent('x')]))[0]).style, 'exports');
    assert.equal(props((await h.manager.runChain(7, [makeEvent('x')]))[0]).style, 'export default');
  });

  it('processEventBatch only: called once per batch; a shorter result maps back by uuid, the missing event is dropped', async () => {
    const r = await h.manager.runChain(8, [makeEvent('a'), makeEvent('$drop_me'), makeEvent('c')]);
    assert.equal(r[1], null);
    assert.equal(props(r[0]).style, 'batch');
    assert.equal(props(r[0]).batch_size, 3);
    assert.equal(props(r[2]).style, 'batch');
    assert.equal(r[2]!.event, 'c');
  });

  it('a plugin with neither processEvent nor processEventBatch passes events through', async () => {
    const input = [makeEvent('a'), makeEvent('b')];
    const r = await h.manager.runChain(9, input);
    assert.deepEqual(r, input);
  });

  it('source column, zip and tgz archive bytes, absolute file: url', async () => {
    assert.equal(props((await h.manager.runChain(10, [makeEvent('x')]))[0]).style, 'source column');
    assert.equal(props((await h.manager.runChain(11, [makeEvent('x')]))[0]).style, 'archive ✓');
    assert.equal(props((await h.manager.runChain(12, [makeEvent('x')]))[0]).style, 'archive ✓');
    assert.equal(props((await h.manager.runChain(13, [makeEvent('x')]))[0]).abs, 'yes');
  });
});
