import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { JsonObject } from '../../../protocol/types';
import { closeHarness, Harness, harness, makeEvent, props } from '../helpers';
import { startServer, TestServer } from '../http-server';

/**
 * fetch from plugins against a local server on 127.0.0.1 (allow-listed here). Refusals are checked with loopback
 * spellings only: no test sends traffic anywhere but loopback (private/link-local/metadata ranges are covered by
 * net-guard.test.ts).
 */

type Fetched = JsonObject & { error?: JsonObject; body?: JsonObject };

async function fetchVia(h: Harness, team: number, spec: JsonObject): Promise<Fetched> {
  const [e] = await h.manager.runChain(team, [makeEvent('fetch', { properties: { $fetch: spec } }, team)]);
  return props(e).fetched as Fetched;
}

describe('fetch from plugins (127.0.0.1 allow-listed)', () => {
  let srv: TestServer;
  let h: Harness;
  const lookups: string[] = [];
  before(async () => {
    srv = await startServer();
    h = await harness(
      [
        { url: 'file:fetch-client.js', name: 'fetch client', teamId: 1 },
        { url: 'file:fetch-client.js', name: 'fetch client, tight', teamId: 2 },
        {
          name: 'bytes and Headers',
          teamId: 3,
          config: { url: srv.origin },
          source: `exports.processEvent = async (e, { config }) => {
            const first = await fetch(config.url + '/headers')
            const Headers = first.headers.constructor
            const h = new Headers([['X-From-Pairs', '1']])
            h.append('x-more', 'a')
            h.set('X-More', 'b')
            const bytes = await (await fetch(config.url + '/echo', { method: 'POST', body: new Uint8Array([104, 105, 0xc3, 0xa9]).buffer, headers: h })).json()
            const view = await (await fetch(config.url + '/echo', { method: 'PUT', body: new Uint8Array([0, 104, 105, 0]).subarray(1, 3) })).json()
            let unsupported
            try { await first.arrayBuffer() } catch (err) { unsupported = err.message }
            return { ...e, properties: { ...e.properties, bytes, view, unsupported, raw: first.headers.raw()['x-multi'] } }
          }`,
        },
      ],
      { memoryLimitMb: 32, cpuTimeoutMs: 1000, wallTimeoutMs: 20_000, maxResultBytes: 8 * 1024 * 1024 },
      {
        fetch: {
          allow: '127.0.0.1',
          maxBytes: 256 * 1024,
          timeoutMs: 5000,
          // names for the DNS tests: everything else fails to resolve (no real DNS query is made)
          lookup: async (host) => {
            lookups.push(host);
            if (host === 'api.test') return [{ address: '127.0.0.1', family: 4 }];
            if (host === 'v6only.test' || host === 'localhost') return [{ address: '::1', family: 6 }];
            throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
          },
        },
      },
    );
  });
  after(async () => {
    await closeHarness(h);
    await srv?.close();
  });

  it('GET JSON: ok, status, statusText, url, headers.get (case-insensitive), json()', async () => {
    const r = await fetchVia(h, 1, { url: `${srv.origin}/json`, read: 'json' });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    assert.equal(r.ok, true);
    assert.equal(r.status, 200);
    assert.equal(r.statusText, 'OK');
    assert.equal(r.url, `${srv.origin}/json`);
    assert.equal(r.redirected, false);
    assert.equal(r.contentType, 'application/json; charset=utf-8');
    assert.deepEqual(r.body, { hello: 'world', n: 1 });
  });

  it('POST JSON with headers: method, body, content-type and custom headers reach the server; Host cannot be forged', async () => {
    const payload = { a: 1, list: ['x', 'ü'] };
    const r = await fetchVia(h, 1, {
      url: `${srv.origin}/echo?q=1`,
      init: {
        method: 'post',
        headers: { 'Content-Type': 'application/json', 'X-Custom': 'yes', Host: 'evil.example', 'Content-Length': '1' },
        body: JSON.stringify(payload),
      },
      read: 'json',
    });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    const echo = r.body as JsonObject & { headers: JsonObject };
    assert.equal(echo.method, 'POST');
    assert.equal(echo.url, '/echo?q=1');
    assert.deepEqual(JSON.parse(echo.body as string), payload);
    assert.equal(echo.headers['content-type'], 'application/json');
    assert.equal(echo.headers['x-custom'], 'yes');
    assert.equal(echo.headers.host, `127.0.0.1:${srv.port}`);
    assert.equal(echo.headers['content-length'], String(Buffer.byteLength(JSON.stringify(payload))));
    assert.match(String(echo.headers['user-agent']), /posthog-plugins/);
  });

  it('non-2xx statuses resolve (ok false) with their statusText; repeated headers are joined', async () => {
    const r = await fetchVia(h, 1, { url: `${srv.origin}/status/418`, read: 'text' });
    assert.equal(r.ok, false);
    assert.equal(r.status, 418);
    assert.equal(r.statusText, 'Custom 418');
    assert.equal(r.text, 'status 418');
    const m = await fetchVia(h, 1, { url: `${srv.origin}/headers`, read: 'none' });
    assert.equal(m.multi, 'a, b');
    assert.equal(m.hasMulti, true);
    assert.ok((m.headerNames as string[]).includes('set-cookie'));
  });

  it('body can be read once (text twice fails like node-fetch); clone() gives a second copy; bad JSON is a FetchError', async () => {
    const r = await fetchVia(h, 1, { url: `${srv.origin}/json`, read: 'twice' });
    assert.equal(r.text, '{"hello":"world","n":1}');
    assert.match(String(r.second), /body used already/);
    const c = await fetchVia(h, 1, { url: `${srv.origin}/json`, read: 'clone' });
    assert.equal(c.cloneText, c.text);
    const bad = await fetchVia(h, 1, { url: `${srv.origin}/not-json`, read: 'json' });
    assert.equal(bad.error?.name, 'FetchError');
    assert.equal(bad.error?.type, 'invalid-json');
  });

  it('binary request bodies (ArrayBuffer, typed-array views) go out byte for byte; a Headers can be passed back in', async () => {
    const [e] = await h.manager.runChain(3, [makeEvent('x', { properties: {} }, 3)]);
    const p = props(e);
    assert.equal(
      p.bytes && (p.bytes as JsonObject).body,
      'hié',
      JSON.stringify(await h.store.getError(h.ids[2].configId)),
    );
    assert.equal(((p.bytes as JsonObject).headers as JsonObject)['x-from-pairs'], '1');
    assert.equal(((p.bytes as JsonObject).headers as JsonObject)['x-more'], 'b');
    assert.equal(
      ((p.bytes as JsonObject).headers as JsonObject)['content-type'],
      undefined,
      'no text content-type for bytes',
    );
    assert.equal((p.view as JsonObject).body, 'hi');
    assert.match(String(p.unsupported), /arrayBuffer\(\) is not available in posthog-plugins/);
    assert.deepEqual(p.raw, ['a', 'b']);
  });

  it('gzip bodies are decompressed', async () => {
    const r = await fetchVia(h, 1, { url: `${srv.origin}/gzip`, read: 'json' });
    assert.equal((r.body as JsonObject).compressed, true);
  });

  it('size cap: declared, chunked and decompressed bodies over --fetch-max-bytes are refused', async () => {
    const ok = await fetchVia(h, 1, { url: `${srv.origin}/big?bytes=${200 * 1024}`, read: 'text' });
    assert.equal((ok.text as string).length, 200 * 1024);
    for (const path of [`/big?bytes=${300 * 1024}`, `/big?bytes=${300 * 1024}&chunked=1`, '/gzip-bomb?mb=20']) {
      const r = await fetchVia(h, 1, { url: `${srv.origin}${path}`, read: 'text' });
      assert.equal(r.error?.name, 'FetchError', path);
      assert.equal(r.error?.type, 'max-size', path);
      assert.match(String(r.error?.message), /over limit: 262144 bytes/);
    }
    // and the request body too
    const big = await fetchVia(h, 1, {
      url: `${srv.origin}/echo`,
      init: { method: 'POST', body: 'y'.repeat(300 * 1024) },
      read: 'none',
    });
    assert.equal(big.error?.type, 'max-size');
  });

  it('timeout: the plugin gets a FetchError (request-timeout) and the server sees the connection go', async () => {
    srv.reset();
    const t0 = Date.now();
    const r = await fetchVia(h, 1, { url: `${srv.origin}/slow?ms=3000`, init: { timeout: 300 }, read: 'json' });
    assert.equal(r.error?.name, 'FetchError');
    assert.equal(r.error?.type, 'request-timeout');
    assert.match(String(r.error?.message), /network timeout at: .*\/slow/);
    assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
    for (let i = 0; i < 50 && srv.aborted === 0; i++) await new Promise((r2) => setTimeout(r2, 20));
    assert.equal(srv.aborted, 1);
  });

  it('redirects are followed by hand (up to 5), with method rules; more is an error', async () => {
    const r = await fetchVia(h, 1, { url: `${srv.origin}/chain?n=5`, read: 'json' });
    assert.deepEqual(r.body, { done: true });
    assert.equal(r.redirected, true);
    assert.equal(r.url, `${srv.origin}/chain?n=0`);
    const tooMany = await fetchVia(h, 1, { url: `${srv.origin}/chain?n=6`, read: 'json' });
    assert.equal(tooMany.error?.type, 'max-redirect');
    const lower = await fetchVia(h, 1, { url: `${srv.origin}/chain?n=2`, init: { follow: 1 }, read: 'json' });
    assert.equal(lower.error?.type, 'max-redirect');
    const see = await fetchVia(h, 1, {
      url: `${srv.origin}/redirect?code=303&to=/echo`,
      init: { method: 'POST', body: 'x' },
      read: 'json',
    });
    assert.equal((see.body as JsonObject).method, 'GET');
    const keep = await fetchVia(h, 1, {
      url: `${srv.origin}/redirect?code=307&to=/echo`,
      init: { method: 'PUT', body: 'x' },
      read: 'json',
    });
    assert.equal((keep.body as JsonObject).method, 'PUT');
    assert.equal((keep.body as JsonObject).body, 'x');
    const manual = await fetchVia(h, 1, {
      url: `${srv.origin}/redirect?to=/json`,
      init: { redirect: 'manual' },
      read: 'none',
    });
    assert.equal(manual.status, 302);
    const error = await fetchVia(h, 1, {
      url: `${srv.origin}/redirect?to=/json`,
      init: { redirect: 'error' },
      read: 'none',
    });
    assert.equal(error.error?.type, 'no-redirect');
  });

  it('a redirect to a refused address or scheme is refused before anything is sent there', async () => {
    srv.reset();
    for (const to of [
      `http://[::1]:${srv.port}/json`,
      `http://localhost:${srv.port}/json`,
      `http://127.0.0.2:${srv.port}/json`,
      'file:///etc/passwd',
      `ftp://127.0.0.1:${srv.port}/x`,
    ]) {
      const r = await fetchVia(h, 1, { url: `${srv.origin}/redirect?to=${encodeURIComponent(to)}`, read: 'text' });
      assert.equal(r.error?.name, 'FetchError', to);
      assert.match(String(r.error?.type), /^(refused|unsupported-protocol)$/, to);
    }
    // (the fake resolver gives localhost ::1 only, which is not on the allow-list)
    assert.ok(
      srv.hits.every((hit) => hit.startsWith('GET /redirect')),
      srv.hits.join('\n'),
    );
  });

  it('names are resolved once by the host and the checked address is the one connected to (Host header kept)', async () => {
    lookups.length = 0;
    const r = await fetchVia(h, 1, { url: `http://api.test:${srv.port}/echo`, read: 'json' });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    assert.equal(((r.body as JsonObject).headers as JsonObject).host, `api.test:${srv.port}`);
    assert.deepEqual(lookups, ['api.test']);
    // ::1 is not on the allow-list: refused although it is where the name points
    const v6 = await fetchVia(h, 1, { url: `http://v6only.test:${srv.port}/json`, read: 'none' });
    assert.equal(v6.error?.type, 'refused');
    assert.match(
      String(v6.error?.message),
      /v6only\.test resolves to 0:0:0:0:0:0:0:1, which is not allowed \(loopback address\)/,
    );
    const nx = await fetchVia(h, 1, { url: 'http://nx.test/', read: 'none' });
    assert.equal(nx.error?.type, 'system');
    assert.equal(nx.error?.code, 'ENOTFOUND');
  });

  it('concurrency: at most 10 requests per config in flight; the rest wait and all complete', async () => {
    srv.reset();
    const urls = Array.from({ length: 25 }, (_, i) => `${srv.origin}/hold?ms=150&i=${i}`);
    const t0 = Date.now();
    const r = (await fetchVia(h, 1, { urls, read: 'json' })) as unknown as Fetched[];
    assert.equal(r.length, 25);
    for (const x of r) assert.deepEqual(x.body, { held: true }, JSON.stringify(x.error));
    assert.equal(srv.maxInFlight, 10, `max in flight ${srv.maxInFlight}`);
    assert.ok(Date.now() - t0 >= 3 * 150 - 20, 'three waves');
  });

  it('more than concurrency + queue at once: the excess is rejected at once inside the plugin', async () => {
    srv.reset();
    const urls = Array.from({ length: 120 }, (_, i) => `${srv.origin}/hold?ms=50&i=${i}`);
    const r = (await fetchVia(h, 2, { urls, read: 'none' })) as unknown as Fetched[];
    const rejected = r.filter((x) => x.error);
    assert.equal(r.length - rejected.length, 110);
    assert.equal(rejected.length, 10);
    for (const x of rejected) assert.equal(x.error?.type, 'too-many-requests');
    assert.equal(srv.hits.length, 110);
  });
});

describe('fetch from plugins without an allow-list: loopback in every spelling, and non-http schemes, are refused', () => {
  let srv: TestServer;
  let h: Harness;
  before(async () => {
    srv = await startServer();
    h = await harness([
      { url: 'file:fetch-client.js', name: 'fetch client', teamId: 1 },
      { url: 'file:trail.js', name: 'trail', teamId: 1, order: 2, config: { tag: 'after' } },
    ]);
  });
  after(async () => {
    await closeHarness(h);
    await srv?.close();
  });

  it('every refusal is a rejected promise inside the plugin with a clear message; the event continues; nothing is sent', async () => {
    const p = srv.port;
    const cases: Array<[string, RegExp]> = [
      [`http://127.0.0.1:${p}/json`, /refused: 127\.0\.0\.1 is not allowed \(loopback address\)/],
      [`http://localhost:${p}/json`, /refused: localhost is not allowed \(loopback host name\)/],
      [`http://LOCALHOST.:${p}/json`, /refused: localhost is not allowed/],
      [`http://foo.localhost:${p}/json`, /loopback host name/],
      [`http://[::1]:${p}/json`, /0:0:0:0:0:0:0:1 is not allowed \(loopback address\)/],
      [`http://127.1:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://0x7f000001:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://2130706433:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://0177.0.0.1:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://127.0.0.1.:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://127.42.0.9:${p}/json`, /127\.42\.0\.9 is not allowed/],
      [`http://[::ffff:127.0.0.1]:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://[::ffff:7f00:1]:${p}/json`, /127\.0\.0\.1 is not allowed/],
      [`http://[0:0:0:0:0:0:0:1]:${p}/json`, /loopback/],
      [`http://0.0.0.0:${p}/json`, /0\.0\.0\.0 is not allowed \("this network" address\)/],
      [`http://0:${p}/json`, /0\.0\.0\.0 is not allowed/],
      [`http://[::]:${p}/json`, /unspecified/],
      [`https://127.0.0.1:${p}/json`, /loopback/],
      ['file:///etc/passwd', /only http: and https: URLs are allowed, got file:/],
      [`ftp://127.0.0.1:${p}/x`, /only http: and https: URLs are allowed, got ftp:/],
      ['data:text/plain,hello', /got data:/],
      ['javascript:alert(1)', /got javascript:/],
      ['not a url', /invalid URL/],
    ];
    const events = cases.map(([url]) => makeEvent('fetch', { properties: { $fetch: { url, read: 'text' } } }));
    const out = await h.manager.runChain(1, events);
    assert.equal(out.length, cases.length);
    cases.forEach(([url, re], i) => {
      const f = props(out[i]).fetched as Fetched;
      assert.ok(f.error, `${url} should be refused`);
      assert.equal(f.error.name, 'FetchError', url);
      assert.equal(f.error.isError, true, url);
      assert.match(String(f.error.message), re, url);
      assert.deepEqual(props(out[i]).trail, ['after'], `${url}: the event went on down the chain`);
    });
    assert.deepEqual(srv.hits, [], 'no request reached the local server');
    assert.ok(
      h.logs.some(
        (l) =>
          l.level === 'warn' &&
          /plugin fetch refused: request to http:\/\/127\.0\.0\.1:\d+ refused/.test(l.message) &&
          l.pluginConfigId === h.ids[0].configId,
      ),
    );
    assert.equal(
      await h.store.getError(h.ids[0].configId),
      null,
      'a refused fetch the plugin handled is not a plugin error',
    );
  });

  it('a refused fetch the plugin does not catch fails that event only, recorded in posthog_pluginconfig.error', async () => {
    const h2 = await harness([
      {
        source:
          "exports.processEvent = async (e) => { if (e.event === 'go') await fetch('http://127.0.0.1:1/'); return { ...e, properties: { ...e.properties, done: true } } }",
        name: 'uncaught',
        teamId: 1,
      },
    ]);
    try {
      const r = await h2.manager.runChain(1, [makeEvent('go'), makeEvent('stay')]);
      assert.equal(props(r[0]).done, undefined);
      assert.equal(props(r[1]).done, true);
      const err = await h2.store.getError(h2.ids[0].configId);
      assert.equal(err?.name, 'FetchError');
      assert.match(err?.message ?? '', /refused: 127\.0\.0\.1 is not allowed \(loopback address\)/);
    } finally {
      await closeHarness(h2);
    }
  });

  it('fetch can be switched off', async () => {
    const h3 = await harness(
      [
        {
          source: 'exports.processEvent = (e) => ({ ...e, properties: { ...e.properties, t: typeof fetch } })',
          name: 'typeof',
          teamId: 1,
        },
      ],
      undefined,
      { fetch: { enabled: false } },
    );
    try {
      const [e] = await h3.manager.runChain(1, [makeEvent('x')]);
      assert.equal(props(e).t, 'undefined');
    } finally {
      await closeHarness(h3);
    }
  });

  it('an unreadable allow-list entry fails PluginManager.create', async () => {
    await assert.rejects(
      harness([], undefined, { fetch: { allow: '10.0.0.0/8,not a host' } }),
      /fetch allow-list: cannot read entry "not a host"/,
    );
  });
});
