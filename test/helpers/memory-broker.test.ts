import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeTask } from '../../protocol/decode';
import { encodeTaskV2 } from '../../protocol/encode';
import type { Delivery } from '../../src/brokers/broker';
import { ingestionTask } from './ingestion-task';
import { MemoryBroker } from './memory-broker';

function taskId(d: Delivery): unknown {
  const decoded = decodeTask(d.message);
  assert.ok(decoded.ok, decoded.ok ? '' : decoded.reason);
  return decoded.task.id;
}

describe('MemoryBroker', () => {
  test('receive hands out decodable tasks, at most max, in order', async () => {
    const broker = new MemoryBroker();
    for (let i = 1; i <= 3; i++) broker.sendTask(ingestionTask(i));
    const first = await broker.receive(2, 0);
    assert.deepEqual(first.map(taskId), [ingestionTask(1).id, ingestionTask(2).id]);
    assert.equal(first[0]?.redelivered, false);
    assert.equal((await broker.receive(5, 0)).length, 1);
    assert.equal(broker.unackedTags.length, 3);
  });

  test('receive waits for a publish, or returns [] when waitMs runs out', async () => {
    const broker = new MemoryBroker();
    const started = Date.now();
    assert.deepEqual(await broker.receive(1, 30), []);
    assert.ok(Date.now() - started >= 25);
    const waiting = broker.receive(1, 5_000);
    setTimeout(() => broker.sendTask(ingestionTask(1)), 10);
    assert.equal((await waiting).length, 1);
    assert.ok(Date.now() - started < 1_000);
  });

  test('ack stores the outputs and acks; reject sets aside with the reason; requeue comes back redelivered', async () => {
    const broker = new MemoryBroker();
    for (let i = 1; i <= 3; i++) broker.sendTask(ingestionTask(i));
    const [a, b, c] = (await broker.receive(3, 0)) as [Delivery, Delivery, Delivery];
    await broker.settle([
      { kind: 'ack', delivery: a, outputs: [{ queue: 'celery', message: a.message, priority: 0 }] },
      { kind: 'reject', delivery: b, reason: 'bad' },
      { kind: 'requeue', delivery: c },
    ]);
    assert.equal(broker.messages('celery').length, 1);
    assert.deepEqual(broker.setAside, [{ reason: 'bad', rawText: b.rawText }]);
    assert.deepEqual(broker.log, ['publish celery', `ack ${a.tag}`, `reject ${b.tag}`, `requeue ${c.tag}`]);
    const [again] = await broker.receive(3, 0);
    assert.equal(again?.tag, c.tag);
    assert.equal(again?.redelivered, true);
    assert.deepEqual(broker.unackedTags, [c.tag]);
  });

  test('an injected settle failure changes nothing; one after applying leaves the retry nothing to do', async () => {
    const broker = new MemoryBroker();
    broker.sendTask(ingestionTask(1));
    const [d] = (await broker.receive(1, 0)) as [Delivery];
    const ack = { kind: 'ack' as const, delivery: d, outputs: [{ queue: 'celery', message: d.message, priority: 0 }] };
    broker.failNext('settle', new Error('connection lost'));
    await assert.rejects(broker.settle([ack]), /connection lost/);
    assert.deepEqual([broker.messages('celery').length, broker.unackedTags], [0, [d.tag]]);
    broker.failNext('settle', new Error('reply lost'), { afterApplying: true });
    await assert.rejects(broker.settle([ack]), /reply lost/);
    await broker.settle([ack]);
    assert.equal(broker.messages('celery').length, 1, 'published once');
  });

  test('receive and publish failures; an unreadable envelope is set aside, never handed out', async () => {
    const reported: string[] = [];
    const broker = new MemoryBroker({ onSetAside: (reason) => reported.push(reason) });
    broker.failNext('receive', new Error('down'));
    await assert.rejects(broker.receive(1, 0), /down/);
    broker.failNext('publish', new Error('full'));
    await assert.rejects(
      broker.publish([{ queue: 'celery', message: encodeTaskV2(ingestionTask(9)), priority: 0 }]),
      /full/,
    );
    assert.equal(broker.messages('celery').length, 0);
    broker.push(broker.inputQueue, 'not json');
    assert.deepEqual(await broker.receive(1, 0), []);
    assert.equal(reported.length, 1);
    assert.equal(broker.setAside[0]?.rawText, 'not json');
  });

  test('a prefetch limit widened by adjustHeld; close gives back what is unsettled, a lost receive included', async () => {
    const broker = new MemoryBroker({ prefetch: 1 });
    for (let i = 1; i <= 4; i++) broker.sendTask(ingestionTask(i));
    assert.equal((await broker.receive(3, 0)).length, 1);
    broker.adjustHeld(2);
    assert.equal((await broker.receive(1, 0)).length, 1);
    broker.failNext('receive', new Error('reply lost'), { afterApplying: true });
    await assert.rejects(broker.receive(1, 0), /reply lost/);
    assert.equal(broker.unackedTags.length, 3);
    await broker.close();
    assert.deepEqual(broker.unackedTags, []);
    assert.deepEqual(
      broker.messages(broker.inputQueue).map((m) => m.headers['redelivered'] ?? false),
      [true, true, true, false],
    );
  });
});
