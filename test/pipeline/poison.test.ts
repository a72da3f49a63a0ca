import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MAX_NESTING_DEPTH } from '../../protocol/limits';
import type { PluginEvent } from '../../protocol/posthog';
import type { JsonObject } from '../../protocol/types';
import type { Delivery } from '../../src/brokers/broker';
import { silentLogger } from '../../src/log';
import {
  BatchProcessor,
  ChainUnavailableError,
  type ChainRunner,
  type Outcome,
} from '../../src/pipeline/batch-processor';
import { closeHarness, harness, type Harness } from '../plugins/helpers';

/**
 * A poison message is only that message's problem: whatever fails on one event (decoding, its arguments, the
 * plugin chain, encoding what the plugins made of it) sets that message aside with the reason, and every other
 * message of the batch gets its outcome.
 */
const TASK = 'posthog.tasks.process_event.process_event_with_plugins';

function nested(depth: number): unknown {
  let v: unknown = 'bottom';
  for (let i = 0; i < depth; i++) v = { d: v };
  return v;
}

/** A v2 delivery of process_event_with_plugins; the body is written by hand so that any depth fits. */
function delivery(i: number, opts: { teamId?: number; properties?: string; body?: string } = {}): Delivery {
  const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
  const data = `{"event": "e${i}", "uuid": "u${i}", "properties": ${opts.properties ?? '{}'}}`;
  const body =
    opts.body ??
    `[["user-${i}", "127.0.0.1", "", ${data}, ${opts.teamId ?? 2}, "2020-01-01T00:00:00Z", null], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`;
  return {
    tag: `tag-${i}`,
    queue: 'posthog-plugins',
    redelivered: false,
    rawText: body,
    message: {
      headers: { lang: 'py', task: TASK, id },
      properties: {},
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      body: Buffer.from(body),
    },
  };
}

function summary(outcomes: Outcome[]): string[] {
  return outcomes.map((o) =>
    o.kind === 'ack'
      ? `${o.delivery.tag} ${o.result}`
      : o.kind === 'reject'
        ? `${o.delivery.tag} reject: ${o.reason}`
        : `${o.delivery.tag} wait`,
  );
}

function processor(plugins: ChainRunner): BatchProcessor {
  return new BatchProcessor({ plugins, logger: silentLogger(), origin: 'test@poison', outputQueue: 'celery' });
}

describe('one poison message in a batch', () => {
  test('a chain that fails on one event: the batch is split down to that event, which alone is set aside', async () => {
    const calls: number[] = [];
    const runner: ChainRunner = {
      async runChain(_team, events) {
        calls.push(events.length);
        if (events.some((e) => e.event === 'e5')) throw new RangeError('Maximum call stack size exceeded');
        return events;
      },
    };
    const batch = Array.from({ length: 10 }, (_, i) => delivery(i));
    const outcomes = await processor(runner).process(batch);
    assert.deepEqual(
      summary(outcomes),
      batch.map((d, i) =>
        i === 5
          ? `${d.tag} reject: the plugin chain of team 2 failed on this event: Maximum call stack size exceeded`
          : `${d.tag} published`,
      ),
    );
    // 10 → 5 + 5 → (3 + 2) → (1 + 1) …: a handful of calls, not one per event.
    assert.ok(calls.length <= 9, `calls ${JSON.stringify(calls)}`);
  });

  test('a chain that cannot run at all gives the batch back instead of setting every event aside', async () => {
    const runner: ChainRunner = {
      async runChain() {
        throw new ChainUnavailableError('PluginManager is closed');
      },
    };
    await assert.rejects(processor(runner).process([delivery(1), delivery(2)]), ChainUnavailableError);
  });

  test('an event a plugin nested too deep is set aside; the others are published', async () => {
    const runner: ChainRunner = {
      async runChain(_team, events) {
        return events.map((e) =>
          e.event === 'e1' ? ({ ...e, properties: { deep: nested(MAX_NESTING_DEPTH) } } as unknown as PluginEvent) : e,
        );
      },
    };
    const outcomes = await processor(runner).process([delivery(0), delivery(1), delivery(2)]);
    assert.deepEqual(summary(outcomes), [
      'tag-0 published',
      `tag-1 reject: plugins produced an event that cannot be published: event too deeply nested (more than ${MAX_NESTING_DEPTH - 2} levels)`,
      'tag-2 published',
    ]);
  });

  test('a step before the plugins that throws on one message sets only that message aside', async () => {
    // A delivery whose message cannot even be handed to the decoder.
    const broken = { ...delivery(1) };
    Object.defineProperty(broken, 'message', {
      get: () => {
        throw new Error('unreadable message');
      },
    });
    const identity: ChainRunner = { runChain: async (_t, events) => events };
    const outcomes = await processor(identity).process([delivery(0), broken, delivery(2)]);
    assert.deepEqual(summary(outcomes), [
      'tag-0 published',
      'tag-1 reject: cannot read the task: unreadable message',
      'tag-2 published',
    ]);
  });
});

describe('the known failure: an event property nested thousands of levels deep, real plugins', () => {
  let h: Harness;
  before(async () => {
    h = await harness([{ url: 'file:trail.js', name: 'trail', teamId: 2, order: 1, config: { tag: 't' } }]);
  });
  after(() => closeHarness(h));

  test('the deep message is set aside with its reason, every other event of the batch comes out', async () => {
    const deep = `{"p": ${'{"d": '.repeat(5_000)}1${'}'.repeat(5_000)}}`;
    const batch = [
      delivery(0),
      delivery(1, { properties: deep }),
      delivery(2),
      delivery(3, { properties: '{"ok": [[[[1]]]]}' }),
    ];
    const outcomes = await processor(h.manager).process(batch);
    assert.deepEqual(summary(outcomes), [
      'tag-0 published',
      `tag-1 reject: message body too deeply nested (more than ${MAX_NESTING_DEPTH} levels)`,
      'tag-2 published',
      'tag-3 published',
    ]);
    const out = outcomes[3];
    assert.ok(out?.kind === 'ack');
    const body = JSON.parse(out.outputs[0]!.message.body.toString()) as [unknown, { data: { properties: JsonObject } }];
    assert.deepEqual(body[1].data.properties, { ok: [[[[1]]]], trail: ['t'] });
  });
});
