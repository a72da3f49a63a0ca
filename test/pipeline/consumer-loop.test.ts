import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { decodeTask } from '../../protocol/decode';
import { derivedUuid } from '../../protocol/ids';
import type { PluginEvent } from '../../protocol/posthog';
import type { RawMessage, TaskMessage } from '../../protocol/types';
import type { Settlement } from '../../src/brokers/broker';
import { BatchProcessor, ChainUnavailableError, type ChainRunner } from '../../src/pipeline/batch-processor';
import { ConsumerLoop } from '../../src/pipeline/consumer-loop';
import { ingestionTask } from '../helpers/ingestion-task';
import { MemoryBroker, type MemoryBrokerOptions } from '../helpers/memory-broker';
import { captureLogger, closeHarness, harness, until, type CapturedLog, type Harness } from '../plugins/helpers';

/**
 * The consumer loop against the in-memory broker: what it publishes and acks, in which order, and what it does
 * when the broker or the plugins fail. No services; plugins are a stub chain except where the real one matters.
 */
const identity: ChainRunner = { runChain: async (_team, events) => events };

function decoded(message: RawMessage): TaskMessage {
  const result = decodeTask(message);
  assert.ok(result.ok, result.ok ? '' : result.reason);
  return result.task;
}

interface Rig {
  broker: MemoryBroker;
  loop: ConsumerLoop;
  logs: CapturedLog[];
  outputs(): TaskMessage[];
}

/** Every rig of the running test, shut down after it whatever the outcome (a failed test must not hang the file). */
const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) await shutdown(r);
});

function rig(
  opts: { plugins?: ChainRunner; batchSize?: number; broker?: MemoryBroker | MemoryBrokerOptions } = {},
): Rig {
  const broker = opts.broker instanceof MemoryBroker ? opts.broker : new MemoryBroker(opts.broker);
  const { logger, logs } = captureLogger();
  const processor = new BatchProcessor({
    plugins: opts.plugins ?? identity,
    logger,
    origin: 'test@loop',
    outputQueue: 'celery',
  });
  const loop = new ConsumerLoop({ broker, processor, logger, batchSize: opts.batchSize ?? 10, pollMs: 20 });
  const r: Rig = { broker, loop, logs, outputs: () => broker.messages('celery').map(decoded) };
  rigs.push(r);
  return r;
}

/** Stops the loop and closes the broker the way the worker does. */
async function shutdown(r: Rig): Promise<void> {
  await r.loop.stop();
  await r.broker.close();
}

/** A promise and the function that resolves it. */
function latch(): { promise: Promise<void>; open: () => void } {
  let open = (): void => {};
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe('the consumer loop, happy path with a real plugin', () => {
  let h: Harness;
  before(async () => {
    h = await harness([{ url: 'file:trail.js', name: 'trail', teamId: 2, order: 1, config: { tag: 't' } }]);
  });
  after(() => closeHarness(h));

  test('each process_event_with_plugins comes out as one process_event with the kwargs Python expects', async () => {
    const r = rig({ plugins: h.manager });
    for (let i = 1; i <= 3; i++) r.broker.sendTask(ingestionTask(i));
    r.loop.start();
    await until(() => r.outputs().length === 3, '3 outputs');
    await shutdown(r);
    const inputs = [1, 2, 3].map((i) => ingestionTask(i));
    assert.deepEqual(
      r.outputs().map((t) => ({
        task: t.task,
        id: t.id,
        parentId: t.parentId,
        rootId: t.rootId,
        args: t.args,
        kwargs: t.kwargs,
      })),
      inputs.map((input, i) => ({
        task: 'posthog.tasks.process_event.process_event',
        id: derivedUuid(`${input.id}:process_event`),
        parentId: input.id,
        rootId: input.id,
        args: [],
        kwargs: {
          distinct_id: `user-${i + 1}`,
          ip: '127.0.0.1',
          site_url: 'http://localhost:8000',
          data: { event: `e${i + 1}`, uuid: `u${i + 1}`, properties: { n: i + 1, trail: ['t'] } },
          team_id: 2,
          now: '2021-10-01T12:00:00.000Z',
          sent_at: null,
        },
      })),
    );
    assert.equal(r.outputs()[0]?.headers['origin'], 'test@loop');
    assert.deepEqual(r.broker.unackedTags, []);
    assert.deepEqual(r.broker.messages(r.broker.inputQueue), []);
    assert.equal(r.loop.stats.received, 3);
    assert.equal(r.loop.stats.published, 3);
    assert.equal(r.broker.held, 0, 'what the loop added to the prefetch limit is taken back');
  });
});

describe('the consumer loop: settle and publish', () => {
  test('every ack comes after its output is published', async () => {
    const r = rig({ batchSize: 2 });
    for (let i = 1; i <= 5; i++) r.broker.sendTask(ingestionTask(i));
    r.loop.start();
    await until(() => r.outputs().length === 5, '5 outputs');
    await shutdown(r);
    const log = r.broker.log;
    assert.equal(log.filter((l) => l.startsWith('ack ')).length, 5);
    for (const [i, entry] of log.entries())
      if (entry.startsWith('ack ')) assert.equal(log[i - 1], 'publish celery', log.join('\n'));
  });

  test('a settle that fails leaves the input unacked and unpublished, and is retried until it works', async () => {
    const r = rig();
    r.broker.sendTask(ingestionTask(1));
    r.broker.failNext('settle', new Error('connection lost'));
    // [published, unacked] right after each settle attempt.
    const states: Array<[number, number]> = [];
    const settle = r.broker.settle.bind(r.broker);
    r.broker.settle = async (settlements) => {
      try {
        return await settle(settlements);
      } finally {
        states.push([r.outputs().length, r.broker.unackedTags.length]);
      }
    };
    r.loop.start();
    await until(() => r.outputs().length === 1, 'the output');
    await shutdown(r);
    assert.deepEqual(
      states,
      [
        [0, 1],
        [1, 0],
      ],
      'nothing published or acked by the failed settle; the retry did both',
    );
    assert.ok(r.logs.some((l) => l.message === 'could not settle 1 message(s), retrying in 100 ms: connection lost'));
  });

  test('a settle whose reply was lost is settled again without publishing twice', async () => {
    const r = rig();
    r.broker.sendTask(ingestionTask(1));
    r.broker.failNext('settle', new Error('reply lost'), { afterApplying: true });
    r.loop.start();
    await until(() => r.logs.some((l) => l.message.includes('reply lost')), 'the settle error');
    await until(() => r.loop.inHand === 0, 'the retried settle');
    await shutdown(r);
    assert.equal(r.outputs().length, 1);
    assert.equal(r.loop.stats.published, 1);
  });

  for (const overlapSettle of [true, false]) {
    test(`overlapSettle ${overlapSettle}: the next batch ${overlapSettle ? 'is' : 'is not'} processed while the previous one settles; settles stay in order`, async () => {
      const release = latch();
      const settling: string[] = [];
      class SlowSettle extends MemoryBroker {
        override async settle(settlements: Settlement[]): Promise<void> {
          const acks = settlements.filter((s) => s.kind === 'ack');
          if (acks.length) settling.push(acks.map((s) => s.delivery.tag).join());
          if (settling.length === 1 && acks.length) await release.promise;
          return super.settle(settlements);
        }
      }
      const processed: string[] = [];
      const plugins: ChainRunner = {
        runChain: async (_t, events) => (processed.push(...events.map((e) => e.event as string)), events),
      };
      const r = rig({ plugins, batchSize: 1, broker: new SlowSettle({ overlapSettle }) });
      r.broker.sendTask(ingestionTask(1));
      r.broker.sendTask(ingestionTask(2));
      r.loop.start();
      try {
        await until(() => settling.length === 1, 'the first settle');
        if (overlapSettle) await until(() => processed.length === 2, 'the second batch processed');
        else await new Promise((resolve) => setTimeout(resolve, 50));
        assert.deepEqual(processed, overlapSettle ? ['e1', 'e2'] : ['e1']);
        assert.equal(settling.length, 1, 'the second settle waits for the first');
      } finally {
        // Also when an assertion failed: a settle left waiting would keep the loop from stopping.
        release.open();
      }
      await until(() => r.outputs().length === 2, '2 outputs');
      await shutdown(r);
      assert.deepEqual(
        r.outputs().map((t) => (t.kwargs['data'] as { event: string }).event),
        ['e1', 'e2'],
      );
    });
  }
});

describe('the consumer loop: failures', () => {
  test('broker errors on receive: the loop backs off, doubling the pause, and goes on', async () => {
    const r = rig();
    r.broker.failNext('receive', new Error('broker down'), { times: 2 });
    r.broker.sendTask(ingestionTask(1));
    r.loop.start();
    await until(() => r.outputs().length === 1, 'the output after the errors');
    await shutdown(r);
    const errors = r.logs.filter((l) => l.level === 'error').map((l) => l.message);
    assert.deepEqual(errors, [
      'consumer loop error, retrying in 100 ms: broker down',
      'consumer loop error, retrying in 200 ms: broker down',
    ]);
  });

  test('a chain that cannot run gives the batch back: it is redelivered and processed', async () => {
    let calls = 0;
    const seen: boolean[] = [];
    const broker = new MemoryBroker();
    const receive = broker.receive.bind(broker);
    broker.receive = async (max, waitMs) => {
      const got = await receive(max, waitMs);
      seen.push(...got.map((d) => d.redelivered));
      return got;
    };
    const plugins: ChainRunner = {
      async runChain(_team, events) {
        if (calls++ === 0) throw new ChainUnavailableError('PluginManager is closed');
        return events;
      },
    };
    const r = rig({ plugins, broker });
    r.broker.sendTask(ingestionTask(1));
    r.loop.start();
    await until(() => r.outputs().length === 1, 'the output');
    await shutdown(r);
    assert.deepEqual(seen, [false, true]);
    assert.ok(r.logs.some((l) => l.message === 'consumer loop error, retrying in 100 ms: PluginManager is closed'));
  });

  test('poison messages are set aside with their reason; the rest of the batch comes out', async () => {
    const r = rig();
    const deep: Record<string, unknown> = {};
    let at = deep;
    for (let i = 0; i < 200; i++) at = at['d'] = {};
    r.broker.sendTask(ingestionTask(1));
    r.broker.sendTask({ ...ingestionTask(2), task: 'posthog.tasks.other' });
    r.broker.sendTask(ingestionTask(3, { data: { event: 'e3', properties: deep as never } }));
    r.broker.push(r.broker.inputQueue, '{"not": "an envelope"}');
    r.broker.sendTask(ingestionTask(4));
    r.loop.start();
    await until(() => r.outputs().length === 2 && r.broker.setAside.length === 3, 'outputs and set-aside messages');
    await shutdown(r);
    assert.deepEqual(
      r.outputs().map((t) => t.parentId),
      [ingestionTask(1).id, ingestionTask(4).id],
    );
    const reasons = r.broker.setAside.map((s) => s.reason);
    assert.match(reasons[0] ?? '', /^envelope /, 'the broker sets aside what it cannot read');
    assert.match(reasons[1] ?? '', /^unknown task "posthog.tasks.other"/);
    assert.match(reasons[2] ?? '', /too deeply nested \(more than 128 levels\)/);
    assert.equal(r.loop.stats.rejected, 2);
    assert.deepEqual(r.broker.unackedTags, []);
  });
});

describe('the consumer loop: eta, expires and shutdown', () => {
  test('a task with an eta is held unacked while later tasks go through, then runs when due', async () => {
    const r = rig({ broker: { prefetch: 10 } });
    const eta = new Date(Date.now() + 300);
    r.broker.sendTask(ingestionTask(1, { eta }));
    r.broker.sendTask(ingestionTask(2));
    r.loop.start();
    await until(() => r.outputs().length === 1, 'the task without eta');
    assert.equal(r.loop.stats.waiting, 1);
    assert.equal(r.broker.unackedTags.length, 1, 'the held task stays unacked');
    assert.equal(r.broker.held, 10 + 1, 'the prefetch limit is widened for the held task');
    await until(() => r.outputs().length === 2, 'the task with eta');
    assert.ok(Date.now() >= eta.getTime());
    await shutdown(r);
    assert.deepEqual(
      r.outputs().map((t) => t.parentId),
      [ingestionTask(2).id, ingestionTask(1).id],
    );
    assert.equal(r.broker.held, 0);
  });

  test('an expired task is acked without running or publishing', async () => {
    let ran = 0;
    const plugins: ChainRunner = { runChain: async (_t, events) => ((ran += events.length), events) };
    const r = rig({ plugins });
    r.broker.sendTask(ingestionTask(1, { expires: new Date(Date.now() - 1_000) }));
    r.loop.start();
    await until(() => r.loop.stats.expired === 1, 'the expiry');
    await until(() => r.broker.unackedTags.length === 0, 'the ack');
    await shutdown(r);
    assert.deepEqual([ran, r.outputs().length, r.broker.log.filter((l) => l.startsWith('ack')).length], [0, 0, 1]);
  });

  test('stop finishes the batch in hand and gives back held (eta) messages, redelivered', async () => {
    const inChain = latch();
    const release = latch();
    const plugins: ChainRunner = {
      async runChain(_t, events: PluginEvent[]) {
        inChain.open();
        await release.promise;
        return events;
      },
    };
    const r = rig({ plugins, batchSize: 2 });
    r.broker.sendTask(ingestionTask(1, { eta: new Date(Date.now() + 60_000) }));
    r.broker.sendTask(ingestionTask(2));
    r.loop.start();
    await inChain.promise;
    const stopped = r.loop.stop();
    release.open();
    await stopped;
    assert.equal(r.outputs().length, 1, 'the batch in hand is settled');
    assert.deepEqual(r.broker.unackedTags, [], 'the held task went back');
    const back = r.broker.messages(r.broker.inputQueue);
    assert.deepEqual(
      back.map((m) => [m.headers['id'], m.headers['redelivered']]),
      [[ingestionTask(1).id, true]],
    );
    assert.equal(r.broker.held, 0);
    assert.ok(r.logs.some((l) => l.message === 'gave 1 eta message(s) back to the queue'));
    await r.broker.close();
  });
});
