import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { JsonObject } from '../../../protocol/types';
import { closeHarness, Harness, harness, makeEvent, props } from '../helpers';

/**
 * Hostile plugins, each for its own team, followed by a well-behaved plugin so that we can see the chain go on.
 * Limits: 16 MB, 200 ms CPU, 1 s wall, 1 MB results.
 */
describe('hostile plugins', () => {
  let h: Harness;
  const TEAM = {
    throws: 1,
    loop: 2,
    hang: 3,
    huge: 5,
    setupLoop: 6,
    loadLoop: 7,
    requireFs: 8,
    importModule: 9,
    syntax: 10,
    remote: 11,
    reject: 12,
  };
  const cfg = (team: number): number => h.manager.configsFor(team)[0].id;

  before(async () => {
    h = await harness([
      { url: 'file:hostile/throws.js', name: 'throws', teamId: TEAM.throws, order: 1 },
      { url: 'file:trail.js', name: 'trail', teamId: TEAM.throws, order: 2, config: { tag: 'next' } },
      { url: 'file:hostile/infinite-loop.js', name: 'infinite loop', teamId: TEAM.loop, order: 1 },
      { url: 'file:trail.js', name: 'trail', teamId: TEAM.loop, order: 2, config: { tag: 'next' } },
      { url: 'file:hostile/never-resolves.js', name: 'never resolves', teamId: TEAM.hang, order: 1 },
      { url: 'file:trail.js', name: 'trail', teamId: TEAM.hang, order: 2, config: { tag: 'next' } },
      {
        url: 'file:hostile/huge-result.js',
        name: 'huge result',
        teamId: TEAM.huge,
        order: 1,
        config: { size: String(2 * 1024 * 1024) },
      },
      { url: 'file:trail.js', name: 'trail', teamId: TEAM.huge, order: 2, config: { tag: 'next' } },
      { url: 'file:hostile/setup-loop.js', name: 'setup loop', teamId: TEAM.setupLoop, order: 1 },
      { url: 'file:hostile/load-loop.js', name: 'load loop', teamId: TEAM.loadLoop, order: 1 },
      { url: 'file:hostile/requires-fs.js', name: 'requires fs', teamId: TEAM.requireFs, order: 1 },
      { url: 'file:hostile/imports-module.ts', name: 'imports crypto', teamId: TEAM.importModule, order: 1 },
      { url: 'file:hostile/syntax-error.js', name: 'syntax error', teamId: TEAM.syntax, order: 1 },
      {
        url: 'https://github.com/PostHog/posthog-hello-world-plugin',
        name: 'remote',
        teamId: TEAM.remote,
        order: 1,
        pluginType: 'repository',
      },
      { url: 'file:hostile/throws.js', name: 'throws', teamId: TEAM.reject, order: 1 },
    ]);
  });
  after(() => closeHarness(h));

  it('throw / thrown string / rejection / non-object return: event keeps its previous value, error row in PostHog format', async () => {
    const r = await h.manager.runChain(TEAM.throws, [
      makeEvent('ok'),
      makeEvent('$throw'),
      makeEvent('$throw_string'),
      makeEvent('$reject'),
      makeEvent('$bad_return'),
    ]);
    assert.equal(props(r[0]).survived, true);
    for (let i = 1; i < 5; i++) {
      assert.equal(props(r[i]).survived, undefined, `event ${i}`);
      assert.deepEqual(props(r[i]).trail, ['next'], `event ${i} continued down the chain`);
    }
    const err = await h.store.getError(cfg(TEAM.throws));
    assert.ok(err);
    assert.deepEqual(Object.keys(err).sort(), ['event', 'message', 'name', 'stack', 'time']);
    assert.equal(err.name, 'TypeError'); // last error of the call: the non-object return
    assert.match(err.message, /must return an event object/);
    assert.equal((err.event as JsonObject).event, '$bad_return');
    assert.ok(!Number.isNaN(Date.parse(err.time)));

    await h.manager.runChain(TEAM.reject, [makeEvent('$throw_string')]);
    const s = await h.store.getError(cfg(TEAM.reject));
    assert.deepEqual(Object.keys(s ?? {}).sort(), ['message', 'time']);
    assert.equal(s?.message, 'a thrown string');
    await h.manager.runChain(TEAM.reject, [makeEvent('$reject')]);
    const rej = await h.store.getError(cfg(TEAM.reject));
    assert.equal(rej?.name, 'RangeError');
    assert.match(rej?.stack ?? '', /async rejection/);
    // a log line names plugin, config, team and the event
    assert.ok(
      h.logs.some(
        (l) =>
          l.level === 'warn' &&
          /plugin throws \(config \d+, team 12\) failed on event uuid=\S+ event="\$reject" distinct_id="user-\d+"/.test(
            l.message,
          ),
      ),
    );
  });

  it('sync infinite loop: CPU timeout, isolate recreated, only the looping event loses this plugin', async () => {
    const vm = h.manager.vmFor(cfg(TEAM.loop))!;
    const gen = vm.generation;
    const t0 = Date.now();
    const r = await h.manager.runChain(TEAM.loop, [makeEvent('a'), makeEvent('$loop'), makeEvent('c')]);
    const took = Date.now() - t0;
    assert.equal(props(r[0]).looped, false);
    assert.equal(props(r[1]).looped, undefined);
    assert.deepEqual(props(r[1]).trail, ['next']);
    assert.equal(props(r[2]).looped, false);
    assert.equal(vm.generation, gen + 2, 'recreated after the batch and after the single rerun');
    assert.equal(vm.state, 'ready');
    assert.ok(took < 15_000, `took ${took} ms`);
    const err = await h.store.getError(cfg(TEAM.loop));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /CPU time limit of 200 ms/);
    assert.equal((err?.event as JsonObject).event, '$loop');
    // and the plugin keeps working afterwards
    assert.equal(props((await h.manager.runChain(TEAM.loop, [makeEvent('d')]))[0]).looped, false);
  });

  it('repeated fatal failures in one call: gives up after two, the rest pass through unchanged by this plugin', async () => {
    const vm = h.manager.vmFor(cfg(TEAM.loop))!;
    const gen = vm.generation;
    const r = await h.manager.runChain(TEAM.loop, [
      makeEvent('$loop'),
      makeEvent('$loop'),
      makeEvent('$loop'),
      makeEvent('ok'),
    ]);
    for (const e of r) {
      assert.equal(props(e).looped, undefined);
      assert.deepEqual(props(e).trail, ['next']);
    }
    assert.equal(vm.generation, gen + 3);
    assert.equal(vm.state, 'ready');
    assert.ok(h.logs.some((l) => /gave up on 2 event\(s\) after 2 fatal failures/.test(l.message)));
  });

  it('never-resolving promise: wall-clock deadline, isolate disposed and recreated (setupPlugin again)', async () => {
    const vm = h.manager.vmFor(cfg(TEAM.hang))!;
    const gen = vm.generation;
    const r = await h.manager.runChain(TEAM.hang, [makeEvent('$hang'), makeEvent('b')]);
    assert.equal(props(r[0]).hung, undefined);
    assert.deepEqual(props(r[0]).trail, ['next']);
    assert.equal(props(r[1]).hung, false);
    assert.equal(vm.generation, gen + 2);
    const err = await h.store.getError(cfg(TEAM.hang));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /wall-clock deadline/);
  });

  it('huge result: rejected before the host parses it; only that event loses the change', async () => {
    const vm = h.manager.vmFor(cfg(TEAM.huge))!;
    const gen = vm.generation;
    const r = await h.manager.runChain(TEAM.huge, [makeEvent('a'), makeEvent('$huge'), makeEvent('c')]);
    assert.equal(props(r[0]).small, true);
    assert.equal(props(r[1]).blob, undefined);
    assert.deepEqual(props(r[1]).trail, ['next']);
    assert.equal(props(r[2]).small, true);
    assert.equal(vm.generation, gen, 'no need to recreate the isolate');
    const err = await h.store.getError(cfg(TEAM.huge));
    assert.equal(err?.name, 'ResultTooLargeError');
  });

  it('load-time failures: setup loop, top-level loop, require, import, syntax error, un-downloaded remote plugin', async () => {
    const expect: Array<[number, RegExp]> = [
      [TEAM.setupLoop, /setupPlugin failed: setupPlugin exceeded the CPU time limit of 200 ms/],
      [TEAM.loadLoop, /plugin load failed: plugin load exceeded the CPU time limit/],
      [TEAM.requireFs, /^Cannot import 'fs': modules are not available in posthog-plugins$/],
      [TEAM.importModule, /^Cannot import 'crypto': modules are not available in posthog-plugins$/],
      [TEAM.syntax, /cannot compile syntax_error\/index\.js:2:\d+|cannot compile .*syntax-error\.js:2:\d+/],
      [
        TEAM.remote,
        /un-downloaded remote plugin remote \(https:\/\/github\.com\/PostHog\/posthog-hello-world-plugin\)/,
      ],
    ];
    for (const [team, re] of expect) {
      assert.deepEqual(
        h.manager.configsFor(team).map((c) => c.state),
        ['failed'],
        `team ${team}`,
      );
      const err = await h.store.getError(cfg(team));
      assert.match(err?.message ?? '', re, `team ${team}`);
      const input = [makeEvent('x', {}, team)];
      assert.deepEqual(await h.manager.runChain(team, input), input, 'events pass through a failed config');
    }
  });

  it('the worker stays healthy: every team still works after all of the above', async () => {
    for (const team of [TEAM.throws, TEAM.loop, TEAM.hang, TEAM.huge]) {
      const [e] = await h.manager.runChain(team, [makeEvent('fine', {}, team)]);
      assert.deepEqual(props(e).trail, ['next'], `team ${team}`);
    }
  });
});

// Own manager with a generous CPU limit, so that the memory limit (not the CPU timeout) is what stops it,
// even when the machine is busy with other test files.
describe('hostile plugins: heap growth', () => {
  let h: Harness;
  const cfgOf = (team: number): number => h.manager.configsFor(team)[0].id;
  before(async () => {
    h = await harness(
      [
        { url: 'file:hostile/heap-growth.js', name: 'heap growth', teamId: 1, order: 1 },
        { url: 'file:trail.js', name: 'trail', teamId: 1, order: 2, config: { tag: 'next' } },
      ],
      { memoryLimitMb: 16, cpuTimeoutMs: 10_000, wallTimeoutMs: 20_000 },
    );
  });
  after(() => closeHarness(h));

  it('heap growth: memory limit, isolate recreated, other events processed', async () => {
    const vm = h.manager.vmFor(cfgOf(1))!;
    const gen = vm.generation;
    const r = await h.manager.runChain(1, [makeEvent('a'), makeEvent('$grow'), makeEvent('c')]);
    assert.equal(props(r[0]).grown, false);
    assert.equal(props(r[1]).grown, undefined);
    assert.deepEqual(props(r[1]).trail, ['next']);
    assert.equal(props(r[2]).grown, false);
    assert.equal(vm.generation, gen + 2);
    const err = await h.store.getError(cfgOf(1));
    assert.equal(err?.name, 'MemoryLimitError');
    assert.match(err?.message ?? '', /memory limit of 16 MB/);
    assert.ok((await vm.heapUsedBytes())! < 8 * 1024 * 1024);
  });
});

describe('close() while a plugin hangs', () => {
  it('resolves the pending chain call with unchanged events, writes no error, and closes', async () => {
    const h = await harness([{ url: 'file:hostile/never-resolves.js', name: 'never resolves', teamId: 1 }], {
      cpuTimeoutMs: 200,
      wallTimeoutMs: 5000,
    });
    try {
      const configId = h.ids[0].configId;
      const input = [makeEvent('$hang')];
      const pending = h.manager.runChain(1, input);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      await h.manager.close();
      const r = await pending;
      assert.ok(Date.now() - t0 < 8000, 'close waits only a bounded time for running calls (~1 s when quiet)');
      assert.deepEqual(r, input);
      assert.equal(await h.store.getError(configId), null);
      await assert.rejects(h.manager.runChain(1, input), /PluginManager is closed/);
    } finally {
      await closeHarness(h);
    }
  });
});
