// Integration tests of AmqpBroker against the real RabbitMQ (127.0.0.1:5672, guest/guest) and real Python
// Celery 5.2.6 / py-amqp 5.1.1 (/usr/bin/python3), in a vhost of our own. The broker module must be imported
// before amqplib (it patches amqplib's field-table decoder first). Over 500 lines: one describe per part of the
// Broker contract, all sharing this file's vhost, Python helpers and message builders.
import { AmqpBroker, type AmqpBrokerOptions } from '../../src/brokers/amqp/amqp-broker';
import { UNDECODABLE_TABLE } from '../../src/brokers/amqp/amqplib-compat';
import { AmqpTopologyError, AmqpUnavailableError } from '../../src/brokers/amqp/errors';
import * as amqp from 'amqplib';
import type { Channel } from 'amqplib';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeTask } from '../../protocol/decode';
import type { JsonObject, RawMessage } from '../../protocol/types';
import type { Delivery, Outgoing } from '../../src/brokers/broker';
import type { Logger } from '../../src/log';

const VHOST = 'posthog-plugins-test-amqp';
const URL = `amqp://guest:guest@127.0.0.1:5672/${VHOST}`;
const PY_URL = `amqp://guest:guest@127.0.0.1:5672/${VHOST}`;
const PYTHON = '/usr/bin/python3';

// ---------------------------------------------------------------------------------------------------------------
// helpers

function ctl(args: string[]): string {
  return execFileSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8', timeout: 20_000 });
}
function ctlJson<T>(args: string[]): T[] {
  const out = ctl([...args, '--formatter', 'json']).trim();
  return out ? (JSON.parse(out) as T[]) : [];
}
function ctlAsync(args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('rabbitmqctl', ['-q', ...args], { timeout: 20_000 }, (err) => (err ? reject(err) : resolve())),
  );
}

async function admin<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
  const conn = await amqp.connect(URL);
  conn.on('error', () => undefined);
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    return await fn(ch);
  } finally {
    await conn.close().catch(() => undefined);
  }
}

async function queueDepth(queue: string): Promise<number> {
  return admin(async (ch) => (await ch.checkQueue(queue)).messageCount);
}

/** Takes every message out of a queue (acked). */
async function drain(queue: string): Promise<amqp.GetMessage[]> {
  return admin(async (ch) => {
    const out: amqp.GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (!m) return out;
      out.push(m);
    }
  });
}

interface LogLine {
  level: string;
  message: string;
}
function captureLogger(lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const log =
    (level: string) =>
    (message: string): void => {
      lines.push({ level, message });
      if (process.env.AMQP_TEST_LOG) console.error(`[${level}] ${message}`);
    };
  return {
    lines,
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
  } as unknown as Logger & { lines: LogLine[] };
}

const opened: AmqpBroker[] = [];
function broker(opts: Partial<AmqpBrokerOptions> & { inputQueue: string; outputQueue: string }): AmqpBroker {
  const b = new AmqpBroker({ url: URL, logger: captureLogger(), reconnectMinMs: 200, reconnectMaxMs: 2000, ...opts });
  opened.push(b);
  return b;
}

let seq = 0;
function q(name: string): string {
  return `t-${name}-${process.pid}-${++seq}`;
}

/** A v2 task message built by hand, with the full header set Python 5.2 sends (docs/celery-wire.md#headers). */
function taskMessage(task: string, args: unknown[], extraHeaders: JsonObject = {}, id = randomUUID()): RawMessage {
  const kwargs = {};
  const headers: JsonObject = {
    lang: 'js',
    task,
    id,
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: id,
    parent_id: null,
    argsrepr: JSON.stringify(args),
    kwargsrepr: '{}',
    origin: 'posthog-plugins@test',
    ignore_result: false,
    ...extraHeaders,
  };
  return {
    headers,
    properties: { correlation_id: id, reply_to: '', delivery_mode: 2, priority: 0 },
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.from(JSON.stringify([args, kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }])),
  };
}

function out(queue: string, message: RawMessage, priority = 0): Outgoing {
  return { queue, message, priority };
}

async function receiveAll(b: AmqpBroker, n: number, timeoutMs = 10_000): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < n && Date.now() < deadline) got.push(...(await b.receive(n - got.length, 200)));
  return got;
}

function python(script: string, env: Record<string, string> = {}, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(PYTHON, ['-c', script], { env: { ...process.env, ...env }, timeout: timeoutMs }, (err, stdout, stderr) =>
      err ? reject(new Error(`python failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

async function cleanVhost(): Promise<void> {
  const queues = ctlJson<{ name: string }>(['list_queues', '-p', VHOST, 'name']);
  const exchanges = ctlJson<{ name: string }>(['list_exchanges', '-p', VHOST, 'name']).filter(
    (e) => e.name !== '' && !e.name.startsWith('amq.'),
  );
  await admin(async (ch) => {
    for (const { name } of queues) await ch.deleteQueue(name);
    for (const { name } of exchanges) await ch.deleteExchange(name);
  });
}

// ---------------------------------------------------------------------------------------------------------------

describe('AmqpBroker on RabbitMQ', { timeout: 90_000 }, () => {
  before(async () => {
    ctl(['add_vhost', VHOST]); // idempotent
    ctl(['set_permissions', '-p', VHOST, 'guest', '.*', '.*', '.*']);
    await cleanVhost();
  });

  after(async () => {
    for (const b of opened) await b.close().catch(() => undefined);
    ctl(['delete_vhost', VHOST]); // nothing of this file is left behind
  });

  it('declares the topology exactly like Celery (compared with a queue Python Celery declared) and consumes with global prefetch', async () => {
    const input = q('in');
    const output = q('out');
    const ref = q('celery-ref');
    // Python Celery declares `ref` itself (send_task to a missing queue: task_create_missing_queues).
    await python(
      `from celery import Celery\napp = Celery(broker='${PY_URL}')\napp.send_task('x.y', args=[1], queue='${ref}')\n`,
    );
    const b = broker({ inputQueue: input, outputQueue: output, prefetch: 7 });
    await b.connect();

    type QRow = { name: string; durable: boolean; auto_delete: boolean; exclusive: boolean; arguments: unknown };
    const queues = new Map(
      ctlJson<QRow>(['list_queues', '-p', VHOST, 'name', 'durable', 'auto_delete', 'exclusive', 'arguments']).map(
        (r) => [r.name, r],
      ),
    );
    const shape = (r: QRow | undefined) =>
      r && { durable: r.durable, auto_delete: r.auto_delete, exclusive: r.exclusive, arguments: r.arguments };
    assert.deepEqual(shape(queues.get(ref)), { durable: true, auto_delete: false, exclusive: false, arguments: [] });
    assert.deepEqual(shape(queues.get(input)), shape(queues.get(ref)));
    assert.deepEqual(shape(queues.get(output)), shape(queues.get(ref)));
    assert.deepEqual(shape(queues.get(`${input}.rejected`)), {
      durable: true,
      auto_delete: false,
      exclusive: false,
      arguments: [],
    });

    type XRow = {
      name: string;
      type: string;
      durable: boolean;
      auto_delete: boolean;
      internal: boolean;
      arguments: unknown;
    };
    const xs = new Map(
      ctlJson<XRow>([
        'list_exchanges',
        '-p',
        VHOST,
        'name',
        'type',
        'durable',
        'auto_delete',
        'internal',
        'arguments',
      ]).map((r) => [r.name, r]),
    );
    const xshape = (r: XRow | undefined) =>
      r && {
        type: r.type,
        durable: r.durable,
        auto_delete: r.auto_delete,
        internal: r.internal,
        arguments: r.arguments,
      };
    assert.deepEqual(xshape(xs.get(ref)), {
      type: 'direct',
      durable: true,
      auto_delete: false,
      internal: false,
      arguments: [],
    });
    assert.deepEqual(xshape(xs.get(input)), xshape(xs.get(ref)));
    assert.deepEqual(xshape(xs.get(output)), xshape(xs.get(ref)));
    assert.equal(xs.has(`${input}.rejected`), false, 'the set-aside queue gets no exchange');

    type BRow = { source_name: string; destination_name: string; routing_key: string; arguments: unknown };
    const bindings = ctlJson<BRow>([
      'list_bindings',
      '-p',
      VHOST,
      'source_name',
      'destination_name',
      'routing_key',
      'arguments',
    ]);
    const of = (queue: string) =>
      bindings
        .filter((r) => r.destination_name === queue)
        .map(
          (r) => `${r.source_name === queue ? 'Q' : r.source_name}->${r.routing_key === queue ? 'Q' : r.routing_key}`,
        )
        .sort();
    assert.deepEqual(of(ref), ['->Q', 'Q->Q']);
    assert.deepEqual(of(input), of(ref));
    assert.deepEqual(of(output), of(ref));

    type CRow = {
      vhost: string;
      confirm: boolean;
      prefetch_count: number;
      global_prefetch_count: number;
      consumer_count: number;
    };
    const channels = ctlJson<CRow>([
      'list_channels',
      'vhost',
      'confirm',
      'prefetch_count',
      'global_prefetch_count',
      'consumer_count',
    ]).filter((c) => c.vhost === VHOST);
    const consumer = channels.find((c) => c.consumer_count === 1);
    assert.ok(consumer, JSON.stringify(channels));
    assert.equal(consumer.global_prefetch_count, 7);
    assert.equal(consumer.prefetch_count, 0);
    assert.ok(
      channels.some((c) => c.confirm),
      'a confirm channel for publishing',
    );
    await b.close();
  });

  it('round trip: publish → receive → ack with output; measures the rate', async (t) => {
    const input = q('rt-in');
    const output = q('rt-out');
    const b = broker({ inputQueue: input, outputQueue: output, prefetch: 500 });
    await b.connect();
    const first = taskMessage(
      'posthog.tasks.process_event.process_event_with_plugins',
      ['d1', '127.0.0.1', 'http://x', { event: 'e' }, 2, 'now', null],
      {
        retries: 3,
        timelimit: [300, 240],
      },
    );
    first.properties.priority = 4;
    first.properties.expiration = '60000';
    await b.publish([out(input, first, 4)]);
    const [d] = await receiveAll(b, 1);
    assert.ok(d);
    assert.equal(d.queue, input);
    assert.equal(d.redelivered, false);
    assert.match(d.tag, /^\d+:\d+$/);
    assert.deepEqual(d.message.headers, first.headers);
    assert.deepEqual(d.message.properties, {
      correlation_id: first.headers.id,
      reply_to: '',
      delivery_mode: 2,
      priority: 4,
      expiration: '60000',
    });
    assert.equal(d.message.body.toString(), first.body.toString());
    const raw = JSON.parse(d.rawText) as {
      fields: JsonObject;
      properties: JsonObject;
      body: string;
      body_encoding: string;
    };
    assert.equal(raw.fields.routingKey, input);
    assert.equal(raw.body, first.body.toString());
    assert.equal(raw.body_encoding, 'utf-8');
    const decoded = decodeTask(d.message);
    assert.ok(decoded.ok);
    await b.settle([{ kind: 'ack', delivery: d, outputs: [] }]);

    // Throughput: N messages of ~1 KB, each acked with one output (publish + confirm + ack), batches of 200.
    const N = 5000;
    const payload = 'x'.repeat(900);
    const msgs = Array.from({ length: N }, (_, i) => taskMessage('t.in', [i, payload]));
    let t0 = performance.now();
    for (let i = 0; i < N; i += 500) await b.publish(msgs.slice(i, i + 500).map((m) => out(input, m)));
    const publishMs = performance.now() - t0;
    t0 = performance.now();
    let done = 0;
    while (done < N) {
      const batch = await b.receive(200, 1000);
      assert.ok(batch.length > 0, 'messages keep coming');
      await b.settle(
        batch.map((dd) => ({
          kind: 'ack' as const,
          delivery: dd,
          outputs: [out(output, { ...dd.message, headers: { ...dd.message.headers, task: 't.out' } })],
        })),
      );
      done += batch.length;
    }
    const consumeMs = performance.now() - t0;
    const rates = `publish ${Math.round((N / publishMs) * 1000)} msg/s; receive+publish-confirm+ack ${Math.round((N / consumeMs) * 1000)} msg/s`;
    t.diagnostic(rates);
    console.error(`AMQP round trip (${N} x 1 KB): ${rates}`);
    assert.equal(await queueDepth(output), N);
    await b.close();
    assert.equal(await queueDepth(input), 0);
  });

  it('acks an input only after RabbitMQ confirmed its outputs; a refused output requeues the input', async () => {
    const input = q('cf-in');
    const output = q('cf-out');
    const full = q('cf-full');
    // A queue that refuses every publish: RabbitMQ nacks the confirm.
    await admin((ch) =>
      ch.assertQueue(full, { durable: true, arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } }),
    );
    const b = broker({ inputQueue: input, outputQueue: output });
    await b.connect();
    await b.publish([out(input, taskMessage('t', [1])), out(input, taskMessage('t', [2]))]);
    const ds = await receiveAll(b, 2);
    assert.equal(ds.length, 2);

    // Spy on the channels: every output confirm must have arrived before the ack goes out.
    const session = (b as unknown as { sessions: { current: { consumeCh: Channel; pubCh: amqp.ConfirmChannel } } })
      .sessions.current;
    const confirmsPending = new Set<number>();
    let n = 0;
    const events: string[] = [];
    const origPublish = session.pubCh.publish.bind(session.pubCh);
    session.pubCh.publish = ((
      ex: string,
      rk: string,
      content: Buffer,
      opts: amqp.Options.Publish,
      cb: (err: unknown) => void,
    ) => {
      const id = ++n;
      confirmsPending.add(id);
      return origPublish(ex, rk, content, opts, (err: unknown) => {
        confirmsPending.delete(id);
        events.push(`confirm ${rk} ${err ? 'nack' : 'ack'}`);
        cb(err);
      });
    }) as typeof session.pubCh.publish;
    const origAck = session.consumeCh.ack.bind(session.consumeCh);
    session.consumeCh.ack = ((m: amqp.Message, allUpTo?: boolean) => {
      events.push(`ack pending=${confirmsPending.size}`);
      return origAck(m, allUpTo);
    }) as typeof session.consumeCh.ack;

    await b.settle([
      {
        kind: 'ack',
        delivery: ds[0]!,
        outputs: [out(output, taskMessage('o', [1])), out(output, taskMessage('o', [1.5]))],
      },
    ]);
    assert.deepEqual(events, [`confirm ${output} ack`, `confirm ${output} ack`, 'ack pending=0']);
    assert.equal(await queueDepth(output), 2);

    events.length = 0;
    await assert.rejects(
      b.settle([{ kind: 'ack', delivery: ds[1]!, outputs: [out(full, taskMessage('o', [2]))] }]),
      /did not accept the outputs of 1 message.*requeued/,
    );
    assert.deepEqual(events, [`confirm ${full} nack`]);
    // The input came back (requeued), redelivered, and nothing reached the full queue.
    const [again] = await receiveAll(b, 1);
    assert.ok(again);
    assert.equal(again.redelivered, true);
    assert.equal(again.message.headers.id, ds[1]!.message.headers.id);
    await b.settle([{ kind: 'ack', delivery: again, outputs: [] }]);
    // Settling a delivery twice is skipped (acking an unknown tag would close the channel).
    await b.settle([{ kind: 'ack', delivery: again, outputs: [] }]);
    assert.equal(b.connected, true);
    await b.close();
    assert.equal(await queueDepth(input), 0);
    assert.equal(await queueDepth(full), 0);
  });

  it('reject: the set-aside queue gets {reason, time, queue, message} and the input is gone', async () => {
    const input = q('rj-in');
    const b = broker({ inputQueue: input, outputQueue: q('rj-out') });
    await b.connect();
    const m = taskMessage('t', ['bad']);
    await b.publish([out(input, m)]);
    const [d] = await receiveAll(b, 1);
    assert.ok(d);
    await b.settle([{ kind: 'reject', delivery: d, reason: 'unknown task t' }]);
    await b.close();
    assert.equal(await queueDepth(input), 0);
    const records = await drain(`${input}.rejected`);
    assert.equal(records.length, 1);
    const rec = JSON.parse(records[0]!.content.toString()) as {
      reason: string;
      time: string;
      queue: string;
      message: string;
    };
    assert.equal(rec.reason, 'unknown task t');
    assert.equal(rec.queue, input);
    assert.ok(Math.abs(Date.parse(rec.time) - Date.now()) < 60_000);
    assert.equal(rec.message, d.rawText);
    const inner = JSON.parse(rec.message) as { properties: { headers: JsonObject }; body: string };
    assert.equal(inner.properties.headers.id, m.headers.id);
    assert.equal(inner.body, m.body.toString());
    assert.equal(records[0]!.properties.deliveryMode, 2);
  });

  it('a message whose AMQP headers cannot be decoded is set aside by the broker itself (onSetAside), not thrown', async () => {
    const input = q('ud-in');
    const reported: Array<[string, string]> = [];
    const b = broker({
      inputQueue: input,
      outputQueue: q('ud-out'),
      onSetAside: (reason, rawText) => reported.push([reason, rawText]),
    });
    await b.connect();
    // Such a table cannot be produced by amqplib or py-amqp; mark the decoded table the way the amqplib patch does.
    const inner = (b as unknown as { consumer: { onDelivery(s: unknown, msg: amqp.ConsumeMessage | null): void } })
      .consumer;
    const original = inner.onDelivery.bind(inner);
    inner.onDelivery = (s, msg) => {
      if (msg?.properties.headers?.poison) {
        Object.defineProperty(msg.properties.headers, UNDECODABLE_TABLE, {
          value: { error: 'unknown AMQP field type tag "Z"', base64: '' },
        });
      }
      original(s, msg);
    };
    await b.publish([out(input, taskMessage('t', ['bad'], { poison: true })), out(input, taskMessage('t', ['good']))]);
    const ds = await receiveAll(b, 1);
    assert.equal(ds.length, 1);
    assert.deepEqual(JSON.parse(ds[0]!.message.body.toString())[0], ['good']);
    await b.settle([{ kind: 'ack', delivery: ds[0]!, outputs: [] }]);
    for (let i = 0; i < 50 && reported.length === 0; i++) await sleep(20);
    assert.equal(reported.length, 1);
    assert.match(reported[0]![0], /headers table cannot be decoded: unknown AMQP field type tag "Z"/);
    await b.close();
    assert.equal(await queueDepth(input), 0);
    const records = await drain(`${input}.rejected`);
    assert.equal(records.length, 1);
    const rec = JSON.parse(records[0]!.content.toString()) as { reason: string; message: string };
    assert.equal(rec.reason, reported[0]![0]);
    assert.equal(rec.message, reported[0]![1]);
  });

  it('requeue and close() give unsettled deliveries back to the queue', async () => {
    const input = q('rq-in');
    const b = broker({ inputQueue: input, outputQueue: q('rq-out'), prefetch: 10 });
    await b.connect();
    await b.publish(Array.from({ length: 5 }, (_, i) => out(input, taskMessage('t', [i]))));
    const ds = await receiveAll(b, 5);
    assert.equal(ds.length, 5);
    await b.settle([{ kind: 'requeue', delivery: ds[0]! }]);
    const [back] = await receiveAll(b, 1);
    assert.equal(back!.redelivered, true);
    assert.equal(back!.message.headers.id, ds[0]!.message.headers.id);
    assert.equal(b.unsettledCount, 5);
    await b.close();
    assert.equal(await queueDepth(input), 5);
    await assert.rejects(b.receive(1, 10), /closed/);
    // Late settlements after close are skipped, not thrown.
    await b.settle([{ kind: 'ack', delivery: ds[1]!, outputs: [] }]);
    const b2 = broker({ inputQueue: input, outputQueue: q('rq-out') });
    await b2.connect();
    const again = await receiveAll(b2, 5);
    assert.equal(again.length, 5);
    assert.ok(again.every((d) => d.redelivered));
    await b2.settle(again.map((d) => ({ kind: 'ack' as const, delivery: d, outputs: [] })));
    await b2.close();
    assert.equal(await queueDepth(input), 0);
  });

  it('deliveries held back for their eta widen the prefetch window, so they never stall the queue', async () => {
    const input = q('held-in');
    const b = broker({ inputQueue: input, outputQueue: q('held-out'), prefetch: 2 });
    await b.connect();
    try {
      await b.publish(Array.from({ length: 4 }, (_, i) => out(input, taskMessage('t', [i]))));
      const held = await receiveAll(b, 2);
      assert.equal(held.length, 2);
      // Prefetch 2 is used up: nothing more arrives while both are unsettled...
      assert.equal((await b.receive(2, 500)).length, 0);
      // ...until the pipeline says it holds them back (eta): the window grows by 2, like Celery's.
      b.adjustHeld(2);
      const next = await receiveAll(b, 2);
      assert.equal(next.length, 2);
      b.adjustHeld(-2);
      await b.settle([...held, ...next].map((d) => ({ kind: 'ack' as const, delivery: d, outputs: [] })));
    } finally {
      await b.close();
    }
  });

  it('406: a queue declared with x-max-priority by someone else → a clear error; passive mode and matching arguments work', async () => {
    const input = q('prio');
    // Declared the way a Celery worker with Queue(..., max_priority=10) declares it.
    await python(
      [
        'from kombu import Connection, Exchange, Queue',
        `with Connection('${PY_URL}') as c:`,
        `    Queue('${input}', Exchange('${input}', 'direct'), routing_key='${input}', max_priority=10)(c.default_channel).declare()`,
      ].join('\n'),
    );
    const b = broker({ inputQueue: input, outputQueue: q('prio-out') });
    const err = await b.connect().then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof AmqpTopologyError, String(err));
    assert.equal(err.code, 406);
    assert.equal(err.entity, input);
    assert.equal(err.argument, 'x-max-priority');
    assert.match(err.message, new RegExp(`queue '${input}' in vhost '${VHOST}'`));
    assert.match(err.message, /--amqp-passive/);
    assert.match(err.message, /--amqp-queue-arguments '\{"x-max-priority":10\}'/);
    assert.match(
      err.message,
      /received none but current is|we sent none, the existing queue has the value '10' of type 'signedint'/,
    );
    assert.equal(b.connected, false);
    await b.close();

    // Passive: no declaration at all, consumes from the queue as it is (priorities honoured by RabbitMQ).
    const out1 = q('prio-out');
    await admin((ch) => ch.assertQueue(out1, { durable: true }));
    // Queued before anyone consumes (RabbitMQ orders by priority only what waits in the queue).
    const pub = broker({ inputQueue: q('prio-pub'), outputQueue: out1, passive: false });
    await pub.connect();
    await pub.publish([out(input, taskMessage('t', ['low']), 1), out(input, taskMessage('t', ['high']), 9)]);
    await pub.close();
    const p = broker({ inputQueue: input, outputQueue: out1, passive: true, prefetch: 10 });
    await p.connect();
    const got = await receiveAll(p, 2);
    assert.deepEqual(
      got.map((d) => JSON.parse(d.message.body.toString())[0][0]),
      ['high', 'low'],
    );
    assert.deepEqual(
      got.map((d) => d.message.properties.priority),
      [9, 1],
    );
    await p.settle(got.map((d) => ({ kind: 'ack' as const, delivery: d, outputs: [] })));
    await p.close();
    // Passive against a missing queue: a clear 404.
    const missing = broker({ inputQueue: q('nope'), outputQueue: out1, passive: true });
    await assert.rejects(
      missing.connect(),
      (e: unknown) => e instanceof AmqpTopologyError && e.code === 404 && /does not exist.*passive/.test(e.message),
    );
    // Matching arguments: declares fine (we type 10 as signedint, like py-amqp).
    const m = broker({ inputQueue: input, outputQueue: q('prio-out2'), queueArguments: { 'x-max-priority': 10 } });
    await m.connect();
    await m.close();
    // The queue is untouched.
    const rows = ctlJson<{ name: string; arguments: unknown }>([
      'list_queues',
      '-p',
      VHOST,
      'name',
      'arguments',
    ]).filter((r) => r.name === input);
    assert.deepEqual(rows[0]?.arguments, [['x-max-priority', 'signedint', 10]]);
  });

  it('quorum queues: per-consumer prefetch (RabbitMQ refuses global QoS on them), learned in passive mode', async () => {
    const input = q('qq');
    const output = q('qq-out');
    const logs: LogLine[] = [];
    const a = broker({
      inputQueue: input,
      outputQueue: output,
      queueArguments: { 'x-queue-type': 'quorum' },
      prefetch: 5,
    });
    await a.connect();
    await a.publish([out(input, taskMessage('t', ['q1']))]);
    const [d1] = await receiveAll(a, 1);
    await a.settle([{ kind: 'ack', delivery: d1!, outputs: [] }]);
    const rows = ctlJson<{ name: string; arguments: unknown }>([
      'list_queues',
      '-p',
      VHOST,
      'name',
      'arguments',
    ]).filter((r) => r.name === input);
    assert.deepEqual(rows[0]?.arguments, [['x-queue-type', 'longstr', 'quorum']]);
    await a.close();
    const p = broker({
      inputQueue: input,
      outputQueue: output,
      passive: true,
      prefetch: 5,
      logger: captureLogger(logs),
    });
    await p.connect();
    assert.ok(logs.some((l) => /does not support global QoS/.test(l.message)));
    await p.publish([out(input, taskMessage('t', ['q2']))]);
    const [d2] = await receiveAll(p, 1);
    assert.deepEqual(JSON.parse(d2!.message.body.toString())[0], ['q2']);
    await p.settle([{ kind: 'ack', delivery: d2!, outputs: [] }]);
    await p.close();
  });

  it('reconnects after RabbitMQ closes the connection mid-stream; no message lost, duplicates only for redelivered ones', async (t) => {
    const input = q('rc-in');
    const output = q('rc-out');
    const logs: LogLine[] = [];
    const b = broker({ inputQueue: input, outputQueue: output, prefetch: 40, logger: captureLogger(logs) });
    await b.connect();
    const N = 3000;
    const ids = new Set<string>();
    const batch: Outgoing[] = [];
    for (let i = 0; i < N; i++) {
      const m = taskMessage('t', [i]);
      ids.add(m.headers.id as string);
      batch.push(out(input, m));
    }
    for (let i = 0; i < N; i += 500) await b.publish(batch.slice(i, i + 500));

    const redelivered = new Set<string>();
    let processed = 0;
    let receiveErrors = 0;
    let settleErrors = 0;
    let kills = 0;
    let firstKillDone = false;
    let killing: Promise<void> | null = null;
    const seen = new Set<string>();
    const deadline = Date.now() + 30_000;
    while (seen.size < N && Date.now() < deadline) {
      // rabbitmqctl can take seconds to start on a busy machine: wait for it (deliveries stay unacked in our
      // prefetch meanwhile), so the forced close always lands mid-stream.
      if (kills === 1 && !firstKillDone) {
        await sleep(50);
        continue;
      }
      let ds: Delivery[];
      try {
        ds = await b.receive(20, 300);
      } catch (err) {
        assert.ok(err instanceof AmqpUnavailableError, String(err));
        receiveErrors++;
        await sleep(50);
        continue;
      }
      for (const d of ds) if (d.redelivered) redelivered.add(d.message.headers.id as string);
      try {
        await b.settle(
          ds.map((d) => ({
            kind: 'ack' as const,
            delivery: d,
            outputs: [
              out(output, { ...d.message, headers: { ...d.message.headers, task: 'out', redelivered: d.redelivered } }),
            ],
          })),
        );
        for (const d of ds) seen.add(d.message.headers.id as string);
      } catch (err) {
        assert.ok(err instanceof AmqpUnavailableError, String(err));
        settleErrors++;
      }
      processed += ds.length;
      if (kills === 0 && processed >= 300) {
        kills++;
        // RabbitMQ closes the connection (connection.close 320 CONNECTION_FORCED); takes rabbitmqctl ~0.5 s.
        killing = ctlAsync(['close_all_connections', '--vhost', VHOST, 'amqp test: forced close']).then(() => {
          firstKillDone = true;
        });
      } else if (kills === 1 && firstKillDone && b.connected && processed >= 600) {
        kills++;
        {
          // The socket dies without any AMQP goodbye.
          const s = (
            b as unknown as {
              sessions: { current: { conn: { connection: { stream: { destroy(err?: Error): void } } } } | null };
            }
          ).sessions.current;
          s?.conn.connection.stream.destroy(new Error('simulated network failure'));
        }
      }
      await sleep(25); // ~4 s in all, so that both failures hit mid-stream
    }
    await killing;
    const generation = b.connectionGeneration;
    await b.close();
    assert.equal(generation, 3, 'two reconnects');
    assert.equal(seen.size, N, 'every input processed and acked once at least');
    assert.equal(await queueDepth(input), 0);

    const outputs = await drain(output);
    const count = new Map<string, number>();
    for (const m of outputs) {
      const id = m.properties.headers?.id as string;
      count.set(id, (count.get(id) ?? 0) + 1);
    }
    const missing = [...ids].filter((id) => !count.has(id));
    assert.deepEqual(missing, [], 'no output lost');
    const dupes = [...count].filter(([, c]) => c > 1).map(([id]) => id);
    const unexplained = dupes.filter((id) => !redelivered.has(id));
    assert.deepEqual(unexplained, [], 'duplicates only for redelivered inputs');
    const levels = logs.map((l) => `${l.level} ${l.message}`);
    assert.ok(
      levels.some((l) => /^warn AMQP connection lost: .*CONNECTION_FORCED/.test(l)),
      levels.join('\n'),
    );
    assert.ok(levels.some((l) => /^info AMQP reconnecting in \d+\.\ds/.test(l)));
    assert.equal(levels.filter((l) => /^info AMQP connection resumed after/.test(l)).length, 2);
    const summary = `outputs ${outputs.length} for ${N} inputs, ${dupes.length} duplicate(s), ${redelivered.size} redelivered, receive errors ${receiveErrors}, settle errors ${settleErrors}`;
    t.diagnostic(summary);
    console.error(`AMQP reconnect: ${summary}`);
  });

  it('publish() waits for a lost connection to come back', async () => {
    const input = q('pw-in');
    const b = broker({ inputQueue: input, outputQueue: q('pw-out'), reconnectMinMs: 300 });
    await b.connect();
    const s = (
      b as unknown as { sessions: { current: { conn: { connection: { stream: { destroy(err?: Error): void } } } } } }
    ).sessions.current;
    s.conn.connection.stream.destroy(new Error('simulated network failure'));
    await sleep(20);
    assert.equal(b.connected, false);
    await assert.rejects(b.receive(10, 50), AmqpUnavailableError);
    await b.publish([out(input, taskMessage('t', ['after outage']))]);
    assert.equal(b.connected, true);
    const [d] = await receiveAll(b, 1);
    assert.deepEqual(JSON.parse(d!.message.body.toString())[0], ['after outage']);
    await b.settle([{ kind: 'ack', delivery: d!, outputs: [] }]);
    await b.close();
  });

  it('Python Celery send_task → we receive and decode it (properties, headers, a 64-bit header)', async () => {
    const input = q('py-in');
    const b = broker({ inputQueue: input, outputQueue: q('py-out') });
    await b.connect();
    const id = randomUUID();
    await python(
      [
        'from celery import Celery',
        `app = Celery(broker='${PY_URL}')`,
        `app.send_task('posthog.tasks.process_event.process_event_with_plugins', args=['did', '1.2.3.4', 'http://s', {'event': '$pageview', 'n': 70000}, 2, '2020-11-02T22:13:06Z', None], kwargs={}, queue='${input}', task_id='${id}', priority=5, expires=600, headers={'big': 2**40, 'neg': -5, 'mid': 300})`,
      ].join('\n'),
    );
    const [d] = await receiveAll(b, 1);
    assert.ok(d, 'message received');
    assert.equal(b.connected, true);
    const h = d.message.headers;
    assert.equal(h.task, 'posthog.tasks.process_event.process_event_with_plugins');
    assert.equal(h.id, id);
    assert.equal(h.lang, 'py');
    assert.equal(h.big, 2 ** 40, 'py-amqp writes it as L (int64), amqplib alone would drop the connection');
    assert.equal(h.neg, -5);
    assert.equal(h.mid, 300);
    assert.deepEqual(h.timelimit, [null, null]);
    assert.equal(typeof h.expires, 'string');
    const p = d.message.properties;
    assert.equal(p.correlation_id, id);
    assert.equal(typeof p.reply_to, 'string');
    assert.equal(p.delivery_mode, 2);
    assert.equal(p.priority, 5);
    assert.match(String(p.expiration), /^\d+$/);
    assert.equal(d.message.contentType, 'application/json');
    assert.equal(d.message.contentEncoding, 'utf-8');
    const task = decodeTask(d.message);
    assert.ok(task.ok, task.ok ? '' : task.reason);
    assert.equal(task.task.protocol, 2);
    assert.deepEqual(task.task.args[3], { event: '$pageview', n: 70000 });
    await b.settle([{ kind: 'ack', delivery: d, outputs: [] }]);
    await b.close();
  });

  it(
    'what we publish is read unchanged by py-amqp and executed by a Celery 5.2 worker',
    { timeout: 40_000 },
    async () => {
      const input = q('pe-in');
      const sink = q('pe-celery');
      const check = q('pe-check');
      const b = broker({ inputQueue: input, outputQueue: sink });
      await b.connect();

      // 1. py-amqp basic_get of a message with awkward header integers (amqplib untagged would write 's'/'b').
      const tricky = taskMessage('posthog.tasks.process_event.process_event', [1], {
        retries: 200,
        timelimit: [300, 240],
        neg: -5,
        big: 2 ** 40,
        nested: { a: [1, 70000, -70000, 1.5, null, true, 'x'] },
      });
      await b.publish([out(check, tricky, 3)]);
      const got = JSON.parse(
        await python(
          [
            'import amqp, json',
            `c = amqp.Connection('127.0.0.1:5672', userid='guest', password='guest', virtual_host='${VHOST}')`,
            'c.connect()',
            'ch = c.channel()',
            `m = ch.basic_get('${check}', no_ack=True)`,
            "print(json.dumps({'properties': m.properties, 'body': m.body if isinstance(m.body, str) else m.body.decode()}))",
            'c.close()',
          ].join('\n'),
        ),
      ) as { properties: Record<string, unknown>; body: string };
      assert.deepEqual(got.properties.application_headers, tricky.headers);
      assert.equal(got.properties.content_type, 'application/json');
      assert.equal(got.properties.content_encoding, 'utf-8');
      assert.equal(got.properties.delivery_mode, 2);
      assert.equal(got.properties.priority, 3);
      assert.equal(got.properties.correlation_id, tricky.headers.id);
      assert.equal(got.properties.reply_to, '');
      assert.equal(got.body, tricky.body.toString());

      // 2. A process_event task (as PostHog's Python side defines it) executed by a real Celery worker.
      const dir = mkdtempSync(join(tmpdir(), 'amqp-celery-'));
      const outFile = join(dir, 'out.jsonl');
      writeFileSync(
        join(dir, 'sinkapp.py'),
        [
          'import json, os',
          'from celery import Celery',
          "app = Celery('sinkapp', broker=os.environ['SINK_URL'])",
          'app.conf.worker_hijack_root_logger = False',
          "@app.task(name='posthog.tasks.process_event.process_event', bind=True)",
          'def process_event(self, distinct_id, ip, site_url, data, team_id, now, sent_at):',
          "    with open(os.environ['SINK_OUT'], 'a') as f:",
          "        f.write(json.dumps({'id': self.request.id, 'distinct_id': distinct_id, 'data': data, 'team_id': team_id, 'retries': self.request.retries, 'origin': self.request.origin}) + '\\n')",
        ].join('\n'),
      );
      const id = randomUUID();
      const pe = taskMessage(
        'posthog.tasks.process_event.process_event',
        [
          'did',
          '127.0.0.1',
          'http://site',
          { event: '$pageview', properties: { a: 1 } },
          2,
          '2020-11-02T22:13:06.123Z',
          null,
        ],
        {},
        id,
      );
      const input1 = taskMessage('posthog.tasks.process_event.process_event_with_plugins', ['x']);
      await b.publish([out(input, input1)]);
      const [d] = await receiveAll(b, 1);
      await b.settle([{ kind: 'ack', delivery: d!, outputs: [out(sink, pe)] }]);
      const worker = spawn(
        PYTHON,
        [
          '-m',
          'celery',
          '-A',
          'sinkapp',
          'worker',
          '-P',
          'solo',
          '-Q',
          sink,
          '--without-heartbeat',
          '--without-mingle',
          '--without-gossip',
          '-l',
          'WARNING',
        ],
        {
          cwd: dir,
          env: { ...process.env, SINK_URL: PY_URL, SINK_OUT: outFile, PYTHONPATH: dir },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      worker.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      try {
        const deadline = Date.now() + 25_000;
        while (Date.now() < deadline && !(existsSync(outFile) && readFileSync(outFile, 'utf8').includes(id)))
          await sleep(100);
        assert.ok(existsSync(outFile), `Celery worker executed nothing:\n${stderr}`);
        const line = JSON.parse(readFileSync(outFile, 'utf8').trim().split('\n')[0]!) as JsonObject;
        assert.deepEqual(line, {
          id,
          distinct_id: 'did',
          data: { event: '$pageview', properties: { a: 1 } },
          team_id: 2,
          retries: 0,
          origin: 'posthog-plugins@test',
        });
      } finally {
        worker.kill('SIGTERM');
        await new Promise((r) => worker.once('exit', r));
        rmSync(dir, { recursive: true, force: true });
      }
      await b.close();
    },
  );
});
