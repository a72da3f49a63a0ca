import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { after, before, beforeEach, describe, test } from 'node:test';
import Redis from 'ioredis';
import { buildEnvelope, parseEnvelope } from '../../protocol/redis-envelope';
import { encodeTaskV2 } from '../../protocol/encode';
import { decodeTask } from '../../protocol/decode';
import { RedisBroker } from '../../src/brokers/redis/redis-broker';
import { inflightKey, leaseKey, WORKERS_KEY } from '../../src/brokers/redis/keys';
import { silentLogger } from '../../src/log';

// Redis db 9 is reserved for this file (see test/helpers/services.ts).
const URL = 'redis://127.0.0.1:6379/9';
const Q = 'rb-in';
const OUT = 'rb-out';

function envelope(id: string, priority = 0): string {
  const message = encodeTaskV2({ task: 'demo.task', id, args: [id], kwargs: {}, origin: 'test@host', priority });
  return buildEnvelope(message, { deliveryTag: `tag-${id}`, exchange: '', routingKey: Q });
}

function broker(extra: Partial<ConstructorParameters<typeof RedisBroker>[0]> = {}): RedisBroker {
  return new RedisBroker({
    url: URL,
    inputQueue: Q,
    outputQueues: [OUT],
    logger: silentLogger(),
    deadWorkerScanMs: 200,
    ...extra,
  });
}

describe('RedisBroker against the real Redis', () => {
  let redis: Redis;
  before(async () => {
    redis = new Redis(URL);
  });
  after(async () => {
    await redis.flushdb();
    redis.disconnect();
  });
  beforeEach(async () => {
    await redis.flushdb();
  });

  test('pop writes kombu-shaped unacked records scored in seconds, settle publishes and acks together', async () => {
    const b = broker();
    await b.connect();
    try {
      await redis.lpush(Q, envelope('a'), envelope('b'));
      const got = await b.receive(10, 100);
      assert.deepEqual(
        got.map((d) => d.tag),
        ['tag-a', 'tag-b'],
      );
      const record = await redis.hget('unacked', 'tag-a');
      assert.ok(record);
      const parsed = JSON.parse(record) as [unknown, string, string];
      assert.equal(parsed.length, 3);
      assert.equal(parsed[1], '');
      assert.equal(parsed[2], Q);
      const score = Number(await redis.zscore('unacked_index', 'tag-a'));
      assert.ok(Math.abs(score - Date.now() / 1000) < 5, `score ${score} must be Unix seconds`);
      assert.deepEqual((await redis.smembers(inflightKey(b.workerId))).sort(), ['tag-a', 'tag-b']);

      // Non-ASCII text in the body and (unescaped) in the kwargsrepr header: the envelope must go out as UTF-8.
      const out = encodeTaskV2({
        task: 'demo.out',
        id: 'out-a',
        args: [],
        kwargs: { x: 1, name: 'Zoë 😀' },
        origin: 'test@host',
      });
      await b.settle([
        { kind: 'ack', delivery: got[0]!, outputs: [{ queue: OUT, message: out, priority: 0 }] },
        { kind: 'reject', delivery: got[1]!, reason: 'not wanted' },
      ]);
      assert.equal(await redis.hlen('unacked'), 0);
      assert.equal(await redis.zcard('unacked_index'), 0);
      const published = await redis.lrange(OUT, 0, -1);
      assert.equal(published.length, 1);
      const env = parseEnvelope(published[0]!);
      assert.ok(env.ok);
      assert.equal(env.message.headers['id'], 'out-a');
      assert.equal(env.message.headers['kwargsrepr'], "{'x': 1, 'name': 'Zoë 😀'}");
      const task = decodeTask(env.message);
      assert.ok(task.ok);
      assert.deepEqual(task.task.kwargs, { x: 1, name: 'Zoë 😀' });
      const setAside = await redis.lrange(`${Q}.rejected`, 0, -1);
      assert.equal(setAside.length, 1);
      const rec = JSON.parse(setAside[0]!) as { reason: string; message: string };
      assert.equal(rec.reason, 'not wanted');
      assert.equal(rec.message, envelope('b'));
    } finally {
      await b.close();
    }
  });

  test('consumes priority 0 before 5 before 9, like kombu', async () => {
    const b = broker();
    await b.connect();
    try {
      await redis.lpush(`${Q}\x06\x169`, envelope('p9', 9));
      await redis.lpush(`${Q}\x06\x163`, envelope('p5', 5));
      await redis.lpush(Q, envelope('p0', 0));
      const got = await b.receive(10, 100);
      assert.deepEqual(
        got.map((d) => d.tag),
        ['tag-p0', 'tag-p5', 'tag-p9'],
      );
      await b.settle(got.map((delivery) => ({ kind: 'ack' as const, delivery, outputs: [] })));
    } finally {
      await b.close();
    }
  });

  test('an envelope that is not JSON or has no delivery_tag is set aside atomically with its reason', async () => {
    const reasons: string[] = [];
    const b = broker({ onSetAside: (reason) => reasons.push(reason) });
    await b.connect();
    try {
      await redis.lpush(Q, 'garbage{', JSON.stringify({ body: '', properties: {} }), envelope('ok'));
      const got = await b.receive(10, 100);
      assert.deepEqual(
        got.map((d) => d.tag),
        ['tag-ok'],
      );
      assert.deepEqual(reasons, ['envelope is not a JSON object', 'envelope has no properties.delivery_tag']);
      assert.equal(await redis.llen(`${Q}.rejected`), 2);
      assert.equal(await redis.hlen('unacked'), 1);
    } finally {
      await b.close();
    }
  });

  test('an envelope that Lua reads but JSON.parse refuses (NaN) is set aside, and the batch around it flows', async () => {
    const reasons: string[] = [];
    const b = broker({ onSetAside: (reason) => reasons.push(reason) });
    await b.connect();
    try {
      const nan = envelope('nan').replace('"retries": 0', '"retries": NaN').replace('"retries":0', '"retries":NaN');
      assert.notEqual(nan, envelope('nan'), 'the test envelope carries a NaN');
      await redis.lpush(Q, envelope('g1'), nan, envelope('g2'));
      const got = await b.receive(10, 100);
      assert.deepEqual(
        got.map((d) => d.tag),
        ['tag-g1', 'tag-g2'],
      );
      assert.equal(reasons.length, 1);
      const setAside = (await redis.lrange(`${Q}.rejected`, 0, -1)).map(
        (x) => JSON.parse(x) as { queue: string; message: string },
      );
      assert.equal(setAside.length, 1);
      assert.equal(setAside[0]!.queue, Q, 'the record names the queue to LPUSH it back to');
      assert.equal(setAside[0]!.message, nan);
      assert.equal(await redis.hexists('unacked', 'tag-nan'), 0);
      await b.settle(got.map((delivery) => ({ kind: 'ack' as const, delivery, outputs: [] })));
    } finally {
      await b.close();
    }
  });

  test('the pop reads tag, exchange and routing key of every envelope form; only a consistent one is taken', async () => {
    // The pop script reads kombu's and our envelopes with a pattern on their tail and falls back to cjson for
    // everything else: both paths must give the same tags and kombu-readable unacked records.
    const ours = envelope('o');
    const python = ours.replace(/":/g, '": ').replace(/,"/g, ', "'); // json.dumps separators, as kombu writes
    const withProps = (
      id: string,
      edit: (p: Record<string, unknown>) => void,
      order?: (env: Record<string, unknown>) => Record<string, unknown>,
    ): string => {
      const env = JSON.parse(envelope(id)) as Record<string, unknown>;
      edit(env.properties as Record<string, unknown>);
      return JSON.stringify(order ? order(env) : env);
    };
    const cases: Array<{ raw: string; tag: string; exchange: string; routingKey: string }> = [
      { raw: ours, tag: 'tag-o', exchange: '', routingKey: Q },
      { raw: python.replace('tag-o', 'tag-py'), tag: 'tag-py', exchange: '', routingKey: Q },
      // kombu's restore adds redelivered to delivery_info
      {
        raw: withProps('r', (p) => Object.assign(p.delivery_info as object, { redelivered: true })),
        tag: 'tag-r',
        exchange: '',
        routingKey: Q,
      },
      // an escaped quote in properties: only the fallback can read it (the pattern must not be fooled)
      {
        raw: withProps('e', (p) => (p.correlation_id = 'x", "delivery_tag": "evil')),
        tag: 'tag-e',
        exchange: '',
        routingKey: Q,
      },
      // properties not last, routing key before exchange, non-ASCII and slashes in the names
      {
        raw: withProps(
          'k',
          (p) => (p.delivery_info = { routing_key: 'r/\u00e9', exchange: 'ex\u00e9' }),
          (env) => ({ properties: env.properties, ...env }),
        ),
        tag: 'tag-k',
        exchange: 'ex\u00e9',
        routingKey: 'r/\u00e9',
      },
      {
        raw: withProps('n', (p) => (p.delivery_info = { exchange: 'celery', routing_key: 'named/queue' })),
        tag: 'tag-n',
        exchange: 'celery',
        routingKey: 'named/queue',
      },
    ];
    const reasons: string[] = [];
    const b = broker({ onSetAside: (reason) => reasons.push(reason) });
    await b.connect();
    try {
      // Two delivery_tag keys: the last counts, as for JSON.parse and Python's json.
      const twice = ours.replace('"delivery_tag":"tag-o"', '"delivery_tag":"tag-t1","delivery_tag":"tag-t2"');
      assert.notEqual(twice, ours);
      cases.push({ raw: twice, tag: 'tag-t2', exchange: '', routingKey: Q });
      for (const c of cases) await redis.lpush(Q, c.raw);
      await redis.lpush(Q, 'garbage{');
      const got = await b.receive(20, 100);
      assert.deepEqual(
        got.map((d) => d.tag),
        cases.map((c) => c.tag),
      );
      for (const [i, c] of cases.entries()) {
        assert.equal(got[i]!.rawText, c.raw);
        const record = await redis.hget('unacked', c.tag);
        assert.ok(record, `unacked record for ${c.tag}`);
        assert.deepEqual(JSON.parse(record), [JSON.parse(c.raw), c.exchange, c.routingKey], `record of ${c.tag}`);
        assert.ok(record.startsWith(`[${c.raw}, `), 'the envelope is embedded verbatim');
      }
      assert.deepEqual(reasons, ['envelope is not a JSON object']);
      assert.equal(await redis.llen(`${Q}.rejected`), 1);
      assert.equal(await redis.scard(inflightKey(b.workerId)), cases.length);
      assert.equal(await redis.zcard('unacked_index'), cases.length);
      await b.settle(got.map((delivery) => ({ kind: 'ack' as const, delivery, outputs: [] })));
      assert.equal(await redis.hlen('unacked'), 0);
    } finally {
      await b.close();
    }
  });

  test('close gives unsettled deliveries back to the front of their queue, marked redelivered', async () => {
    const b = broker();
    await b.connect();
    await redis.lpush(Q, envelope('x'), envelope('y'));
    await redis.lpush(`${Q}\x06\x163`, envelope('z', 5));
    const got = await b.receive(10, 100);
    assert.equal(got.length, 3);
    await b.close();
    assert.equal(await redis.hlen('unacked'), 0);
    const back = await redis.lrange(Q, 0, -1);
    assert.equal(back.length, 2);
    const env = parseEnvelope(back[back.length - 1]!);
    assert.ok(env.ok);
    assert.equal(env.redelivered, true);
    assert.equal(await redis.llen(`${Q}\x06\x163`), 1, 'priority is kept on restore');
    assert.equal(await redis.exists(leaseKey(b.workerId)), 0);
  });

  test('a worker that dies holding messages is restored by another worker within seconds', async () => {
    const dead = broker({ workerId: 'dead-worker', leaseTtlMs: 500 });
    await dead.connect();
    await redis.lpush(Q, envelope('d1'), envelope('d2'));
    assert.equal((await dead.receive(10, 100)).length, 2);
    // Simulate kill -9: stop its timers without any cleanup, let the lease expire.
    (dead as unknown as { closed: boolean }).closed = true;
    for (const t of (dead as unknown as { timers: NodeJS.Timeout[] }).timers) clearInterval(t);
    const survivor = broker();
    await survivor.connect();
    try {
      const started = Date.now();
      const got: string[] = [];
      while (got.length < 2 && Date.now() - started < 5000) {
        for (const d of await survivor.receive(10, 200)) got.push(d.tag);
      }
      assert.deepEqual(got.sort(), ['tag-d1', 'tag-d2']);
      // The scan deregisters the dead worker right after restoring its messages.
      const until = Date.now() + 2000;
      while ((await redis.sismember(WORKERS_KEY, 'dead-worker')) === 1 && Date.now() < until)
        await new Promise((r) => setTimeout(r, 50));
      assert.equal(await redis.sismember(WORKERS_KEY, 'dead-worker'), 0);
    } finally {
      await survivor.close();
      (dead as unknown as { cmd: Redis }).cmd.disconnect();
      (dead as unknown as { blocking: Redis }).blocking.disconnect();
    }
  });

  test('settle skips a delivery that another worker restored meanwhile (no duplicate output)', async () => {
    const b = broker();
    await b.connect();
    try {
      await redis.lpush(Q, envelope('r'));
      const [d] = await b.receive(1, 100);
      await redis.hdel('unacked', 'tag-r'); // as if restored by someone else
      const out = encodeTaskV2({ task: 'demo.out', id: 'out-r', args: [], kwargs: {}, origin: 'test@host' });
      await b.settle([{ kind: 'ack', delivery: d!, outputs: [{ queue: OUT, message: out, priority: 0 }] }]);
      assert.equal(await redis.llen(OUT), 0);
    } finally {
      await b.close();
    }
  });

  test('Python kombu restores our in-flight messages after its visibility timeout', async () => {
    const b = broker({ workerId: 'py-visible' });
    await b.connect();
    await redis.lpush(Q, envelope('v'));
    assert.equal((await b.receive(1, 100)).length, 1);
    // Freeze the worker (as if hung), then let a Python kombu channel run restore_visible.
    (b as unknown as { closed: boolean }).closed = true;
    for (const t of (b as unknown as { timers: NodeJS.Timeout[] }).timers) clearInterval(t);
    await redis.zadd('unacked_index', String(Date.now() / 1000 - 10), 'tag-v');
    const py = [
      'import kombu',
      `c = kombu.Connection('${URL}', transport_options={'visibility_timeout': 5})`,
      'ch = c.default_channel',
      'ch.qos.restore_visible()',
      'c.release()',
    ].join('\n');
    execFileSync('/usr/bin/python3', ['-c', py], { stdio: 'pipe' });
    const back = await redis.lrange(Q, 0, -1);
    assert.equal(back.length, 1);
    const env = parseEnvelope(back[0]!);
    assert.ok(env.ok);
    assert.equal(env.deliveryTag, 'tag-v');
    assert.equal(env.redelivered, true);
    (b as unknown as { cmd: Redis }).cmd.disconnect();
    (b as unknown as { blocking: Redis }).blocking.disconnect();
  });

  test("we restore a Python worker's message left unacked past the visibility timeout", async () => {
    // A real kombu consumer takes a message (writing unacked records) and exits without acking.
    await redis.lpush(Q, envelope('p'));
    const py = [
      'import kombu, os',
      `c = kombu.Connection('${URL}')`,
      `q = c.SimpleQueue('${Q}')`,
      'm = q.get(timeout=5)',
      'os._exit(0)',
    ].join('\n');
    await new Promise<void>((resolve, reject) => {
      const child = spawn('/usr/bin/python3', ['-c', py], { stdio: 'inherit' });
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`python exited ${code}`))));
    });
    assert.equal(await redis.hlen('unacked'), 1);
    await redis.zadd('unacked_index', String(Date.now() / 1000 - 100), 'tag-p');
    const b = broker({ visibilityTimeoutS: 50 });
    await b.connect(); // restore_visible runs at start, as kombu's does
    try {
      const got = await b.receive(1, 500);
      assert.deepEqual(
        got.map((d) => d.tag),
        ['tag-p'],
      );
      assert.equal(got[0]!.redelivered, true);
    } finally {
      await b.close();
    }
  });
});
