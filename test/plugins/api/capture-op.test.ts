import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Redis from 'ioredis';
import { decodeTask } from '../../../protocol/decode';
import { ingestionArgsFromTask, PROCESS_EVENT_WITH_PLUGINS } from '../../../protocol/posthog';
import { parseEnvelope } from '../../../protocol/redis-envelope';
import type { JsonObject, JsonValue } from '../../../protocol/types';
import { RedisBroker } from '../../../src/brokers/redis/redis-broker';
import { createLogger, silentLogger } from '../../../src/log';
import { captureTask, createCaptureOp, timeOrderedUuid } from '../../../src/plugins/api/capture-op';
import {
  PluginFacingError,
  type HostOp,
  type HostOpContext,
  type PluginIdentity,
} from '../../../src/plugins/vm/bridge';
import { PYTHON, PYTHON_DIR } from '../../helpers/python';
import { flushRedisDb, redisUrl } from '../../helpers/services';

/** posthog.capture's host op, published through a real Redis broker (db 13) and read back by Python Celery. */
const DB = 13;
const QUEUE = 'posthog-plugins';
const plugin: PluginIdentity = { pluginConfigId: 11, pluginId: 42, teamId: 3 };
const logger = createLogger('error');

function context(p: PluginIdentity = plugin): HostOpContext & { warnings: string[] } {
  const warnings: string[] = [];
  return {
    plugin: p,
    signal: new AbortController().signal,
    logger,
    logMeta: { ...p },
    warn: (m) => void warnings.push(m),
    warnings,
  };
}

async function refused(p: Promise<unknown>, pattern: RegExp): Promise<PluginFacingError> {
  const err = await p.then(
    (v) => assert.fail(`expected a CaptureError, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PluginFacingError, `not a PluginFacingError: ${String(err)}`);
  assert.equal(err.name, 'CaptureError');
  assert.match(err.message, pattern);
  return err;
}

interface PythonRead {
  task: string;
  id: string;
  origin: string;
  lang: string;
  content_type: string;
  args: JsonValue[];
  kwargs: JsonObject;
  call: Record<string, JsonValue>;
  parsed: { now: string; sent_at: string | null; timestamp: string };
  error?: string;
}

/** test/python/capture_reader.py: kombu takes the messages off the queue, Celery's Request runs them. */
function readWithPython(count: number): Promise<PythonRead[]> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [
        path.join(PYTHON_DIR, 'capture_reader.py'),
        '--broker',
        redisUrl(DB),
        '--queue',
        QUEUE,
        '--count',
        String(count),
        '--timeout',
        '10',
      ],
      { cwd: PYTHON_DIR, timeout: 60_000, env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`capture_reader.py failed: ${err.message}\n${stdout}\n${stderr}`));
        else
          resolve(
            stdout
              .split('\n')
              .filter((l) => l.trim() !== '')
              .map((l) => JSON.parse(l) as PythonRead),
          );
      },
    );
  });
}

describe('posthog.capture host op (Redis db 13, Python Celery)', () => {
  let broker: RedisBroker;
  let redis: Redis;
  let op: HostOp;

  before(async () => {
    await flushRedisDb(DB);
    redis = new Redis(redisUrl(DB));
    broker = new RedisBroker({ url: redisUrl(DB), inputQueue: QUEUE, outputQueues: [QUEUE], logger: silentLogger() });
    await broker.connect();
    op = createCaptureOp(broker.publish.bind(broker), {
      queue: QUEUE,
      siteUrl: 'http://posthog.example',
      nameOf: (id) => (id === 42 ? 'First Time Event Tracker' : undefined),
      libVersion: '0.1.0',
      origin: 'posthog-plugins-test@host',
    });
  });
  after(async () => {
    await broker?.close();
    await redis?.quit();
    await flushRedisDb(DB);
  });

  it('publishes process_event_with_plugins as Django sends it; our decoder and Python Celery both read it', async () => {
    const before = Date.now();
    assert.equal(
      await op.run(
        { event: 'session_started', properties: { visit: 2, nested: { a: [1, 'x'] }, $lib: 'overridden?' } },
        context(),
      ),
      null,
    );
    assert.equal(
      await op.run(
        { event: 'custom', properties: { distinct_id: 'user-9', timestamp: '2021-03-04T05:06:07.891Z' } },
        context({ ...plugin, pluginId: 7 }),
      ),
      null,
    );
    assert.equal(
      await op.run({ event: 'numeric id', properties: { distinct_id: 1234 } }, context({ ...plugin, pluginId: 7 })),
      null,
    );
    const after = Date.now();

    // our side: the envelope in the queue decodes to the 7 ingestion args
    const raw = await redis.lrange(QUEUE, 0, -1);
    assert.equal(raw.length, 3);
    const ours = raw.reverse().map((text) => {
      const env = parseEnvelope(text);
      assert.ok(env.ok, env.ok ? '' : env.reason);
      assert.equal(env.routingKey, QUEUE);
      const decoded = decodeTask(env.message);
      assert.ok(decoded.ok, decoded.ok ? '' : decoded.reason);
      assert.equal(decoded.task.task, PROCESS_EVENT_WITH_PLUGINS);
      assert.equal(decoded.task.args.length, 7);
      assert.deepEqual(decoded.task.kwargs, {});
      const args = ingestionArgsFromTask(decoded.task);
      assert.ok(args.ok, args.ok ? '' : args.reason);
      return { id: decoded.task.id, args: args.args, positional: decoded.task.args };
    });

    const first = ours[0];
    assert.equal(first.args.distinct_id, 'First Time Event Tracker', 'default distinct_id: the plugin name');
    assert.equal(first.positional[1], null, 'ip null as in PostHog');
    assert.equal(first.args.site_url, 'http://posthog.example');
    assert.equal(first.args.team_id, 3);
    assert.equal(first.args.sent_at, first.args.now);
    const nowMs = Date.parse(first.args.now);
    assert.ok(nowMs >= before - 1 && nowMs <= after + 1, `now ${first.args.now}`);
    assert.match(first.args.now, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/, 'Python isoformat()');
    const data = first.args.data;
    assert.deepEqual(Object.keys(data), ['distinct_id', 'event', 'timestamp', 'properties', 'team_id', 'uuid']);
    assert.equal(data.event, 'session_started');
    assert.equal(data.timestamp, first.args.now);
    assert.equal(data.team_id, 3);
    assert.match(String(data.uuid), /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(data.properties, {
      $lib: 'overridden?',
      $lib_version: '0.1.0',
      distinct_id: 'First Time Event Tracker',
      visit: 2,
      nested: { a: [1, 'x'] },
    });

    const second = ours[1];
    assert.equal(second.args.distinct_id, 'user-9');
    assert.equal(second.args.data.timestamp, '2021-03-04T05:06:07.891Z', "the plugin's timestamp is the event's");
    assert.deepEqual(
      second.args.data.properties,
      { $lib: 'posthog-plugin-server', $lib_version: '0.1.0', distinct_id: 'user-9' },
      'timestamp is taken out of properties',
    );
    assert.equal(ours[2].args.distinct_id, '1234', 'an integer distinct_id becomes its string, as Python str()');

    // Python side: kombu pops them, Celery's worker Request runs them against PostHog's signature
    const py = await readWithPython(3);
    assert.equal(py.length, 3);
    py.forEach((m, i) => {
      assert.equal(m.error, undefined, m.error);
      assert.equal(m.task, PROCESS_EVENT_WITH_PLUGINS);
      assert.equal(m.id, ours[i].id);
      assert.equal(m.origin, 'posthog-plugins-test@host');
      assert.equal(m.content_type, 'application/json');
      assert.deepEqual(m.kwargs, {});
      assert.deepEqual(m.args, ours[i].positional);
      assert.deepEqual(m.call.data, ours[i].args.data);
      assert.equal(m.call.team_id, 3);
    });
    assert.equal(py[1].parsed.timestamp, '2021-03-04T05:06:07.891000+00:00');
    assert.equal(Date.parse(py[0].parsed.now), Date.parse(first.args.now));
    assert.equal(await redis.llen(QUEUE), 0, 'Python took them all');
  });

  it('without a name the distinct_id is plugin-id-<pluginId>, like PostHog', () => {
    const task = captureTask(
      { event: 'e', properties: {} },
      { plugin, pluginName: '', siteUrl: '', origin: 'o@h', now: new Date('2024-01-01T00:00:00Z') },
    );
    assert.equal(task.args[0], 'plugin-id-42');
    assert.equal(task.args[5], '2024-01-01T00:00:00+00:00');
    assert.deepEqual(
      (task.args[3] as JsonObject).properties,
      { $lib: 'posthog-plugin-server', distinct_id: 'plugin-id-42' },
      'no $lib_version when unknown',
    );
  });

  it('a "__proto__" property stays a property', () => {
    const properties = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as JsonObject;
    const task = captureTask(
      { event: 'e', properties },
      { plugin, pluginName: 'p', siteUrl: '', origin: 'o@h', now: new Date() },
    );
    const props = (task.args[3] as JsonObject).properties as JsonObject;
    assert.ok(Object.prototype.hasOwnProperty.call(props, '__proto__'));
    assert.equal(Object.getPrototypeOf(props), Object.prototype);
    assert.match(JSON.stringify(props), /"__proto__":\{"polluted":true\}/);
  });

  it('time-ordered uuids (v7) sort by their millisecond', () => {
    const a = timeOrderedUuid(new Date(1_700_000_000_000));
    const b = timeOrderedUuid(new Date(1_700_000_000_001));
    assert.ok(a < b, `${a} < ${b}`);
    assert.equal(a.slice(0, 13), '018bcfe5-6800');
  });

  it('refuses bad requests with a CaptureError and publishes nothing', async () => {
    const ctx = context();
    await refused(op.run(null, ctx), /malformed request/);
    await refused(op.run('event', ctx), /malformed request/);
    await refused(
      op.run({ properties: {} }, ctx),
      /event name must be a non-empty string of at most 200 characters, got undefined/,
    );
    await refused(op.run({ event: '', properties: {} }, ctx), /got 0 characters/);
    await refused(op.run({ event: 'x'.repeat(201), properties: {} }, ctx), /got 201 characters/);
    await refused(op.run({ event: 5, properties: {} }, ctx), /got number/);
    await refused(op.run({ event: 'e', properties: [1] }, ctx), /properties must be an object, got an array/);
    await refused(op.run({ event: 'e', properties: 'p' }, ctx), /properties must be an object, got string/);
    await refused(
      op.run({ event: 'e', properties: { distinct_id: { id: 1 } } }, ctx),
      /distinct_id must be a string or an integer, got object/,
    );
    await refused(
      op.run({ event: 'e', properties: { distinct_id: 1.5 } }, ctx),
      /distinct_id must be a string or an integer, got number/,
    );
    await refused(
      op.run({ event: 'e', properties: { distinct_id: '' } }, ctx),
      /distinct_id must be 1 to 400 characters, got 0/,
    );
    await refused(
      op.run({ event: 'e', properties: { timestamp: 'yesterday' } }, ctx),
      /timestamp must be an ISO-8601 date-time, got "yesterday"/,
    );
    await refused(
      op.run({ event: 'e', properties: { timestamp: 1700000000 } }, ctx),
      /timestamp must be an ISO-8601 string, got number/,
    );
    await refused(
      op.run({ event: 'e', properties: { x: { __type__: 'datetime', __value__: '2020-01-01' } } }, ctx),
      /cannot be sent: .*__type__/,
    );
    let deep: JsonValue = 'bottom';
    for (let i = 0; i < 100; i++) deep = [deep];
    await refused(op.run({ event: 'e', properties: { deep } }, ctx), /nested more than 100 levels deep/);
    assert.equal(
      await op.run({ event: 'e', properties: { deep: (deep as JsonValue[])[0] } }, ctx),
      null,
      '100 levels in all are fine',
    );
    await redis.del(QUEUE);
    const small = createCaptureOp(broker.publish.bind(broker), { queue: QUEUE, maxPayloadBytes: 2000 });
    await refused(
      small.run({ event: 'e', properties: { big: 'é'.repeat(1000) } }, ctx),
      /event too large: \d+ bytes, limit 2000/,
    );
    assert.equal(await redis.llen(QUEUE), 0);
  });

  it('properties null is {}', async () => {
    assert.equal(await op.run({ event: 'e', properties: null }, context()), null);
    const env = parseEnvelope((await redis.rpop(QUEUE))!);
    assert.ok(env.ok);
    const decoded = decodeTask(env.message);
    assert.ok(decoded.ok);
    assert.deepEqual((decoded.task.args[3] as JsonObject).properties, {
      $lib: 'posthog-plugin-server',
      $lib_version: '0.1.0',
      distinct_id: 'First Time Event Tracker',
    });
  });

  it('a broker failure is a CaptureError without broker details, and a warning for the operator', async () => {
    // a real broker whose connection is gone: publish fails as after a lost connection
    const gone = new RedisBroker({
      url: redisUrl(DB),
      inputQueue: QUEUE,
      outputQueues: [QUEUE],
      logger: silentLogger(),
    });
    await gone.connect();
    await gone.close();
    const failing = createCaptureOp(gone.publish.bind(gone), { queue: QUEUE });
    const ctx = context();
    const err = await refused(
      failing.run({ event: 'e', properties: {} }, ctx),
      /^posthog\.capture: the event could not be queued \(broker unavailable\)$/,
    );
    assert.equal(err.type, 'unavailable');
    assert.match(ctx.warnings.join('\n'), /^posthog\.capture: publishing to posthog-plugins failed: ./);
    assert.equal(await redis.llen(QUEUE), 0);
  });
});
