import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import type { Knex } from 'knex';
import { openDatabase } from '../../src/store/database';
import { type BrokerFixture, redisFixture } from '../helpers/brokers';
import { type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

/**
 * Live reload as PostHog drives it: a config is changed in the database and a message is published on Redis
 * channel `reload-plugins`; later events see the new config, and a reload in the middle of a stream never
 * processes an event with a half-loaded chain (every event carries exactly one of the two configs' marks, in
 * order) and loses none. Redis db 10 and a channel of its own (pub/sub is shared by all dbs).
 */
const TEAM = 2;
const CHANNEL = 'reload-plugins-test-reload';

function stage(r: SinkRecord): unknown {
  return (r.data as { properties: Record<string, unknown> }).properties['stage'];
}

describe('live reload on reload-plugins', () => {
  let broker: BrokerFixture;
  let sink: SinkWorker;
  let worker: WorkerProcess;
  let db: Knex;
  let pub: Redis;
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-reload-'));
  const databaseUrl = `sqlite:${path.join(tmp, 'plugins.sqlite3')}`;

  const setStage = async (value: string): Promise<void> => {
    await db('posthog_pluginconfig')
      .where({ order: 0 })
      .update({ config: JSON.stringify({ propertyName: 'stage', propertyValue: value }) });
    await pub.publish(CHANNEL, 'reload');
  };
  const reloads = (): number => worker.logs().filter((l) => l.message === `plugins reloaded (${CHANNEL})`).length;

  before(async () => {
    broker = redisFixture(10);
    await broker.reset();
    const env = { DATABASE_URL: databaseUrl };
    await cli(['migrate'], env);
    await cli(
      [
        'install',
        'fixtures/plugins/add-property',
        '--team',
        String(TEAM),
        '--config',
        '{"propertyName":"stage","propertyValue":"one"}',
      ],
      env,
    );
    // 10 ms per event keeps the stream of the second test going for a few seconds, so the reload lands inside it.
    await cli(['install', 'fixtures/plugins/slow.js', '--team', String(TEAM), '--config', '{"ms":"10"}'], env);
    db = openDatabase(databaseUrl);
    pub = new Redis(broker.url);
    sink = await startSinkWorker({ brokerUrl: broker.url });
    worker = await startWorker(
      ['--broker', broker.url, '--workers', '1', '--batch-size', '10', '--reload-channel', CHANNEL],
      env,
    );
    await worker.waitForLog(
      (l) => l.message === `listening for plugin changes on Redis channel ${CHANNEL}`,
      30_000,
      'subscribed',
    );
  });

  after(async () => {
    await worker?.stop();
    await sink?.stop();
    pub?.disconnect();
    await db?.destroy();
    await broker?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('a config change announced on the channel applies to later events', async () => {
    await sendEvents({ brokerUrl: broker.url, count: 3, teamId: TEAM, startIndex: 0 });
    const first = await sink.waitFor(3, 30_000);
    assert.deepEqual(first.map(stage), ['one', 'one', 'one']);

    const before = reloads();
    await setStage('two');
    await waitUntil(() => reloads() > before, 20_000, 'the worker reloaded its plugins');
    await sendEvents({ brokerUrl: broker.url, count: 3, teamId: TEAM, startIndex: 10 });
    const all = await sink.waitFor(6, 30_000);
    assert.deepEqual(all.slice(3).map(stage), ['two', 'two', 'two']);
  });

  test('a reload in the middle of a stream drops nothing and never half-processes an event', async () => {
    const base = sink.records().length;
    const sending = sendEvents({ brokerUrl: broker.url, count: 300, teamId: TEAM, startIndex: 100 });
    await waitUntil(() => sink.records().length - base >= 30, 30_000, 'the stream is flowing');
    await setStage('three');
    const sent = await sending;
    const records = (await sink.waitFor(base + sent.length, 60_000)).slice(base);
    assert.equal(records.length, sent.length);
    const stages = records.map(stage);
    assert.ok(
      stages.every((s) => s === 'two' || s === 'three'),
      `every event carries one whole config: ${JSON.stringify([...new Set(stages)])}`,
    );
    // One worker process, batches in order: once the new chain is in, no event sees the old one again.
    const firstNew = stages.indexOf('three');
    assert.ok(firstNew > 0, 'the reload landed mid-stream');
    assert.ok(
      stages.slice(firstNew).every((s) => s === 'three'),
      'no event after the swap used the old chain',
    );
    assert.equal(await broker.unsettled('posthog-plugins'), 0);
  });
});
