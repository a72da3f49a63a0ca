import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { JsonObject } from '../../../protocol/types';
import { closeHarness, Harness, harness, makeEvent, props } from '../helpers';
import { startServer, TestServer } from '../http-server';

/**
 * Plugins that try to leave the sandbox or tamper with what others share. Each runs in its own team of one
 * PluginManager next to a plain team (GOOD); the local server (127.0.0.1, allow-listed) counts any request to
 * /leak, which only a leaked bridge callback could make.
 */

const GOOD = 100;
const T = { escape: 1, traps: 2, pollute: 3, probe: 4 };

describe('hostile plugins: escape attempts', () => {
  let srv: TestServer;
  let h: Harness;
  const cfg = (team: number): number => h.manager.configsFor(team)[0].id;

  before(async () => {
    srv = await startServer();
    h = await harness(
      [
        { url: 'file:trail.js', name: 'good', teamId: GOOD, config: { tag: 'good' } },
        {
          url: 'file:hostile/escape.js',
          name: 'escape',
          teamId: T.escape,
          order: 1,
          config: { url: `${srv.origin}/json` },
        },
        { url: 'file:trail.js', name: 'trail', teamId: T.escape, order: 2, config: { tag: 'after' } },
        { url: 'file:hostile/traps.js', name: 'traps', teamId: T.traps, order: 1, config: { url: srv.origin } },
        { url: 'file:trail.js', name: 'trail', teamId: T.traps, order: 2, config: { tag: 'after' } },
        { url: 'file:hostile/pollute.js', name: 'pollute', teamId: T.pollute, order: 1 },
        { url: 'file:trail.js', name: 'trail', teamId: T.pollute, order: 2, config: { tag: 'after' } },
        { url: 'file:hostile/prototype-probe.js', name: 'probe', teamId: T.probe, order: 1 },
      ],
      { memoryLimitMb: 32, cpuTimeoutMs: 2000, wallTimeoutMs: 10_000, maxResultBytes: 4 * 1024 * 1024 },
      { fetch: { allow: '127.0.0.1' } },
    );
  });
  after(async () => {
    await closeHarness(h);
    await srv?.close();
  });

  async function goodTeamWorks(): Promise<void> {
    const input = [makeEvent('good', {}, GOOD), makeEvent('good', {}, GOOD)];
    const out = await h.manager.runChain(GOOD, input);
    assert.deepEqual(
      out.map((e) => e?.uuid),
      input.map((e) => e.uuid),
    );
    for (const e of out) assert.deepEqual(props(e).trail, ['good']);
  }

  it('process, require, the host Function (constructor chains), eval, import(), caller: nothing reaches the host', async () => {
    const [e] = await h.manager.runChain(T.escape, [makeEvent('$escape', {}, T.escape)]);
    const r = props(e).escape as JsonObject;
    assert.ok(r, `no report: ${JSON.stringify(await h.store.getError(cfg(T.escape)))}`);
    const expect: Record<string, string | RegExp> = {
      process: 'threw ReferenceError',
      'globalThis.process': 'undefined',
      'require fs': 'threw Error',
      'require child_process': 'threw Error',
      'this.constructor.constructor': 'threw ReferenceError',
      '({}).constructor.constructor': 'threw ReferenceError',
      'fetch.constructor': 'threw ReferenceError',
      'console.log.constructor': 'threw ReferenceError',
      'require.constructor': 'threw ReferenceError',
      'meta.constructor.constructor': 'threw ReferenceError',
      'async constructor': 'rejected ReferenceError',
      'Function this .process': 'undefined',
      'Function this .require': 'threw Error',
      'eval process': 'threw ReferenceError',
      'indirect eval global': 'undefined',
      'module.require': 'threw TypeError',
      'fetch.caller': 'threw TypeError', // strict functions: no caller/arguments
      'fetch.arguments': 'threw TypeError',
      'console.log.caller': 'threw TypeError',
      'require.caller': 'threw TypeError',
      'dynamic import': /^rejected /,
      caller: 'null', // processEvent's caller is host-installed strict code: hidden
      'new Response via response.constructor': 'threw TypeError',
      'response.constructor.constructor': 'threw ReferenceError',
    };
    for (const [k, want] of Object.entries(expect)) {
      if (typeof want === 'string') assert.equal(r[k], want, k);
      else assert.match(String(r[k]), want, k);
    }
    // Stack frames of host-installed code give away neither their function nor their receiver.
    const frames = (
      r.frames as unknown as Array<Array<{ name: string | null; file: string | null; fn: string; self: string }> | null>
    )
      .flat()
      .filter((f) => f !== null);
    assert.ok(frames.length >= 5, 'prepareStackTrace saw frames');
    const plugin = frames.filter((f) => /escape\.js/.test(String(f.file)));
    const host = frames.filter((f) => !/escape\.js/.test(String(f.file)));
    assert.ok(plugin.length > 0);
    for (const f of host) {
      assert.equal(f.fn, 'undefined', `frame ${f.name} at ${f.file} exposes its function`);
      assert.equal(f.self, 'undefined', `frame ${f.name} at ${f.file} exposes its receiver`);
    }
    // A walk over everything reachable (globals, meta, fetch, console, require, module, a response, its headers,
    // a FetchError, the intrinsics): no host callback, bridge function or pending map.
    const walk = r.walk as { objects: number; suspicious: string[] };
    assert.ok(walk.objects > 500, `walked ${walk.objects} objects`);
    assert.deepEqual(walk.suspicious, []);
    assert.deepEqual(props(e).trail, ['after']);
    await goodTeamWorks();
  });

  it('builtins replaced and prototypes trapped: the host-installed code never calls into them (no bridge internal leaks)', async () => {
    srv.reset();
    const [e] = await h.manager.runChain(T.traps, [makeEvent('$traps', {}, T.traps)]);
    const t = props(e).traps as {
      hits: Array<{ trap: string; self: string; args: string[] }>;
      seen: JsonObject;
      calledBack: number;
    };
    assert.ok(t, `no report: ${JSON.stringify(await h.store.getError(cfg(T.traps)))}`);
    // the window really used the API
    assert.equal(t.seen.status, 200);
    assert.deepEqual(t.seen.body, { hello: 'world', n: 1 });
    assert.equal(t.seen.type, 'application/json; charset=utf-8');
    assert.match(String(t.seen.refused), /only http: and https: URLs are allowed/);
    assert.equal(t.seen.text, 'status 500');
    // The only trap host-installed code may touch: resolving a promise with an object looks up `then` on that
    // object, here the Response handed to the plugin and the body json() parsed for it. Nothing else.
    const RESPONSE_KEYS = 'headers,ok,redirected,status,statusText,url';
    const unexpected = t.hits.filter(
      (x) => !(x.trap === 'get Object.prototype.then' && (x.self === RESPONSE_KEYS || x.self === 'hello,n')),
    );
    assert.deepEqual(unexpected, []);
    assert.ok(t.hits.length >= 2, 'the then-lookups on the response and the body were seen (the traps work)');
    // nothing grabbed was callable as a bridge: the server never saw /leak
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!srv.hits.some((x) => x.includes('/leak')), srv.hits.join('\n'));
    assert.deepEqual(srv.hits.sort(), ['GET /json', 'POST /status/500']);
    assert.deepEqual(props(e).trail, ['after']);
    await goodTeamWorks();
  });

  it('prototype pollution stays in the polluter’s own isolate: not the next plugin, not another team, not the host', async () => {
    const [polluted, next] = await h.manager.runChain(T.pollute, [
      makeEvent('$pollute', {}, T.pollute),
      makeEvent('after-pollution', {}, T.pollute),
    ]);
    // the polluter's own boot code still works with everything it broke
    assert.equal(props(polluted).polluter, true);
    assert.equal(props(next).polluter, 'still works');
    assert.equal(props(next).seesPollution, true, 'the polluter does see its own pollution');
    // the next config in the chain (its own isolate) is clean and ran normally
    assert.deepEqual(props(polluted).trail, ['after']);
    assert.deepEqual(props(next).trail, ['after']);
    // a "__proto__" key in plugin output is plain data on the host
    assert.equal(Object.getPrototypeOf(polluted), Object.prototype);
    assert.equal((polluted as JsonObject).polluted, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(polluted, '__proto__'), true);
    assert.deepEqual(polluted?.team_id, T.pollute);
    // host realm untouched
    assert.equal(({} as JsonObject).polluted, undefined);
    assert.equal(({} as JsonObject).isAdmin, undefined);
    assert.equal((globalThis as Record<string, unknown>).pwned, undefined);
    assert.equal(JSON.stringify({ a: 1 }), '{"a":1}');
    assert.equal('abc'.slice(1), 'bc');
    assert.equal(typeof Object, 'function');
    // another team's config
    const [p] = await h.manager.runChain(T.probe, [makeEvent('probe', {}, T.probe)]);
    for (const [k, v] of Object.entries(props(p).probe as JsonObject)) assert.equal(v, 'clean', k);
    await goodTeamWorks();
  });

  it('no error recorded for attempts that failed inside the plugin; all configs still ready', async () => {
    for (const team of [T.escape, T.traps, T.pollute, T.probe]) {
      assert.equal(await h.store.getError(cfg(team)), null, `team ${team}`);
      assert.ok(h.manager.configsFor(team).every((c) => c.state === 'ready'));
    }
  });
});
