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
    assert.deepEqual(second.map((e) => props(e).setups), [1, 1]);
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
