import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { EXPORT_RETRY_JOB } from '../../src/plugins/manager/plugin-manager';
import { closeHarness, FAST_LIMITS, harness, type Harness, logSink, makeEvent, props, until } from './helpers';

/**
 * The plugin API beyond processEvent, through a real PluginManager and real isolates: onEvent, exportEvents
 * buffering and RetryError, scheduled functions, jobs, setupPlugin retries, host modules, missing host APIs.
 * (meta.cache/storage/jobs against Redis and the database: test/integration/plugin-api.test.ts.)
 */

const CHAIN_THEN_EXPORT = [
  {
    name: 'labeller',
    order: 0,
    source: `
      function processEvent(event) {
        if (event.event === 'drop') return null
        event.properties.labelled = true
        return event
      }`,
  },
  {
    name: 'exporter',
    order: 1,
    config: {
      exportEventsBufferBytes: '1000000',
      exportEventsBufferSeconds: '1',
      exportEventsToIgnore: 'ignored, $snapshot',
    },
    source: `
      async function onEvent(event) { console.log('onEvent ' + event.event + ' ' + event.properties.labelled) }
      async function exportEvents(events) { console.log('export ' + events.map((e) => e.event).join(',')) }`,
  },
];

describe('plugin API: onEvent and exportEvents', () => {
  let h: Harness;
  const log = logSink();
  before(async () => {
    h = await harness(CHAIN_THEN_EXPORT, FAST_LIMITS, { eventSinks: true, pluginLog: log });
  });
  after(() => closeHarness(h));

  it('onEvent sees each event after the whole chain, dropped events never; exportEvents gets one buffered batch without ignored events', async () => {
    const exporter = h.ids[1].configId;
    const out = await h.manager.runChain(1, [makeEvent('a'), makeEvent('drop'), makeEvent('ignored'), makeEvent('b')]);
    assert.equal(out[1], null);
    assert.equal(props(out[0]).labelled, true);
    await until(() => log.console(exporter).filter((l) => l.startsWith('onEvent')).length === 3, 'three onEvent calls');
    assert.deepEqual(
      log.console(exporter).filter((l) => l.startsWith('onEvent')),
      ['onEvent a true', 'onEvent ignored true', 'onEvent b true'],
    );
    // The buffer flushes after exportEventsBufferSeconds (1 s), as one call.
    await until(() => log.console(exporter).some((l) => l.startsWith('export')), 'the export', 4000);
    assert.deepEqual(
      log.console(exporter).filter((l) => l.startsWith('export')),
      ['export a,b'],
    );
  });

  it('the output does not wait for onEvent: a chain call returns while onEvent is still queued', async () => {
    const before = log.console(h.ids[1].configId).length;
    const out = await h.manager.runChain(1, [makeEvent('c')]);
    assert.equal(props(out[0]).labelled, true);
    assert.equal(log.console(h.ids[1].configId).length, before, 'onEvent had not run yet when the chain returned');
    await until(() => log.console(h.ids[1].configId).length > before, 'onEvent of c');
  });
});

describe('plugin API: exportEvents buffer by size, RetryError retried through a job', () => {
  let h: Harness;
  const log = logSink();
  const enqueued: Array<{ pluginConfigId: number; teamId: number; name: string; payloadJson: string; runAt: Date }> =
    [];
  before(async () => {
    h = await harness(
      [
        {
          name: 'flaky exporter',
          // 600 bytes: each event flushes on its own; the first two exports ask for a retry.
          config: { exportEventsBufferBytes: '600' },
          source: `
            import { RetryError } from '@posthog/plugin-scaffold'
            export async function exportEvents(events, meta) {
              const attempt = Number(events[0].properties.attempt || 0)
              console.log('export ' + events.map((e) => e.event).join(','))
              if (events[0].event === 'retry-me') throw new RetryError('warehouse busy')
              if (events[0].event === 'broken') throw new Error('bad credentials')
            }`,
        },
      ],
      FAST_LIMITS,
      { eventSinks: true, pluginLog: log, jobs: { enqueue: async (j) => (enqueued.push(j), enqueued.length) } },
    );
  });
  after(() => closeHarness(h));

  it('a RetryError becomes a job 6 s later with the batch; the job re-exports it; a plain error is recorded, not retried', async () => {
    const id = h.ids[0].configId;
    const t0 = Date.now();
    await h.manager.runChain(1, [makeEvent('retry-me', { properties: { pad: 'x'.repeat(600) } })]);
    await until(() => enqueued.length === 1, 'the retry job');
    const job = enqueued[0];
    assert.equal(job.name, EXPORT_RETRY_JOB);
    assert.equal(job.pluginConfigId, id);
    const delay = job.runAt.getTime() - t0;
    assert.ok(delay >= 6000 && delay < 8000, `first retry 2^1·3 s later, got ${delay} ms`);
    const payload = JSON.parse(job.payloadJson) as { events: string[]; retriesPerformedSoFar: number };
    assert.equal(payload.retriesPerformedSoFar, 0);
    assert.equal(JSON.parse(payload.events[0]).event, 'retry-me');

    // The job runs: the plugin still says retry, so the next one is 2^2·3 s later.
    const outcome = await h.manager.runTask(id, 'job', EXPORT_RETRY_JOB, job.payloadJson);
    assert.equal(outcome?.retry, true);
    assert.equal(enqueued.length, 2);
    assert.equal((JSON.parse(enqueued[1].payloadJson) as { retriesPerformedSoFar: number }).retriesPerformedSoFar, 1);
    assert.ok(enqueued[1].runAt.getTime() - Date.now() > 10_000);

    await h.manager.runChain(1, [makeEvent('broken', { properties: { pad: 'x'.repeat(600) } })]);
    await until(
      () => log.entries.some((e) => e.source === 'PLUGIN' && /bad credentials/.test(e.message)),
      'the error log entry',
    );
    assert.equal(enqueued.length, 2, 'a plain error is not retried');
    const row = (await h.store.listConfigs()).find((c) => c.id === id)!;
    assert.match(JSON.stringify(row.error), /bad credentials/);
  });

  it('after the 15th retry the batch is given up, with a log entry', async () => {
    const id = h.ids[0].configId;
    const before = enqueued.length;
    const payload = JSON.stringify({ events: [JSON.stringify(makeEvent('retry-me'))], retriesPerformedSoFar: 14 });
    await h.manager.runTask(id, 'job', EXPORT_RETRY_JOB, payload);
    assert.equal(enqueued.length, before, 'no 16th retry');
    assert.ok(
      log.entries.some((e) => e.source === 'SYSTEM' && /gave up on 1 event\(s\) after 15 retries/.test(e.message)),
    );
  });
});

describe('plugin API: scheduled functions, jobs, background limits', () => {
  let h: Harness;
  const log = logSink();
  before(async () => {
    h = await harness(
      [
        {
          name: 'worker',
          source: `
            let runs = 0
            async function runEveryMinute(meta) { runs++; console.log('minute ' + runs + ' ' + meta.config.label) }
            function runEveryHour() { throw new Error('hourly failed') }
            const jobs = {
              greet: async (payload, meta) => console.log('hello ' + payload.name),
              hang: () => new Promise(() => {}),
              spin: () => { for (;;) {} },
            }
            function processEvent(event) { event.properties.runs = runs; return event }
            module.exports = { runEveryMinute, runEveryHour, jobs, processEvent }`,
          config: { label: 'L' },
        },
      ],
      { ...FAST_LIMITS, wallTimeoutMs: 2000 },
      // The task deadline far above the 200 ms CPU limit: on a loaded machine a spinning job must still meet the CPU
      // limit first.
      { eventSinks: true, pluginLog: log, taskWallTimeoutMs: 2000 },
    );
  });
  after(() => closeHarness(h));

  it('exports are discovered: scheduled functions and job names', () => {
    const vm = h.manager.liveConfigs()[0].vm;
    assert.equal(vm.exports.runEveryMinute, true);
    assert.equal(vm.exports.runEveryDay, false);
    assert.deepEqual(vm.exports.jobs, ['greet', 'hang', 'spin']);
  });

  it('a scheduled function runs with meta and keeps its state; its failure is recorded', async () => {
    const id = h.ids[0].configId;
    assert.equal((await h.manager.runTask(id, 'schedule', 'runEveryMinute'))?.failed, 0);
    await h.manager.runTask(id, 'schedule', 'runEveryMinute');
    await until(() => log.console(id).includes('minute 2 L'), 'two runs');
    assert.equal(props((await h.manager.runChain(1, [makeEvent('x')]))[0]).runs, 2);
    const failed = await h.manager.runTask(id, 'schedule', 'runEveryHour');
    assert.equal(failed?.error?.message, 'hourly failed');
    assert.equal((await h.manager.runTask(id, 'schedule', 'runEveryDay'))?.error?.name, 'TypeError');
  });

  it('a job gets its payload; an unknown job is an error; a config that is not loaded gives null', async () => {
    const id = h.ids[0].configId;
    assert.equal((await h.manager.runTask(id, 'job', 'greet', '{"name":"ada"}'))?.failed, 0);
    await until(() => log.console(id).includes('hello ada'), 'the job');
    assert.match((await h.manager.runTask(id, 'job', 'nope', 'null'))?.error?.message ?? '', /no job named "nope"/);
    assert.equal(await h.manager.runTask(id + 100, 'job', 'greet', 'null'), null);
  });

  it('a job that never settles is abandoned at the task deadline; events keep flowing meanwhile', async () => {
    const id = h.ids[0].configId;
    const hang = h.manager.runTask(id, 'job', 'hang', 'null');
    const out = await h.manager.runChain(1, [makeEvent('during')]);
    assert.equal(props(out[0]).runs, 2);
    const r = await hang;
    assert.equal(r?.interrupted, 'deadline');
    assert.equal(r?.error?.name, 'TimeoutError');
  });

  it('a job that loops hits the CPU limit; the isolate is recreated and events still run', async () => {
    const id = h.ids[0].configId;
    const r = await h.manager.runTask(id, 'job', 'spin', 'null');
    assert.equal(r?.interrupted, 'limit');
    const out = await h.manager.runChain(1, [makeEvent('after')]);
    assert.equal(props(out[0]).runs, 0, 'a fresh isolate (module state reset)');
    assert.equal(h.manager.liveConfigs()[0].vm.generation, 2);
  });
});

describe('plugin API: setupPlugin retries with backoff, then disable', () => {
  let server: http.Server;
  let port = 0;
  let calls = 0;
  let h: Harness | undefined;
  before(async () => {
    server = http.createServer((_req, res) => {
      calls++;
      // The first two setups find the service down.
      res.writeHead(calls <= 2 ? 503 : 200).end(calls <= 2 ? 'down' : 'ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await closeHarness(h);
    server.close();
  });

  it('a setupPlugin that fails twice is retried and then runs; events skip it meanwhile', async () => {
    const log = logSink();
    h = await harness(
      [
        {
          name: 'needs service',
          source: `
            async function setupPlugin(meta) {
              const r = await fetch('http://127.0.0.1:${port}/')
              if (!r.ok) throw new Error('service unavailable: ' + r.status)
            }
            function processEvent(e) { e.properties.setup = 'done'; return e }`,
        },
        {
          name: 'always fails',
          order: 1,
          source: `function setupPlugin() { throw new Error('bad key') }\nfunction processEvent(e) { return e }`,
        },
      ],
      FAST_LIMITS,
      { fetch: { allow: '127.0.0.1' }, setupRetryBaseMs: 50, setupRetries: 3, pluginLog: log },
    );
    const first = await h.manager.runChain(1, [makeEvent('early')]);
    assert.equal(props(first[0]).setup, undefined, 'skipped while its setup is failing');
    await until(() => h!.manager.configsFor(1)[0].state === 'ready', 'the retried setup', 5000);
    assert.equal(calls, 3);
    assert.equal(props((await h.manager.runChain(1, [makeEvent('late')]))[0]).setup, 'done');
    const [ok, bad] = await h.store.listConfigs();
    assert.equal(ok.error, null, 'the error is cleared once setup worked');
    assert.ok(log.entries.some((e) => e.pluginConfigId === ok.id && /after retrying setupPlugin/.test(e.message)));

    // 1 attempt + 3 retries (50, 100, 200 ms), then disabled with its error.
    await until(
      () => log.entries.some((e) => e.pluginConfigId === bad.id && /Plugin disabled after 4 failed/.test(e.message)),
      'the disable',
      5000,
    );
    const rows = await h.store.listConfigs();
    const disabled = rows.find((c) => c.id === bad.id)!;
    assert.equal(disabled.enabled, false);
    assert.match(JSON.stringify(disabled.error), /bad key/);
  });
});

describe('plugin API: modules and missing host APIs', () => {
  let h: Harness;
  before(async () => {
    h = await harness(
      [
        {
          name: 'uses apis',
          source: `
            const scaffold = require('@posthog/plugin-scaffold')
            async function processEvent(event, meta) {
              const errors = []
              for (const call of [() => meta.cache.get('k', 1), () => meta.storage.get('k'), () => meta.jobs.x({}).runNow(), () => posthog.capture('e')]) {
                try { await call() } catch (e) { errors.push(e.name + ': ' + e.message) }
              }
              event.properties.errors = errors
              event.properties.retryErrorIsGlobal = RetryError === scaffold.RetryError && new RetryError('x') instanceof Error
              return event
            }`,
        },
      ],
      FAST_LIMITS,
      { unavailable: { cache: 'no Redis configured (set REDIS_URL)' } },
    );
  });
  after(() => closeHarness(h));

  it('APIs this worker does not offer reject with the reason; RetryError comes from the scaffold module', async () => {
    const p = props((await h.manager.runChain(1, [makeEvent('x')]))[0]);
    assert.deepEqual(p.errors, [
      'CacheError: meta.cache is not available in this worker: no Redis configured (set REDIS_URL)',
      'StorageError: meta.storage is not available in this worker: not configured',
      'JobError: meta.jobs is not available in this worker: not configured',
      'CaptureError: posthog.capture is not available in this worker: not configured',
    ]);
    assert.equal(p.retryErrorIsGlobal, true);
  });

  it('other modules are refused at load with the module name', async () => {
    const h2 = await harness([
      { name: 'left-pad user', source: `const pad = require('left-pad')\nfunction processEvent(e) { return e }` },
    ]);
    try {
      assert.equal(h2.manager.configsFor(1)[0].state, 'failed');
      const [row] = await h2.store.listConfigs();
      assert.match(JSON.stringify(row.error), /Cannot import 'left-pad'/);
    } finally {
      await closeHarness(h2);
    }
  });
});

describe('plugin API: teardownPlugin on reload and on shutdown, bounded', () => {
  // The test's own timeout is the bound: close() would never resolve if it waited for the hanging teardown.
  it(
    'a changed config tears down the old isolate; unchanged ones keep theirs; shutdown tears down the rest, even one that hangs',
    { timeout: 30_000 },
    async () => {
      const log = logSink();
      const h = await harness(
        [
          {
            name: 'changes',
            config: { v: '1' },
            source: `function teardownPlugin(meta) { console.log('teardown v' + meta.config.v) }\nfunction processEvent(e) { return e }`,
          },
          {
            name: 'stays',
            order: 1,
            source: `function teardownPlugin() { console.log('teardown stays') }\nfunction processEvent(e) { return e }`,
          },
          {
            name: 'hangs',
            order: 2,
            source: `function teardownPlugin() { return new Promise(() => {}) }\nfunction processEvent(e) { return e }`,
          },
        ],
        { ...FAST_LIMITS, wallTimeoutMs: 60_000 },
        { pluginLog: log },
      );
      const [changes, stays] = h.ids.map((i) => i.configId);
      try {
        await h.store
          .db('posthog_pluginconfig')
          .where({ id: changes })
          .update({ config: JSON.stringify({ v: '2' }) });
        await h.manager.reload();
        await until(() => log.console(changes).includes('teardown v1'), 'the old isolate torn down');
        assert.deepEqual(log.console(stays), [], 'an unchanged config keeps its isolate');
        await h.manager.close();
        await until(
          () => log.console(changes).includes('teardown v2') && log.console(stays).includes('teardown stays'),
          'teardown at shutdown',
        );
      } finally {
        await h.store.db.destroy();
      }
    },
  );
});

describe('a processEvent that keeps hanging is paused', () => {
  it(
    'after two calls in a row hit the wall-clock deadline, the config is skipped (events unchanged) with its reason recorded',
    { timeout: 60_000 },
    async () => {
      const log = logSink();
      const h = await harness(
        [
          {
            name: 'hangs',
            source: `function processEvent(e) { return e.event === 'hang' ? new Promise(() => {}) : { ...e, properties: { ...e.properties, seen: true } } }`,
          },
          { name: 'after', order: 1, source: `function processEvent(e) { e.properties.after = true; return e }` },
        ],
        { ...FAST_LIMITS, wallTimeoutMs: 200 },
        { pluginLog: log },
      );
      try {
        const id = h.ids[0].configId;
        for (let i = 0; i < 2; i++) {
          const [e] = await h.manager.runChain(1, [makeEvent('hang')]);
          assert.equal(props(e).after, true, 'the rest of the chain still runs');
        }
        assert.ok(log.entries.some((e) => e.pluginConfigId === id && /skipping this plugin for 60 s/.test(e.message)));
        const paused = await h.manager.runChain(1, [makeEvent('fine')]);
        assert.equal(props(paused[0]).seen, undefined, 'skipped while paused, even for an event it would handle');
        assert.equal(props(paused[0]).after, true);
        const [row] = await h.store.listConfigs();
        assert.match(JSON.stringify(row.error), /PluginPausedError/);
      } finally {
        await closeHarness(h);
      }
    },
  );
});
