import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Gate } from '../../src/pipeline/gate';
import { SuspectList } from '../../src/pipeline/suspects';
import { classifyDeath, judge } from '../../src/supervisor/attribution';
import { CrashLedger } from '../../src/supervisor/crash-ledger';
import { FlightRecorder, readFlights } from '../../src/worker/flight-recorder';
import { RestartPolicy } from '../../src/supervisor/restart-policy';

/** The supervisor's pure parts: flight records, attribution, crash counting, restart delays, suspects, the gate. */
describe('flight recorder', () => {
  test('the file always holds what is in flight now, and survives a shorter rewrite', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pp-flight-'));
    try {
      const file = path.join(dir, 'w.flight');
      const rec = new FlightRecorder(file);
      assert.deepEqual(readFlights(file), []);
      const leaveA = rec.enter(7, ['t1', 't2', 't3']);
      const leaveB = rec.enter(9, [], false);
      assert.deepEqual(readFlights(file), [
        { configId: 7, taskIds: ['t1', 't2', 't3'], careful: false },
        { configId: 9, taskIds: [], careful: false },
      ]);
      leaveA();
      leaveA(); // twice is harmless
      assert.deepEqual(readFlights(file), [{ configId: 9, taskIds: [], careful: false }]);
      leaveB();
      rec.enter(3, ['only'], true);
      assert.deepEqual(readFlights(file), [{ configId: 3, taskIds: ['only'], careful: true }]);
      rec.close();
      assert.equal(readFlights(file), null, 'a clean close leaves no record');
      assert.equal(readFlights(path.join(dir, 'missing')), null);
      writeFileSync(file, '{"flights":[{"configId":1,"taskIds":["a"]}]}\ngarbage left over from a longer record');
      assert.deepEqual(readFlights(file), [{ configId: 1, taskIds: ['a'], careful: false }]);
      writeFileSync(file, '{"flights":[{"config'); // torn write
      assert.equal(readFlights(file), null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('attribution', () => {
  test('how a worker ended', () => {
    assert.equal(classifyDeath(null, 'SIGABRT', false), 'crash');
    assert.equal(classifyDeath(null, 'SIGSEGV', false), 'crash');
    assert.equal(classifyDeath(null, 'SIGKILL', true), 'hang');
    assert.equal(classifyDeath(null, 'SIGKILL', false), 'killed');
    assert.equal(classifyDeath(1, null, false), 'error');
    assert.equal(classifyDeath(0, null, false), 'exit');
  });

  test('one config in flight is charged; one config and one event is poisoned; several configs are not charged', () => {
    const one = judge('crash', [{ configId: 4, taskIds: ['a', 'b'], careful: false }]);
    assert.equal(one.charge, 4);
    assert.deepEqual(one.suspects, ['a', 'b']);
    assert.deepEqual(one.poison, []);

    const pinned = judge('crash', [{ configId: 4, taskIds: ['a'], careful: true }]);
    assert.equal(pinned.charge, 4);
    assert.deepEqual(pinned.poison, [['a', 4]]);

    const two = judge('crash', [
      { configId: 4, taskIds: ['a'], careful: false },
      { configId: 5, taskIds: ['b'], careful: false },
    ]);
    assert.equal(two.charge, null);
    assert.deepEqual(two.suspects.sort(), ['a', 'b']);
    assert.deepEqual(two.poison, []);

    const loading = judge('crash', [
      { configId: 4, taskIds: [], careful: false },
      { configId: 5, taskIds: [], careful: false },
    ]);
    assert.equal(loading.charge, null);
    assert.equal(loading.serialLoad, true);
    assert.equal(judge('crash', [{ configId: 4, taskIds: [], careful: false }]).charge, 4);
  });

  test('an outside kill is not the plugin’s doing, unless it hit a suspect running alone; no flight, no charge', () => {
    const outside = judge('killed', [{ configId: 4, taskIds: ['a', 'b'], careful: false }]);
    assert.equal(outside.charge, null);
    assert.deepEqual(outside.suspects, ['a', 'b'], 'still retried alone');
    assert.equal(judge('killed', [{ configId: 4, taskIds: ['a'], careful: true }]).charge, 4);
    assert.equal(judge('hang', [{ configId: 4, taskIds: ['a', 'b'], careful: false }]).charge, 4);
    assert.equal(judge('error', [{ configId: 4, taskIds: ['a'], careful: false }]).charge, null);
    assert.equal(judge('crash', []).charge, null);
    assert.equal(judge('crash', null).charge, null);
  });
});

describe('crash ledger', () => {
  test('disables at the limit within the window, forgets older crashes', () => {
    let now = 0;
    const ledger = new CrashLedger({ limit: 3, windowMs: 600_000, now: () => now });
    assert.deepEqual(ledger.charge(1), { configId: 1, count: 1, disable: false });
    now = 300_000;
    assert.equal(ledger.charge(1).count, 2);
    assert.equal(ledger.charge(2).count, 1, 'counted per config');
    now = 700_000; // the first crash is out of the window
    assert.deepEqual(ledger.charge(1), { configId: 1, count: 2, disable: false });
    now = 710_000;
    assert.deepEqual(ledger.charge(1), { configId: 1, count: 3, disable: true });
    assert.equal(ledger.count(1), 0, 'forgotten once disabled');
  });
});

describe('restart policy', () => {
  test('at once after a good run; growing delays while it keeps dying at start; plugin crashes restart at once', () => {
    const p = new RestartPolicy({ firstDelayMs: 1_000, maxDelayMs: 8_000, burst: 100 });
    let t = 0;
    assert.equal(p.onDeath(true, false, (t += 1000)).delayMs, 0);
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 0, 'the first early death: at once');
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 1_000);
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 2_000);
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 4_000);
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 8_000);
    assert.equal(p.onDeath(false, false, (t += 1000)).delayMs, 8_000, 'capped');
    assert.equal(p.onDeath(false, true, (t += 1000)).delayMs, 8_000, 'a plugin crash does not reset the streak');
    assert.equal(p.onDeath(true, false, (t += 60_000)).delayMs, 0, 'a worker that got to consume resets it');
    const q = new RestartPolicy({ burst: 3 });
    t = 0;
    for (let i = 0; i < 3; i++) assert.equal(q.onDeath(true, true, (t += 100)).delayMs, 0);
    assert.ok(
      q.onDeath(true, true, (t += 100)).delayMs > 0,
      'more than `burst` deaths a minute: slowed down whatever the cause',
    );
  });
});

describe('suspects', () => {
  test('suspects and poisoned pairs, expiry, snapshot round trip', () => {
    const list = new SuspectList(1_000);
    const added = list.add(['a', 'b'], [['b', 7]]);
    assert.equal(added.suspects.length, 2);
    assert.ok(list.isSuspect('a'));
    assert.ok(!list.isSuspect('c'));
    assert.ok(list.isPoisoned('b', 7));
    assert.ok(!list.isPoisoned('b', 8));
    const copy = SuspectList.from(list.toJSON());
    assert.ok(copy.isSuspect('b') && copy.isPoisoned('b', 7));
    const other = new SuspectList();
    other.merge(added);
    assert.ok(other.isSuspect('a') && other.isPoisoned('b', 7));
    const expired = SuspectList.from({ suspects: [['old', Date.now() - 1]], poison: [['old', 1, Date.now() - 1]] });
    assert.ok(!expired.isSuspect('old'));
    assert.ok(!expired.isPoisoned('old', 1));
  });
});

describe('gate', () => {
  test('shared callers run together, an exclusive caller runs alone and goes before later shared ones', async () => {
    const gate = new Gate();
    const log: string[] = [];
    let running = 0;
    let maxShared = 0;
    const job = (name: string, ms: number) => async () => {
      running++;
      maxShared = Math.max(maxShared, running);
      log.push(`+${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`-${name}`);
      running--;
    };
    const a = gate.shared(job('a', 30));
    const b = gate.shared(job('b', 30));
    const x = gate.exclusive(async () => {
      assert.equal(running, 0, 'alone');
      log.push('x');
    });
    const c = gate.shared(job('c', 5));
    await Promise.all([a, b, x, c]);
    assert.equal(maxShared, 2);
    assert.ok(log.indexOf('x') > log.indexOf('-a') && log.indexOf('x') > log.indexOf('-b'));
    assert.ok(log.indexOf('+c') > log.indexOf('x'), 'the waiting exclusive caller went first');
  });
});
