import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendEvents } from '../helpers/python';
import { freePort, type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';
import { waitUntil } from '../helpers/services';
import { type WorkerProcess, childrenOf, cli, startWorker } from '../helpers/worker';

/**
 * `--metrics-port`: one scrape of the supervisor shows the whole instance (two worker processes), and what it
 * says matches what was actually sent: real Python Celery sends COUNT events plus one task of an unknown name; a
 * plugin drops every 5th event and throws on every 7th; nobody consumes `celery`, so its depth is what was
 * published. A worker killed with SIGKILL shows up as a restart. Resource: a private Redis server.
 */
const COUNT = 60;
const TEAM = 2;
const PLUGIN = `
exports.processEvent = function (event) {
  const i = event.properties.index
  if (i % 5 === 0) return null
  if (i % 7 === 0) throw new Error('seven')
  return event
}
`;

type Samples = Map<string, number>;

/** Prometheus text format → `name{labels}` (labels as written) → value. */
function parse(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

describe('Prometheus metrics of a whole instance (redis)', () => {
  let redis: PrivateRedis;
  let sup: WorkerProcess;
  let port = 0;
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-metrics-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
  const scrape = async (): Promise<{ text: string; samples: Samples; type: string }> => {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    return { text, samples: parse(text), type: res.headers.get('content-type') ?? '' };
  };

  before(async () => {
    redis = await startPrivateRedis({ appendonly: false });
    port = await freePort();
    writeFileSync(path.join(tmp, 'p.js'), PLUGIN);
    await cli(['migrate'], env);
    await cli(['install', path.join(tmp, 'p.js'), '--team', String(TEAM), '--name', 'fives-and-sevens'], env);
    sup = await startWorker(
      ['--broker', redis.url(0), '--workers', '2', '--metrics-port', String(port), '--batch-size', '7'],
      env,
    );
    await waitUntil(
      () => sup.logs().filter((l) => String(l.message).startsWith('consuming ')).length >= 2,
      90_000,
      'both workers consuming',
    );
  });

  after(async () => {
    await sup?.stop();
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('a scrape counts exactly the events sent, dropped, failed in the plugin, set aside and published', async () => {
    const sent = await sendEvents({ brokerUrl: redis.url(0), count: COUNT, teamId: TEAM });
    await sendEvents({ brokerUrl: redis.url(0), count: 1, taskName: 'not.a.posthog.task' });
    const dropped = Array.from({ length: COUNT }, (_, i) => i).filter((i) => i % 5 === 0).length;
    const thrown = Array.from({ length: COUNT }, (_, i) => i).filter((i) => i % 5 !== 0 && i % 7 === 0).length;
    const q = 'queue="posthog-plugins"';
    const m = await waitUntil(
      async () => {
        const s = (await scrape()).samples;
        return (s.get(`posthog_plugins_events_received_total{${q}}`) ?? 0) >= COUNT + 1 ? s : null;
      },
      60_000,
      'every event counted',
    );
    assert.equal(m.get(`posthog_plugins_events_received_total{${q}}`), COUNT + 1);
    assert.equal(m.get(`posthog_plugins_events_processed_total{${q},outcome="published"}`), COUNT - dropped);
    assert.equal(m.get(`posthog_plugins_events_processed_total{${q},outcome="dropped"}`), dropped);
    assert.equal(m.get(`posthog_plugins_events_processed_total{${q},outcome="set_aside"}`), 1);
    assert.equal(m.get(`posthog_plugins_events_processed_total{${q},outcome="expired"}`), 0);
    assert.equal(m.get('posthog_plugins_batch_size_sum'), COUNT + 1);
    const configLabels = [...m.keys()].find((k) => k.startsWith('posthog_plugins_plugin_errors_total{'));
    assert.ok(configLabels?.includes('plugin="fives-and-sevens"'), configLabels);
    assert.equal(m.get(configLabels!), thrown);
    assert.ok((m.get('posthog_plugins_batch_duration_seconds_count') ?? 0) >= Math.ceil((COUNT + 1) / 7) / 2);
    // Sampled at scrape time; nothing consumes `celery`.
    assert.equal(m.get('posthog_plugins_queue_depth{queue="celery"}'), COUNT - dropped);
    assert.equal(m.get('posthog_plugins_queue_depth{queue="posthog-plugins.rejected"}'), 1);
    assert.equal(m.get('posthog_plugins_queue_depth{queue="posthog-plugins"}'), 0);
    assert.equal(m.get('posthog_plugins_messages_in_flight'), 0);
    assert.equal(m.get('posthog_plugins_isolates'), 2, 'one isolate per worker process');
    assert.ok((m.get('posthog_plugins_isolate_heap_bytes') ?? 0) > 0);
    assert.ok((m.get('process_cpu_seconds_total') ?? 0) > 0, 'prom-client default metrics of the workers');
    assert.ok((m.get('posthog_plugins_supervisor_process_resident_memory_bytes') ?? 0) > 0, "the supervisor's own");

    // --log-format json: a plugin failure names the Celery node, the task and the plugin config, as metrics
    // (plugin_config_id) and Celery events (hostname, uuid) do.
    const failures = sup.logs().filter((l) => String(l.message).includes('failed on event'));
    assert.equal(failures.length, thrown);
    const ids = new Set(sent.map((t) => t.id));
    for (const l of failures) {
      assert.match(String(l.node), new RegExp(`^posthog-plugins-[01]@${hostname().replace(/\./g, '\\.')}$`));
      assert.ok(ids.has(String(l.taskId)), `task id ${String(l.taskId)}`);
      assert.ok(configLabels!.includes(`plugin_config_id="${String(l.pluginConfigId)}"`));
    }
  });

  test('a worker process killed with SIGKILL is a restart; other paths are 404', async () => {
    const before = (await scrape()).samples.get('posthog_plugins_worker_restarts_total');
    assert.equal(before, 0);
    const [victim] = await childrenOf(sup.child.pid!);
    process.kill(victim!, 'SIGKILL');
    await waitUntil(
      async () => (await scrape()).samples.get('posthog_plugins_worker_restarts_total') === 1,
      60_000,
      'the restart counted',
    );
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
  });
});
