import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { closeHarness, FAST_LIMITS, harness, type Harness, logSink, makeEvent, props, until } from './helpers';

/**
 * Idle isolates are evicted (teardownPlugin, then disposed) and recreated on the next call (load + setupPlugin),
 * through a real PluginManager: processEvent, jobs and a failing setupPlugin after the wake.
 */

const IDLE_MS = 300;
const FAIL_AFTER = Date.now() + 3000;

describe('idle isolates are evicted and recreated on demand', () => {
  let h: Harness;
  const log = logSink();
  before(async () => {
    h = await harness(
      [
        {
          name: 'counter',
          teamId: 1,
          source: `
            let setups = 0
            function setupPlugin({ global }) { setups++; global.setups = setups; console.log('setup') }
            function teardownPlugin() { console.log('teardown') }
            function processEvent(event, { global }) { event.properties.setups = global.setups; return event }
            const jobs = { ping: (payload) => console.log('job ' + payload.n) }
            module.exports = { setupPlugin, teardownPlugin, processEvent, jobs }`,
        },
        {
          name: 'minutely',
          teamId: 2,
          source: `
            function runEveryMinute() {}
            function processEvent(event) { return event }`,
        },
        {
          name: 'slow teardown',
          teamId: 4,
          source: `
            function setupPlugin() { console.log('setup') }
            function teardownPlugin() { const end = Date.now() + 100; while (Date.now() < end) {} console.log('teardown') }
            function processEvent(event) { return event }
            const jobs = { ping: () => console.log('job') }
            module.exports = { setupPlugin, teardownPlugin, processEvent, jobs }`,
        },
        {
          name: 'fails after the first setup',
          teamId: 3,
          // A new isolate starts from scratch: only a time known from outside tells the second setup from the first.
          config: { failAfter: String(FAIL_AFTER) },
          source: `
            function setupPlugin({ config }) { if (Date.now() > Number(config.failAfter)) throw new Error('setup failed on wake') }
            function processEvent(event) { event.properties.seen = true; return event }`,
        },
      ],
      FAST_LIMITS,
      { isolateIdleMs: IDLE_MS, pluginLog: log, setupRetries: 0 },
    );
  });
  after(() => closeHarness(h));

  it('an idle config is torn down and evicted; the next batch wakes it with setupPlugin run again', async () => {
    const [counter] = h.ids;
    const first = await h.manager.runChain(1, [makeEvent('a')]);
    assert.equal(props(first[0]).setups, 1);
    const vm = h.manager.vmFor(counter!.configId)!;
    await until(() => vm.hibernated, 'the idle isolate to be evicted', 5000);
    assert.equal(await vm.heapUsedBytes(), null, 'no isolate while evicted');
    assert.deepEqual(log.console(counter!.configId), ['setup', 'teardown']);
    assert.equal(h.manager.configsFor(1)[0]?.state, 'ready', 'an evicted config still counts as ready');
    assert.ok(h.logs.some((l) => /isolate evicted after \d+ s without calls/.test(l.message)));

    // The module-level counter starts over in the new isolate: setupPlugin ran in a fresh one.
    const second = await h.manager.runChain(1, [makeEvent('b'), makeEvent('c')]);
    assert.deepEqual(
      second.map((e) => props(e).setups),
      [1, 1],
    );
    assert.equal(vm.hibernated, false);
    assert.ok((await vm.heapUsedBytes())! > 0);
    assert.deepEqual(log.console(counter!.configId), ['setup', 'teardown', 'setup']);
  });

  it('a config kept busy is not evicted', async () => {
    const [counter] = h.ids;
    const vm = h.manager.vmFor(counter!.configId)!;
    await until(() => vm.hibernated, 'eviction', 5000);
    await h.manager.runChain(1, [makeEvent('wake')]);
    for (let i = 0; i < 8; i++) {
      await sleep(IDLE_MS / 3);
      await h.manager.runChain(1, [makeEvent(`busy-${i}`)]);
      assert.equal(vm.hibernated, false, `evicted while in use (round ${i})`);
    }
  });

  it('a job wakes an evicted config', async () => {
    const [counter] = h.ids;
    const vm = h.manager.vmFor(counter!.configId)!;
    await until(() => vm.hibernated, 'eviction', 5000);
    const outcome = await h.manager.runTask(counter!.configId, 'job', 'ping', JSON.stringify({ n: 7 }));
    assert.equal(outcome?.failed, 0);
    assert.equal(outcome?.interrupted, null);
    assert.ok(log.console(counter!.configId).includes('job 7'));
    assert.equal(vm.hibernated, false);
  });

  it('a job arriving during the teardownPlugin of an eviction waits, then runs in a new isolate after setupPlugin', async () => {
    const [, , slow] = h.ids;
    const vm = h.manager.vmFor(slow!.configId)!;
    await h.manager.runChain(4, [makeEvent('wake', {}, 4)]); // live (woken if the sweep evicted it already)
    assert.equal(vm.hibernated, false);
    const before = log.console(slow!.configId).length;
    const evicting = vm.hibernate();
    await sleep(30); // teardownPlugin is busy for 100 ms now
    const outcome = await h.manager.runTask(slow!.configId, 'job', 'ping', '{}');
    assert.equal(await evicting, true);
    assert.equal(outcome?.failed, 0);
    assert.deepEqual(log.console(slow!.configId).slice(before), ['teardown', 'setup', 'job']);
    assert.equal(vm.hibernated, false);
  });

  it('a config with runEveryMinute keeps its isolate', async () => {
    const [, minutely] = h.ids;
    await h.manager.runChain(2, [makeEvent('m', {}, 2)]);
    await sleep(IDLE_MS * 4);
    assert.equal(h.manager.vmFor(minutely!.configId)!.hibernated, false);
  });

  it('a setupPlugin failure on wake is recorded and the events pass through unchanged', async () => {
    const [, , , failing] = h.ids;
    // Loaded (setupPlugin passed) at start, unused since: evicted.
    const vm = h.manager.vmFor(failing!.configId)!;
    await until(() => vm.hibernated, 'eviction', 5000);
    await sleep(Math.max(0, FAIL_AFTER + 10 - Date.now()));
    const second = await h.manager.runChain(3, [makeEvent('y', {}, 3)]);
    assert.equal(props(second[0]).seen, undefined, 'the plugin did not run');
    assert.equal(vm.state, 'failed');
    const error = await h.store.getError(failing!.configId);
    assert.match(String(error?.message), /setup failed on wake/);
  });
});

const CHAIN_STEP = `
  function setupPlugin({ config }) { if (config.failSetup) throw new Error('setup failed on first use'); console.log('setup') }
  function teardownPlugin() { console.log('teardown') }
  function processEvent(event, { config }) { event.properties.chain = [...(event.properties.chain || []), config.name]; return event }
  function runEveryHour() { console.log('hour') }
  module.exports = { setupPlugin, teardownPlugin, processEvent, runEveryHour }`;

describe("lazyIsolates: an isolate is created on its config's first call", () => {
  let h: Harness;
  const log = logSink();
  const enters: Array<[number, number]> = [];
  before(async () => {
    h = await harness(
      [
        { name: 'second', teamId: 1, order: 1, config: { name: 'second' }, source: CHAIN_STEP },
        { name: 'first', teamId: 1, order: 0, config: { name: 'first' }, source: CHAIN_STEP },
        {
          name: 'exporter',
          teamId: 2,
          source: `function setupPlugin() { console.log('setup') }\nfunction onEvent() {}\nmodule.exports = { setupPlugin, onEvent }`,
        },
        { name: 'failing setup', teamId: 3, config: { name: 'failing', failSetup: 'yes' }, source: CHAIN_STEP },
        { name: 'hourly', teamId: 4, config: { name: 'hourly' }, source: CHAIN_STEP },
        { name: 'broken', teamId: 5, source: `throw new Error('broken at load')` },
      ],
      FAST_LIMITS,
      {
        lazyIsolates: true,
        pluginLog: log,
        setupRetries: 0,
        eventSinks: true,
        onEnter: (id, events) => void enters.push([id, events.length]),
      },
    );
  });
  after(() => closeHarness(h));

  it('no isolate at start, except for configs with onEvent/exportEvents/runEveryMinute; a broken load is reported at start', async () => {
    const [second, first, exporter, failing, , broken] = h.ids;
    for (const c of [second, first, failing]) {
      const vm = h.manager.vmFor(c!.configId)!;
      assert.equal(vm.hibernated, true);
      assert.equal(await vm.heapUsedBytes(), null, 'no isolate before the first call');
      assert.deepEqual(log.console(c!.configId), [], 'setupPlugin has not run');
    }
    assert.deepEqual(
      h.manager.configsFor(1).map((c) => [c.name, c.state]),
      [
        ['first', 'ready'],
        ['second', 'ready'],
      ],
    );
    assert.deepEqual(log.console(exporter!.configId), ['setup'], 'onEvent configs start at load');
    assert.equal(h.manager.configsFor(5)[0]?.state, 'failed');
    assert.match(String((await h.store.getError(broken!.configId))?.message), /broken at load/);
    assert.equal(await h.store.getError(failing!.configId), null, 'setupPlugin runs on first use, not at start');
  });

  it("the first batch creates the chain's isolates (setupPlugin first), in chain order, attributed to the config", async () => {
    const [second, first] = h.ids;
    enters.length = 0;
    const out = await h.manager.runChain(1, [makeEvent('a'), makeEvent('b')]);
    assert.deepEqual(
      out.map((e) => props(e).chain),
      [
        ['first', 'second'],
        ['first', 'second'],
      ],
    );
    assert.deepEqual(log.console(first!.configId), ['setup']);
    assert.deepEqual(log.console(second!.configId), ['setup']);
    // Each config: its load + setupPlugin entered without events, then its processEvent with both.
    assert.deepEqual(enters, [
      [first!.configId, 0],
      [first!.configId, 2],
      [second!.configId, 0],
      [second!.configId, 2],
    ]);
    assert.ok(h.logs.some((l) => /plugin first loaded \(config \d+, team 1\) on first use/.test(l.message)));
    const again = await h.manager.runChain(1, [makeEvent('c')]);
    assert.deepEqual(props(again[0]).chain, ['first', 'second']);
    assert.equal(log.console(first!.configId).filter((l) => l === 'setup').length, 1, 'created once');
  });

  it('calls arriving together share one creation', async () => {
    const [, , , , hourly] = h.ids;
    const [a, b] = await Promise.all([
      h.manager.runChain(4, [makeEvent('x', {}, 4)]),
      h.manager.runChain(4, [makeEvent('y', {}, 4)]),
    ]);
    assert.deepEqual([props(a[0]).chain, props(b[0]).chain], [['hourly'], ['hourly']]);
    assert.deepEqual(
      log.console(hourly!.configId).filter((l) => l === 'setup'),
      ['setup'],
    );
  });

  it('a setupPlugin failure on first use is recorded and the events pass through unchanged', async () => {
    const [, , , failing] = h.ids;
    const out = await h.manager.runChain(3, [makeEvent('z', {}, 3)]);
    assert.equal(props(out[0]).chain, undefined, 'the plugin did not run');
    assert.equal(h.manager.vmFor(failing!.configId)!.state, 'failed');
    assert.match(String((await h.store.getError(failing!.configId))?.message), /setup failed on first use/);
  });
});

describe("lazyIsolates: a scheduled task creates its config's isolate", () => {
  let h: Harness;
  const log = logSink();
  before(async () => {
    h = await harness([{ name: 'hourly', teamId: 1, config: { name: 'hourly' }, source: CHAIN_STEP }], FAST_LIMITS, {
      lazyIsolates: true,
      pluginLog: log,
      setupRetries: 0,
    });
  });
  after(() => closeHarness(h));

  it('runEveryHour runs after setupPlugin in a new isolate', async () => {
    const [hourly] = h.ids;
    assert.ok(
      h.manager.liveConfigs().some((c) => c.id === hourly!.configId && c.vm.exports.runEveryHour),
      'the scheduler sees it',
    );
    const outcome = await h.manager.runTask(hourly!.configId, 'schedule', 'runEveryHour');
    assert.equal(outcome?.failed, 0);
    assert.deepEqual(log.console(hourly!.configId), ['setup', 'hour']);
  });
});

describe('isolateMemoryBudgetMb: the least recently used isolates are evicted past the budget', () => {
  const TEAMS = [11, 12, 13, 14, 15, 16];
  let h: Harness;
  const log = logSink();
  before(async () => {
    h = await harness(
      TEAMS.flatMap((teamId) => [
        { name: `a${teamId}`, teamId, order: 0, config: { name: `a${teamId}` }, source: CHAIN_STEP },
        { name: `b${teamId}`, teamId, order: 1, config: { name: `b${teamId}` }, source: CHAIN_STEP },
      ]),
      FAST_LIMITS,
      // ~1.4 MB per isolate of this plugin: 4 MB holds two or three of the twelve.
      { lazyIsolates: true, isolateMemoryBudgetMb: 4, isolateBudgetMinIdleMs: 0, pluginLog: log, setupRetries: 0 },
    );
  });
  after(() => closeHarness(h));

  const live = (): number => h.ids.filter((c) => !h.manager.vmFor(c.configId)!.hibernated).length;

  it('events still go through their whole chain while isolates are evicted and recreated (setupPlugin again)', async () => {
    for (let round = 0; round < 2; round++) {
      for (const teamId of TEAMS) {
        const out = await h.manager.runChain(teamId, [
          makeEvent(`r${round}`, {}, teamId),
          makeEvent(`s${round}`, {}, teamId),
        ]);
        assert.deepEqual(
          out.map((e) => props(e).chain),
          [
            [`a${teamId}`, `b${teamId}`],
            [`a${teamId}`, `b${teamId}`],
          ],
        );
      }
      await until(() => live() <= 3, 'the budget to be enforced', 5000);
    }
    assert.ok(
      h.logs.some((l) =>
        /isolate evicted \(least recently used while the isolates held more than the 4 MB budget\)/.test(l.message),
      ),
    );
    // The first team's configs were used least recently after round one: evicted, then recreated in round two.
    const [a11] = h.ids;
    assert.deepEqual(log.console(a11!.configId).slice(0, 3), ['setup', 'teardown', 'setup']);
  });
});

describe('isolateMemoryBudgetMb: isolates in use are kept over the budget', () => {
  let h: Harness;
  before(async () => {
    h = await harness(
      [11, 12, 13].map((teamId) => ({
        name: `c${teamId}`,
        teamId,
        config: { name: `c${teamId}` },
        source: CHAIN_STEP,
      })),
      FAST_LIMITS,
      { lazyIsolates: true, isolateMemoryBudgetMb: 1, isolateBudgetMinIdleMs: 60_000, setupRetries: 0 },
    );
  });
  after(() => closeHarness(h));

  it('no isolate with a call within isolateBudgetMinIdleMs is evicted (no recreation per call)', async () => {
    for (const teamId of [11, 12, 13]) await h.manager.runChain(teamId, [makeEvent('x', {}, teamId)]);
    await sleep(300);
    assert.deepEqual(
      h.ids.map((c) => h.manager.vmFor(c.configId)!.hibernated),
      [false, false, false],
    );
    assert.ok(!h.logs.some((l) => /isolate evicted/.test(l.message)));
  });
});
