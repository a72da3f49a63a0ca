import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildAttachments } from '../../../../src/plugins/vm/guest/attachments';
import { createBridgeClient } from '../../../../src/plugins/vm/guest/bridge-client';
import { apiError, FetchError, fetchFail } from '../../../../src/plugins/vm/guest/errors';
import { createFetch, fetchRequestJson, Response } from '../../../../src/plugins/vm/guest/fetch';
import { Headers } from '../../../../src/plugins/vm/guest/headers';
import { createMetaApis } from '../../../../src/plugins/vm/guest/meta-apis';

/** The guest's bridge client, fetch, meta APIs and attachments, against a fake host (no isolate). */

interface Sent {
  id: number;
  op: string;
  args: unknown;
}

function fakeHost(ops: Record<string, { maxArgBytes: number; maxPending: number }>) {
  const sent: Sent[] = [];
  const bridge = createBridgeClient((id, op, json) => void sent.push({ id, op, args: JSON.parse(json) }), ops);
  return { sent, bridge };
}

const LIMITS = { maxArgBytes: 1000, maxPending: 2 };

describe('guest bridge client', () => {
  test('a call posts (id, op, json) and resolves with wrap(result) when settled', async () => {
    const { sent, bridge } = fakeHost({ echo: LIMITS });
    const p = bridge.hostCall('echo', '{"x":1}', (v) => ({ got: v }), fetchFail);
    assert.deepEqual(sent, [{ id: 1, op: 'echo', args: { x: 1 } }]);
    bridge.settle(1, true, '[1,2]');
    assert.deepEqual(await p, { got: [1, 2] });
    bridge.settle(1, true, '3'); // settled already: ignored
  });

  test('limits: request size and requests pending per op, checked before posting', async () => {
    const { sent, bridge } = fakeHost({ echo: LIMITS });
    await assert.rejects(
      bridge.hostCall('echo', 'x'.repeat(1001), (v) => v, fetchFail),
      { name: 'FetchError', type: 'max-size', message: 'echo request too large: 1001 bytes, limit 1000' },
    );
    const a = bridge.hostCall('echo', '1', (v) => v, fetchFail);
    const b = bridge.hostCall('echo', '2', (v) => v, fetchFail);
    await assert.rejects(
      bridge.hostCall('echo', '3', (v) => v, fetchFail),
      { type: 'too-many-requests', message: 'too many echo requests at once (limit 2 per plugin config)' },
    );
    assert.equal(sent.length, 2);
    bridge.settle(sent[0].id, true, '"a"');
    assert.equal(await a, 'a');
    const c = bridge.hostCall('echo', '4', (v) => v, fetchFail); // a slot is free again
    bridge.settle(sent[1].id, true, '"b"');
    bridge.settle(sent[2].id, true, '"c"');
    assert.deepEqual([await b, await c], ['b', 'c']);
  });

  test('failures: the host error (TypeError or the API error with type and code), a malformed reply, a throwing wrap', async () => {
    const { sent, bridge } = fakeHost({ op: { maxArgBytes: 100, maxPending: 10 } });
    const calls = [0, 1, 2, 3].map(() => bridge.hostCall('op', '{}', () => assert.fail('wrap ran'), fetchFail));
    const wrapThrows = bridge.hostCall(
      'op',
      '{}',
      () => {
        throw new RangeError('wrap');
      },
      fetchFail,
    );
    bridge.settle(sent[0].id, false, JSON.stringify({ name: 'TypeError', message: 'bad args' }));
    bridge.settle(
      sent[1].id,
      false,
      JSON.stringify({ name: 'FetchError', message: 'refused', type: 'system', code: 'ECONNREFUSED' }),
    );
    bridge.settle(sent[2].id, false, 'not json');
    bridge.settle(sent[3].id, false, 'null');
    bridge.settle(sent[4].id, true, '1');
    await assert.rejects(calls[0], (e: Error) => e instanceof TypeError && e.message === 'bad args');
    await assert.rejects(calls[1], (e: FetchError & { code?: string; errno?: string; type?: string }) => {
      assert.ok(e instanceof FetchError);
      assert.deepEqual(
        [e.name, e.message, e.type, e.code, e.errno],
        ['FetchError', 'refused', 'system', 'ECONNREFUSED', 'ECONNREFUSED'],
      );
      return true;
    });
    await assert.rejects(calls[2], { message: 'malformed reply from the host', type: 'system' });
    await assert.rejects(calls[3], { message: 'host call failed', type: 'system' });
    await assert.rejects(wrapThrows, RangeError);
  });

  test('a host callback that throws rejects the call and frees its slot', async () => {
    const bridge = createBridgeClient(
      () => {
        throw new Error('gone');
      },
      { op: { maxArgBytes: 100, maxPending: 1 } },
    );
    await assert.rejects(
      bridge.hostCall('op', '{}', (v) => v, fetchFail),
      { message: 'op failed: the host call could not be made', type: 'system' },
    );
    await assert.rejects(
      bridge.hostCall('op', '{}', (v) => v, fetchFail),
      { type: 'system' },
      'not too-many-requests',
    );
  });
});

describe('guest fetch', () => {
  test('the request JSON: URL from a string, a Request-like or a URL; headers in every form; bytes as latin1', () => {
    assert.deepEqual(JSON.parse(fetchRequestJson('http://a/', undefined)), {
      url: 'http://a/',
      method: 'GET',
      headers: [],
      body: null,
      bodyEncoding: 'utf8',
      redirect: 'follow',
      timeout: null,
      follow: null,
      compress: true,
    });
    const r = JSON.parse(
      fetchRequestJson(new URL('http://b/x'), {
        method: 'post',
        headers: { 'X-A': ['1', '2'], 'x-b': 3 },
        body: new Uint8Array([0, 255]),
        redirect: 'manual',
        timeout: 1500.7,
        follow: 2,
        compress: false,
      }),
    );
    assert.deepEqual(r, {
      url: 'http://b/x',
      method: 'post',
      headers: [
        ['X-A', '1'],
        ['X-A', '2'],
        ['x-b', '3'],
      ],
      body: '\u0000\u00ff',
      bodyEncoding: 'latin1',
      redirect: 'manual',
      timeout: 1500,
      follow: 2,
      compress: false,
    });
    assert.deepEqual(
      JSON.parse(fetchRequestJson({ url: 'http://c/' }, { headers: [['k', 'v']], body: 'text' })).headers,
      [['k', 'v']],
    );
    assert.deepEqual(JSON.parse(fetchRequestJson('http://d/', { headers: new Headers({ A: '1' }) })).headers, [
      ['a', '1'],
    ]);
    assert.throws(() => fetchRequestJson('http://e/', { redirect: 'nope' }), TypeError);
    assert.throws(
      () => fetchRequestJson('http://e/', { headers: [['only-one']] }),
      /Header pairs must contain exactly two items/,
    );
    assert.throws(() => fetchRequestJson('http://e/', 5), /the second argument must be an options object/);
  });

  test('Headers: lower-case names, repeated values joined, node-fetch iteration', () => {
    const h = new Headers([
      ['Set-Cookie', 'a'],
      ['set-cookie', 'b'],
      ['X', '1'],
    ]);
    assert.equal(h.get('SET-COOKIE'), 'a, b');
    assert.deepEqual(h.raw(), { 'set-cookie': ['a', 'b'], x: ['1'] });
    assert.deepEqual(
      [...h],
      [
        ['set-cookie', 'a, b'],
        ['x', '1'],
      ],
    );
    h.set('x', '2');
    h.delete('set-cookie');
    assert.deepEqual([...h.keys()], ['x']);
    assert.deepEqual([...h.values()], ['2']);
    assert.equal(h.has('set-cookie'), false);
    const seen: string[] = [];
    h.forEach((v, k) => seen.push(`${k}=${v}`));
    assert.deepEqual(seen, ['x=2']);
  });

  test('a settled fetch is a Response: status, headers, text/json once, clone; no public constructor', async () => {
    const { sent, bridge } = fakeHost({ fetch: LIMITS });
    const fetch = createFetch(bridge);
    assert.equal(fetch.name, 'fetch');
    const p = fetch('http://a/') as Promise<Response>;
    bridge.settle(
      sent[0].id,
      true,
      JSON.stringify({
        url: 'http://a/',
        status: 201,
        statusText: 'Created',
        redirected: false,
        headers: [['content-type', 'application/json']],
        body: '{"a":1}',
      }),
    );
    const res = await p;
    assert.deepEqual(
      [res.status, res.ok, res.statusText, res.url, res.redirected],
      [201, true, 'Created', 'http://a/', false],
    );
    assert.equal(res.headers.get('Content-Type'), 'application/json');
    const copy = res.clone();
    assert.deepEqual(await res.json(), { a: 1 });
    assert.equal(res.bodyUsed, true);
    await assert.rejects(res.text(), /body used already for: http:\/\/a\//);
    assert.equal(await copy.text(), '{"a":1}');
    await assert.rejects(copy.arrayBuffer(), /response.arrayBuffer\(\) is not available/);
    assert.throws(
      () => new Response({}, { url: '', status: 200, statusText: '', redirected: false, headers: [], body: '' }),
      /Illegal constructor/,
    );

    const bad = fetch('http://b/') as Promise<Response>;
    bridge.settle(
      sent[1].id,
      true,
      JSON.stringify({ url: 'http://b/', status: 200, statusText: 'OK', redirected: false, headers: [], body: 'nope' }),
    );
    await assert.rejects((await bad).json(), { name: 'FetchError', type: 'invalid-json' });
    await assert.rejects(fetch('http://c/', { redirect: 'x' }), TypeError);
  });
});

describe('guest meta APIs', () => {
  test('each call sends its request JSON and wraps the answer', async () => {
    const { sent, bridge } = fakeHost({ cache: LIMITS, storage: LIMITS, jobs: LIMITS, capture: LIMITS });
    const m = createMetaApis(
      bridge,
      { cache: LIMITS, storage: { maxArgBytes: 1000, maxPending: 10 }, jobs: LIMITS, capture: LIMITS },
      {},
    );
    const answer = async (p: Promise<unknown>, json: string): Promise<unknown> => {
      bridge.settle(sent[sent.length - 1].id, true, json);
      return p;
    };
    assert.equal(await answer(m.cache.set('k', { a: 1 }, 60), 'null'), undefined);
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'set', key: 'k', value: '{"a":1}', ttl: 60 });
    assert.deepEqual(await answer(m.cache.get('k', 'dflt'), '"{\\"a\\":1}"'), { a: 1 });
    assert.equal(await answer(m.cache.get('k', 'dflt'), 'null'), 'dflt');
    assert.equal(await answer(m.cache.get('k', null, { jsonSerialize: false }), '"raw"'), 'raw');
    await answer(m.cache.lpush('l', ['a', 1]), '2');
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'lpush', key: 'l', values: ['a', '1'] });
    await answer(m.cache.lpop('l'), '[]');
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'lpop', key: 'l', count: 1 });
    await assert.rejects(m.cache.expire('k', 1.5), {
      name: 'TypeError',
      message: 'ttlSeconds must be an integer, got 1.5',
    });

    await answer(m.storage.set('s', [1]), 'null');
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'set', key: 's', value: '[1]' });
    await answer(m.storage.set('s', undefined), 'null');
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'del', key: 's' });
    assert.equal(await answer(m.storage.get('s', 7), 'null'), 7);
    assert.equal(await answer(m.cursor.increment('c'), '5'), 5);
    assert.deepEqual(sent.at(-1)!.args, { cmd: 'cursorIncrement', key: 'c', by: 1 });

    const job = m.jobs.send('payload') as {
      runIn(n: unknown, unit: unknown): Promise<unknown>;
      runAt(d: unknown): Promise<unknown>;
    };
    const before = Date.now();
    await answer(job.runIn(2, 'minutes'), 'null');
    const args = sent.at(-1)!.args as { name: string; payload: string; runAt: number };
    assert.deepEqual([args.name, args.payload], ['send', '"payload"']);
    assert.ok(args.runAt >= before + 120_000 && args.runAt <= Date.now() + 120_000);
    await answer(job.runAt(new Date(86_400_000)), 'null');
    assert.equal((sent.at(-1)!.args as { runAt: number }).runAt, 86_400_000);
    await assert.rejects(job.runIn(1, 'fortnights'), /runIn: unknown unit fortnights/);
    assert.equal((m.jobs as Record<string, unknown>).then, undefined, 'meta.jobs is not a thenable');

    await answer(m.posthog.capture('evt', { p: 1 }), 'null');
    assert.deepEqual(sent.at(-1)!.args, { event: 'evt', properties: { p: 1 } });
    await assert.rejects(m.posthog.capture('evt', 'no'), /properties must be an object/);
  });

  test('an API whose op is not offered rejects with the reason, as its own error', async () => {
    const { sent, bridge } = fakeHost({});
    const m = createMetaApis(bridge, {}, { cache: 'no Redis configured' });
    await assert.rejects(m.cache.get('k'), {
      name: 'CacheError',
      type: 'unavailable',
      message: 'meta.cache is not available in this worker: no Redis configured',
    });
    await assert.rejects(m.storage.get('k'), {
      name: 'StorageError',
      message: 'meta.storage is not available in this worker: not configured',
    });
    assert.equal(sent.length, 0);
    const e = apiError('JobError')('m', 't') as Error & { type: string };
    assert.deepEqual([e.name, e.message, e.type, Object.keys(e)], ['JobError', 'm', 't', ['type']]);
  });
});

describe('guest attachments', () => {
  test('contents: the bytes, Buffer-like toString encodings and toJSON', () => {
    const bytes = new Uint8Array([104, 105, 200]);
    const a = buildAttachments([
      { key: 'k', content_type: 'text/plain', file_name: 'k.txt', bytes, utf8: 'hi\ufffd', base64: 'aGnI' },
    ]);
    const c = a.k.contents;
    assert.deepEqual([a.k.content_type, a.k.file_name, c.length, c[2]], ['text/plain', 'k.txt', 3, 200]);
    assert.equal(c.toString(), 'hi\ufffd');
    assert.equal(c.toString('base64'), 'aGnI');
    assert.equal(c.toString('hex'), '6869c8');
    assert.equal(c.toString('latin1'), 'hi\u00c8');
    assert.equal(c.toString('ascii'), 'hiH');
    assert.throws(() => c.toString('utf16'), /Unknown encoding: utf16/);
    assert.equal(JSON.stringify(c), '{"type":"Buffer","data":[104,105,200]}');
    assert.equal((c.constructor as unknown as { init?: unknown }).init, undefined, 'no way to change the text');
  });
});
