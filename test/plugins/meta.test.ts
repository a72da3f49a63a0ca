import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { JsonObject } from '../../protocol/types';
import { closeHarness, Harness, harness, makeEvent, props } from './helpers';

describe('meta, console and what plugin code can reach', () => {
  let h: Harness;
  const ATTACHMENT = JSON.stringify({ key: 'välue ✓', list: [1, 2, 3] });

  before(async () => {
    h = await harness([
      { url: 'file:meta-probe.ts', name: 'meta probe', teamId: 1, config: { apiKey: 'secret', number: '42' } },
    ]);
    await h.store.addAttachment({
      pluginConfigId: h.ids[0].configId,
      teamId: 1,
      key: 'data',
      contentType: 'application/json',
      fileName: 'data.json',
      contents: Buffer.from(ATTACHMENT, 'utf8'),
    });
    await h.manager.reload(); // attachments changed → new isolate
  });
  after(() => closeHarness(h));

  it('setupPlugin console output was logged at load', () => {
    // logged during before(): the reload created a new isolate
    assert.ok(
      h.logs.some(
        (l) => l.source === 'console' && l.message === 'setup {"apiKey":"secret","number":"42"} [1,2] null undefined',
      ),
    );
  });

  it('meta.config and meta.attachments (Buffer-like contents)', async () => {
    const [e] = await h.manager.runChain(1, [makeEvent('x')]);
    const probe = props(e).probe as JsonObject;
    assert.deepEqual(probe.config, { apiKey: 'secret', number: '42' });
    assert.deepEqual(probe.attachmentKeys, ['data']);
    assert.equal(probe.contentType, 'application/json');
    assert.equal(probe.fileName, 'data.json');
    assert.equal(probe.text, ATTACHMENT);
    assert.equal(probe.utf8, ATTACHMENT);
    assert.equal(probe.base64, Buffer.from(ATTACHMENT).toString('base64'));
    assert.equal(probe.hex, Buffer.from(ATTACHMENT).toString('hex'));
    assert.deepEqual(probe.parsed, JSON.parse(ATTACHMENT));
    assert.equal(probe.length, Buffer.byteLength(ATTACHMENT));
  });

  it('meta.global survives across calls; setupPlugin ran once', async () => {
    const first = props((await h.manager.runChain(1, [makeEvent('x'), makeEvent('y')]))[1]).probe as JsonObject;
    const second = props((await h.manager.runChain(1, [makeEvent('z')]))[0]).probe as JsonObject;
    assert.equal(second.seen, (first.seen as number) + 1);
    assert.equal(second.setupCalls, 1);
  });

  it('no isolated-vm object is reachable from globals; no require/process; fetch is the bridge shim', async () => {
    const probe = props((await h.manager.runChain(1, [makeEvent('x')]))[0]).probe as JsonObject;
    assert.deepEqual(probe.suspicious, []);
    assert.equal(probe.typeofRequire, 'function'); // the throwing stub
    assert.equal(probe.typeofFetch, 'function'); // plain function from the guest script (bridge), not a Callback
    assert.equal(probe.typeofProcess, 'undefined');
    const globals = probe.globals as string[];
    for (const g of globals)
      assert.ok(
        [
          'console',
          'fetch',
          'posthog',
          'exports',
          'module',
          'require',
          'globalThis',
          'undefined',
          'eval',
          'isFinite',
          'isNaN',
          'parseFloat',
          'parseInt',
          'decodeURI',
          'decodeURIComponent',
          'encodeURI',
          'encodeURIComponent',
          'escape',
          'unescape',
          'setupPlugin',
          'processEvent',
          '__defProp',
          '__getOwnPropDesc',
          '__getOwnPropNames',
          '__hasOwnProp',
          '__export',
          '__copyProps',
          '__toCommonJS',
          'meta_probe_exports',
        ].includes(g) ||
          g.startsWith('__') ||
          g.endsWith('_exports'),
        `unexpected global ${g}`,
      );
  });

  it('console.* goes to the logger, tagged, formatted in the isolate and truncated', async () => {
    h.logs.length = 0;
    await h.manager.runChain(1, [makeEvent('$console')]);
    await new Promise((r) => setImmediate(r)); // ignored callbacks are delivered asynchronously
    const lines = h.logs.filter((l) => l.source === 'console');
    const tag = { pluginConfigId: h.ids[0].configId, pluginId: h.ids[0].pluginId, teamId: 1, plugin: 'meta probe' };
    for (const l of lines) for (const [k, v] of Object.entries(tag)) assert.equal(l[k], v, `log tag ${k}`);
    const byLevel = (lvl: string): string[] => lines.filter((l) => l.level === lvl).map((l) => l.message);
    assert.ok(byLevel('info').includes('info line {"nested":{"a":1}}'));
    assert.ok(byLevel('warn').includes('warn line'));
    assert.match(byLevel('error')[0], /^Error: logged error\n\s+at /);
    assert.ok(byLevel('debug').includes('debug line'));
    const long = byLevel('info').find((m) => m.startsWith('xxxx'));
    assert.ok(long && long.length < 4200 && /truncated 5904 chars/.test(long), 'long line truncated to 4 KB');
  });
});
