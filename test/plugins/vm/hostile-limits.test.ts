import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PluginEvent } from '../../../src/plugins/types';
import { closeHarness, Harness, harness, makeEvent, props } from '../helpers';
import { startServer, TestServer } from '../http-server';

/**
 * Hostile plugins, each in its own team of one PluginManager, next to a well-behaved team (GOOD) whose events run
 * through the same manager while the hostile one misbehaves. For each: the worker stays up, the good team's events
 * come back (while the hostile call is still running, where it takes long), no event is lost or reordered, the
 * hostile config's other events keep its change, and the error lands in posthog_pluginconfig.error.
 */

const GOOD = 100;

interface Scenario {
  team: number;
  /** The hostile events (the first one misbehaves); every event is followed by `after` in the chain. */
  events: PluginEvent[];
  /** The good team must finish while the hostile call is still running. */
  slow?: boolean;
}

async function runScenario(h: Harness, s: Scenario): Promise<{ hostile: Array<PluginEvent | null>; ms: number }> {
  const good = Array.from({ length: 20 }, () => makeEvent('good', {}, GOOD));
  let goodDoneAt = 0;
  let hostileDoneAt = 0;
  const t0 = Date.now();
  const [hostile, goodOut] = await Promise.all([
    h.manager.runChain(s.team, s.events).then((r) => {
      hostileDoneAt = Date.now();
      return r;
    }),
    (async () => {
      const out: Array<PluginEvent | null> = [];
      // a few small batches, one after the other, as the consumer would send them
      for (let k = 0; k < 5; k++) out.push(...(await h.manager.runChain(GOOD, good.slice(k * 4, k * 4 + 4))));
      goodDoneAt = Date.now();
      return out;
    })(),
  ]);
  // no event lost, order kept, on both sides
  assert.deepEqual(
    hostile.map((e) => e?.uuid),
    s.events.map((e) => e.uuid),
    'every hostile-team event comes back, in order',
  );
  assert.deepEqual(
    goodOut.map((e) => e?.uuid),
    good.map((e) => e.uuid),
  );
  for (const e of goodOut) assert.deepEqual(props(e).trail, ['good']);
  // every hostile-team event went on down its chain
  for (const e of hostile) assert.deepEqual(props(e).trail, ['after'], `event ${e?.event} continued down the chain`);
  if (s.slow)
    assert.ok(
      goodDoneAt < hostileDoneAt,
      `good team done after ${goodDoneAt - t0} ms, hostile after ${hostileDoneAt - t0} ms`,
    );
  return { hostile, ms: hostileDoneAt - t0 };
}

describe('hostile plugins: limits (one manager, every team keeps flowing)', () => {
  let srv: TestServer;
  let h: Harness;
  const T = { loop: 1, afterAwait: 2, hang: 3, huge: 4, recursion: 5, throws: 6, flood: 7, bigError: 8, background: 9 };
  const cfg = (team: number): number => h.manager.configsFor(team)[0].id;

  before(async () => {
    srv = await startServer();
    const withAfter = (
      team: number,
      url: string,
      name: string,
      config = {},
    ): Array<Parameters<typeof harness>[0][number]> => [
      { url, name, teamId: team, order: 1, config },
      { url: 'file:trail.js', name: 'trail', teamId: team, order: 2, config: { tag: 'after' } },
    ];
    h = await harness(
      [
        { url: 'file:trail.js', name: 'good', teamId: GOOD, config: { tag: 'good' } },
        ...withAfter(T.loop, 'file:hostile/infinite-loop.js', 'infinite loop'),
        ...withAfter(T.afterAwait, 'file:hostile/after-await.js', 'after await', { url: `${srv.origin}/json` }),
        ...withAfter(T.hang, 'file:hostile/never-resolves.js', 'never resolves'),
        ...withAfter(T.huge, 'file:hostile/huge-result.js', 'huge result', { size: String(2 * 1024 * 1024) }),
        ...withAfter(T.recursion, 'file:hostile/deep-recursion.js', 'deep recursion'),
        ...withAfter(T.throws, 'file:hostile/throws.js', 'throws'),
        ...withAfter(T.flood, 'file:hostile/console-flood.js', 'console flood'),
        ...withAfter(T.bigError, 'file:hostile/big-error.js', 'big error'),
        ...withAfter(T.background, 'file:hostile/after-await.js', 'background loop', { url: `${srv.origin}/json` }),
      ],
      { memoryLimitMb: 32, cpuTimeoutMs: 300, wallTimeoutMs: 4000, maxResultBytes: 1024 * 1024 },
      { fetch: { allow: '127.0.0.1' } },
    );
  });
  after(async () => {
    await closeHarness(h);
    await srv?.close();
  });

  it('sync infinite loop: CPU timeout, isolate recreated; TimeoutError recorded', async () => {
    const vm = h.manager.vmFor(cfg(T.loop))!;
    const gen = vm.generation;
    const { hostile } = await runScenario(h, {
      team: T.loop,
      events: [makeEvent('$loop', {}, T.loop), makeEvent('ok', {}, T.loop)],
      slow: true,
    });
    assert.equal(props(hostile[0]).looped, undefined);
    assert.equal(props(hostile[1]).looped, false);
    assert.ok(vm.generation > gen);
    const err = await h.store.getError(cfg(T.loop));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /CPU time limit of 300 ms/);
  });

  for (const [event, what] of [
    ['$loop_after_fetch', 'after await fetch() (the bridge settle has its own timeout)'],
    ['$loop_after_rejected_fetch', 'after a rejected fetch()'],
  ] as const) {
    it(`infinite loop ${what}: stopped by the CPU timeout of the re-entry, long before the wall-clock deadline`, async () => {
      const vm = h.manager.vmFor(cfg(T.afterAwait))!;
      const gen = vm.generation;
      const { hostile, ms } = await runScenario(h, {
        team: T.afterAwait,
        events: [makeEvent(event, {}, T.afterAwait), makeEvent('ok', {}, T.afterAwait)],
        slow: true,
      });
      assert.equal(props(hostile[0]).after_await, undefined);
      assert.equal(props(hostile[1]).after_await, 'ok');
      assert.ok(vm.generation > gen, 'isolate recreated');
      // batch + event-by-event rerun, each stopped after ~300 ms of CPU; stopped by the 4 s deadline instead, the
      // two would take ≥ 8 s (generous bound: the machine may be busy)
      assert.ok(ms < 7500, `took ${ms} ms`);
      const err = await h.store.getError(cfg(T.afterAwait));
      assert.equal(err?.name, 'TimeoutError');
      assert.match(
        err?.message ?? '',
        /processEvent \(resumed after a host call\) exceeded the CPU time limit of 300 ms/,
      );
      assert.equal((err?.event as { event?: string }).event, event);
    });
  }

  it('infinite loop after `await null`: the first entry’s timeout covers its microtasks', async () => {
    const { hostile, ms } = await runScenario(h, {
      team: T.afterAwait,
      events: [makeEvent('$loop_after_await_null', {}, T.afterAwait), makeEvent('ok', {}, T.afterAwait)],
      slow: true,
    });
    assert.equal(props(hostile[1]).after_await, 'ok');
    assert.ok(ms < 7500, `took ${ms} ms`);
    const err = await h.store.getError(cfg(T.afterAwait));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /CPU time limit of 300 ms/);
  });

  it('never-settling promise: wall-clock deadline, isolate disposed and recreated', async () => {
    const vm = h.manager.vmFor(cfg(T.hang))!;
    const gen = vm.generation;
    const { hostile } = await runScenario(h, {
      team: T.hang,
      events: [makeEvent('$hang', {}, T.hang), makeEvent('ok', {}, T.hang)],
      slow: true,
    });
    assert.equal(props(hostile[1]).hung, false);
    assert.ok(vm.generation >= gen + 2);
    const err = await h.store.getError(cfg(T.hang));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /did not finish within 4000 ms \(wall-clock deadline\)/);
  });

  it('huge return value: refused by size before the host parses it; the isolate is kept', async () => {
    const vm = h.manager.vmFor(cfg(T.huge))!;
    const gen = vm.generation;
    const { hostile } = await runScenario(h, {
      team: T.huge,
      events: [makeEvent('$huge', {}, T.huge), makeEvent('ok', {}, T.huge)],
    });
    assert.equal(props(hostile[0]).blob, undefined);
    assert.equal(props(hostile[1]).small, true);
    assert.equal(vm.generation, gen);
    const err = await h.store.getError(cfg(T.huge));
    assert.equal(err?.name, 'ResultTooLargeError');
    assert.match(err?.message ?? '', /limit 1048576/);
  });

  it('deep recursion (sync and async): RangeError for that event only, isolate kept', async () => {
    const vm = h.manager.vmFor(cfg(T.recursion))!;
    const gen = vm.generation;
    for (const ev of ['$recurse', '$recurse_async']) {
      const { hostile } = await runScenario(h, {
        team: T.recursion,
        events: [makeEvent(ev, {}, T.recursion), makeEvent('ok', {}, T.recursion)],
      });
      assert.equal(props(hostile[0]).recursed, undefined);
      assert.equal(props(hostile[1]).recursed, false);
      const err = await h.store.getError(cfg(T.recursion));
      assert.equal(err?.name, 'RangeError', ev);
      assert.match(err?.message ?? '', /Maximum call stack size exceeded/);
    }
    assert.equal(vm.generation, gen);
  });

  it('a throw: the error as thrown, with the event, and the isolate kept', async () => {
    const { hostile } = await runScenario(h, {
      team: T.throws,
      events: [makeEvent('$throw', {}, T.throws), makeEvent('ok', {}, T.throws)],
    });
    assert.equal(props(hostile[1]).survived, true);
    const err = await h.store.getError(cfg(T.throws));
    assert.equal(err?.name, 'TypeError');
    assert.equal(err?.message, 'plugin exploded on purpose');
  });

  it('console flood: rate-limited inside the isolate (at most ~1000 lines/s cross), drops reported, event processed', async () => {
    h.logs.length = 0;
    const { hostile } = await runScenario(h, { team: T.flood, events: [makeEvent('$flood', {}, T.flood)] });
    assert.equal(props(hostile[0]).flooded, true);
    // ignored callbacks arrive asynchronously; drops are reported once a second
    const isReport = (l: (typeof h.logs)[number]): boolean =>
      l.level === 'warn' &&
      /dropped \d+ console line\(s\) over the rate limit of 1000\/s/.test(l.message) &&
      l.pluginConfigId === cfg(T.flood);
    for (let i = 0; i < 100 && !h.logs.some(isReport); i++) await new Promise((r) => setTimeout(r, 30));
    const lines = h.logs.filter((l) => l.source === 'console' && l.pluginConfigId === cfg(T.flood));
    assert.ok(lines.length > 0 && lines.length <= 3000, `${lines.length} console lines crossed`);
    for (const l of lines.slice(0, 5)) assert.ok(l.message.length <= 4096 + 64);
    const reports = h.logs.filter(isReport);
    assert.equal(reports.length, 1);
    const dropped = Number(/dropped (\d+)/.exec(reports[0].message)![1]);
    assert.equal(dropped + lines.length, 200_000, 'every line is either logged or counted as dropped');
  });

  it('an error with a huge message, name and stack (String.prototype.slice sabotaged) is stored truncated', async () => {
    await runScenario(h, {
      team: T.bigError,
      events: [makeEvent('$big_error', {}, T.bigError), makeEvent('ok', {}, T.bigError)],
    });
    const err = await h.store.getError(cfg(T.bigError));
    assert.ok(err);
    assert.ok(err.message.length <= 4096 + 64, `message ${err.message.length}`);
    assert.ok((err.stack ?? '').length <= 16384 + 64, `stack ${(err.stack ?? '').length}`);
    assert.ok((err.name ?? '').length <= 256, `name ${(err.name ?? '').length}`);
    assert.match(err.message, /^m+…\[truncated \d+ chars\]$/);
    // and the config still works with its sabotaged String.prototype
    const [e] = await h.manager.runChain(T.bigError, [makeEvent('ok', {}, T.bigError)]);
    assert.equal(props(e).big_error, false);
  });

  it('fire-and-forget continuation that loops after its call returned: stopped, reported on the next call', async () => {
    h.logs.length = 0;
    const vm = h.manager.vmFor(cfg(T.background))!;
    const gen = vm.generation;
    const { hostile } = await runScenario(h, {
      team: T.background,
      events: [makeEvent('$loop_in_background', {}, T.background)],
    });
    assert.equal(props(hostile[0]).after_await, 'ok', 'processEvent itself returned normally');
    for (let i = 0; i < 100 && !h.logs.some((l) => /plugin code that ran between calls failed/.test(l.message)); i++)
      await new Promise((r) => setTimeout(r, 30));
    const warn = h.logs.find((l) => /plugin code that ran between calls failed/.test(l.message));
    assert.ok(warn, 'the background failure is logged at once');
    assert.equal(warn.pluginConfigId, cfg(T.background));
    // the next call recreates the isolate and records the error
    const { hostile: next } = await runScenario(h, { team: T.background, events: [makeEvent('ok', {}, T.background)] });
    assert.equal(props(next[0]).after_await, 'ok');
    assert.ok(vm.generation > gen);
    const err = await h.store.getError(cfg(T.background));
    assert.equal(err?.name, 'TimeoutError');
    assert.match(err?.message ?? '', /plugin code \(resumed after a host call\) exceeded the CPU time limit/);
  });

  it('after all of the above: every config is ready and every team still works', async () => {
    for (const team of Object.values(T)) {
      assert.deepEqual(
        h.manager.configsFor(team).map((c) => c.state),
        ['ready', 'ready'],
        `team ${team}`,
      );
      const [e] = await h.manager.runChain(team, [makeEvent('fine', {}, team)]);
      assert.deepEqual(props(e).trail, ['after'], `team ${team}`);
    }
  });
});

// Own manager with a generous CPU limit, so that the memory limit (not the CPU timeout) is what stops the plugin
// even when the machine is busy.
describe('hostile plugins: heap bombs (clean memory-limit errors)', () => {
  let srv: TestServer;
  let h: Harness;
  const T = { grow: 1, growAfterFetch: 2 };
  const cfg = (team: number): number => h.manager.configsFor(team)[0].id;
  before(async () => {
    srv = await startServer();
    h = await harness(
      [
        { url: 'file:trail.js', name: 'good', teamId: GOOD, config: { tag: 'good' } },
        { url: 'file:hostile/heap-growth.js', name: 'heap growth', teamId: T.grow, order: 1 },
        { url: 'file:trail.js', name: 'trail', teamId: T.grow, order: 2, config: { tag: 'after' } },
        {
          url: 'file:hostile/after-await.js',
          name: 'grow after fetch',
          teamId: T.growAfterFetch,
          order: 1,
          config: { url: `${srv.origin}/json` },
        },
        { url: 'file:trail.js', name: 'trail', teamId: T.growAfterFetch, order: 2, config: { tag: 'after' } },
      ],
      { memoryLimitMb: 16, cpuTimeoutMs: 15_000, wallTimeoutMs: 30_000, maxResultBytes: 1024 * 1024 },
      { fetch: { allow: '127.0.0.1' } },
    );
  });
  after(async () => {
    await closeHarness(h);
    await srv?.close();
  });

  for (const [team, event, prop] of [
    [T.grow, '$grow', 'grown'],
    [T.growAfterFetch, '$grow_after_fetch', 'after_await'],
  ] as const) {
    it(`${event}: MemoryLimitError, isolate recreated, other events and teams unaffected`, async () => {
      const vm = h.manager.vmFor(cfg(team))!;
      const gen = vm.generation;
      const { hostile } = await runScenario(h, {
        team,
        events: [makeEvent(event, {}, team), makeEvent('ok', {}, team)],
        slow: true,
      });
      assert.equal(props(hostile[0])[prop], undefined);
      assert.ok(props(hostile[1])[prop] === false || props(hostile[1])[prop] === 'ok');
      assert.ok(vm.generation >= gen + 2, 'recreated after the batch and after the rerun');
      const err = await h.store.getError(cfg(team));
      assert.equal(err?.name, 'MemoryLimitError');
      assert.match(err?.message ?? '', /exceeded the memory limit of 16 MB/);
      assert.ok((await vm.heapUsedBytes())! < 8 * 1024 * 1024);
    });
  }
});
