import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeTask } from '../../protocol/decode';
import { derivedUuid } from '../../protocol/ids';
import type { OutgoingTask } from '../../protocol/types';
import type { Delivery } from '../../src/brokers/broker';
import { silentLogger } from '../../src/log';
import {
  BatchProcessor,
  type BatchProcessorOptions,
  type ChainRunner,
  type Outcome,
} from '../../src/pipeline/batch-processor';
import { SuspectList } from '../../src/pipeline/suspects';
import { ingestionTask } from '../helpers/ingestion-task';
import { MemoryBroker } from '../helpers/memory-broker';
import { captureLogger } from '../plugins/helpers';

/** Outcomes of one batch, decided by BatchProcessor over deliveries as a broker hands them out. */
async function deliveries(tasks: OutgoingTask[]): Promise<Delivery[]> {
  const broker = new MemoryBroker();
  for (const t of tasks) broker.sendTask(t);
  return broker.receive(tasks.length, 0);
}

function processor(plugins: ChainRunner, opts: Partial<BatchProcessorOptions> = {}): BatchProcessor {
  return new BatchProcessor({ plugins, logger: silentLogger(), origin: 'test@batch', outputQueue: 'celery', ...opts });
}

function summary(outcomes: Outcome[]): string[] {
  return outcomes.map((o) => {
    const id = o.delivery.message.headers['id'] as string;
    const n = Number(id.slice(-4));
    if (o.kind === 'ack') return `${n} ${o.result}`;
    if (o.kind === 'reject') return `${n} reject: ${o.reason}`;
    return `${n} wait`;
  });
}

/** A chain that records the events of each call and how many calls were in flight at once. */
function recordingChain(
  delayMs = 0,
): ChainRunner & { calls: Array<[number, string[]]>; othersInFlight: number[]; maxInFlight: number; inFlight: number } {
  const chain = {
    calls: [] as Array<[number, string[]]>,
    /** Per call: how many other calls were in flight when it started. */
    othersInFlight: [] as number[],
    maxInFlight: 0,
    inFlight: 0,
    async runChain(teamId: number, events: Array<{ event?: unknown } & object>) {
      chain.calls.push([teamId, events.map((e) => e.event as string)]);
      chain.othersInFlight.push(chain.inFlight);
      chain.inFlight++;
      chain.maxInFlight = Math.max(chain.maxInFlight, chain.inFlight);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      chain.inFlight--;
      return events;
    },
  };
  return chain as never;
}

describe('BatchProcessor', () => {
  test('one chain call per team, events in arrival order; outcomes in delivery order', async () => {
    const chain = recordingChain();
    const batch = await deliveries([
      ingestionTask(1, { teamId: 2 }),
      ingestionTask(2, { teamId: 3 }),
      ingestionTask(3, { teamId: 2 }),
    ]);
    const outcomes = await processor(chain).process(batch);
    assert.deepEqual(chain.calls, [
      [2, ['e1', 'e3']],
      [3, ['e2']],
    ]);
    assert.deepEqual(summary(outcomes), ['1 published', '2 published', '3 published']);
    const out = outcomes[0];
    assert.ok(out?.kind === 'ack' && out.outputs.length === 1);
    const [output] = out.outputs;
    assert.equal(output?.queue, 'celery');
    assert.equal(output?.priority, 0);
    const task = decodeTask(output!.message);
    assert.ok(task.ok);
    assert.equal(
      task.task.id,
      derivedUuid(`${ingestionTask(1).id}:process_event`),
      'a redelivered input yields the same output id',
    );
    assert.equal(task.task.headers['origin'], 'test@batch');
  });

  test('an event a plugin drops is acked without output', async () => {
    const dropSecond: ChainRunner = {
      runChain: async (_t, events) => events.map((e) => (e.event === 'e2' ? null : e)),
    };
    const outcomes = await processor(dropSecond).process(await deliveries([ingestionTask(1), ingestionTask(2)]));
    assert.deepEqual(summary(outcomes), ['1 published', '2 dropped']);
    assert.deepEqual(outcomes[1]?.kind === 'ack' && outcomes[1].outputs, []);
  });

  test('eta and expires are judged against the clock; replay (ignoreEta) runs an eta task at once', async () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    const eta = new Date(now + 5_000);
    const tasks = [
      ingestionTask(1, { eta }),
      ingestionTask(2, { expires: new Date(now - 1) }),
      ingestionTask(3, { expires: new Date(now + 1) }),
    ];
    const chain = recordingChain();
    const outcomes = await processor(chain, { now: () => now }).process(await deliveries(tasks));
    assert.deepEqual(summary(outcomes), ['1 wait', '2 expired', '3 published']);
    assert.equal(outcomes[0]?.kind === 'wait' && outcomes[0].dueMs, eta.getTime());
    assert.deepEqual(chain.calls, [[2, ['e3']]], 'an expired task never reaches the plugins');
    const replay = await processor(recordingChain(), { now: () => now, ignoreEta: true }).process(
      await deliveries([ingestionTask(1, { eta })]),
    );
    assert.deepEqual(summary(replay), ['1 published']);
  });

  test('arguments Python could not bind are set aside with the reason', async () => {
    const task = { ...ingestionTask(1), args: ingestionTask(1).args.slice(0, 4) };
    const outcomes = await processor(recordingChain()).process(await deliveries([task, ingestionTask(2)]));
    assert.deepEqual(summary(outcomes), [
      `1 reject: posthog.tasks.process_event.process_event_with_plugins[${task.id}]: missing required arguments 'team_id', 'now'`,
      '2 published',
    ]);
  });

  test('at most teamConcurrency team chains run at once', async () => {
    const chain = recordingChain(10);
    const tasks = Array.from({ length: 6 }, (_, i) => ingestionTask(i + 1, { teamId: 10 + i }));
    const outcomes = await processor(chain, { teamConcurrency: 2 }).process(await deliveries(tasks));
    assert.equal(outcomes.filter((o) => o.kind === 'ack').length, 6);
    assert.equal(chain.maxInFlight, 2);
  });

  test('a suspect event runs alone, after the rest of its batch, with nothing else in flight', async () => {
    const chain = recordingChain(5);
    const suspects = new SuspectList();
    suspects.add([ingestionTask(2).id]);
    const { logger, logs } = captureLogger();
    const tasks = [ingestionTask(1), ingestionTask(2), ingestionTask(3), ingestionTask(4, { teamId: 3 })];
    const p = processor(chain, { suspects, logger });
    const [outcomes] = await Promise.all([
      p.process(await deliveries(tasks)),
      p.process(await deliveries([ingestionTask(5, { teamId: 4 })])),
    ]);
    assert.deepEqual(summary(outcomes), ['1 published', '2 published', '3 published', '4 published']);
    const alone = chain.calls.findIndex(([, events]) => events.includes('e2'));
    assert.deepEqual(chain.calls[alone], [2, ['e2']]);
    assert.equal(alone, chain.calls.length - 1, 'after every other call, of this batch and of the one beside it');
    assert.equal(chain.othersInFlight[alone], 0);
    assert.equal(chain.maxInFlight, 3, 'the ordinary calls of both batches ran side by side');
    assert.ok(logs.some((l) => l.message.startsWith('running an event alone') && l['taskId'] === ingestionTask(2).id));
  });
});
