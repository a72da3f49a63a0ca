import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import Redis from 'ioredis';
import { periodStart, ScheduleLock, type ScheduledTask } from '../../../src/plugins/background/schedule-lock';
import { redisUrl, waitUntil } from '../../helpers/services';

/**
 * Redis db 11, shared with cache-op.test.ts: this file uses a random key prefix and deletes only its keys.
 */
const DB = 11;

describe('periodStart (UTC floor)', () => {
  const at = new Date('2024-02-29T23:59:59.999Z');
  it('minute, hour, day', () => {
    assert.equal(periodStart('runEveryMinute', at).toISOString(), '2024-02-29T23:59:00.000Z');
    assert.equal(periodStart('runEveryHour', at).toISOString(), '2024-02-29T23:00:00.000Z');
    assert.equal(periodStart('runEveryDay', at).toISOString(), '2024-02-29T00:00:00.000Z');
  });
  it('a period start is its own period start; before 1970 floors too', () => {
    const s = new Date('2024-03-01T00:00:00.000Z');
    for (const task of ['runEveryMinute', 'runEveryHour', 'runEveryDay'] as ScheduledTask[])
      assert.equal(periodStart(task, s).getTime(), s.getTime());
    assert.equal(
      periodStart('runEveryDay', new Date('1969-12-31T12:00:00Z')).toISOString(),
      '1969-12-31T00:00:00.000Z',
    );
  });
  it('refuses an invalid date or task', () => {
    assert.throws(() => periodStart('runEveryMinute', new Date('nope')), /invalid date/);
    assert.throws(() => periodStart('runEveryWeek' as ScheduledTask, at), /unknown scheduled task/);
  });
});

describe('ScheduleLock (Redis db 11)', () => {
  const prefix = `test-schedule-${randomUUID()}`;
  let r1: Redis;
  let r2: Redis;
  let a: ScheduleLock;
  let b: ScheduleLock;
  const minute = (i: number): Date => new Date(Date.UTC(2024, 0, 1, 0, i));

  before(() => {
    r1 = new Redis(redisUrl(DB));
    r2 = new Redis(redisUrl(DB));
    a = new ScheduleLock(r1, { owner: 'worker-a', prefix });
    b = new ScheduleLock(r2, { owner: 'worker-b', prefix });
  });
  after(async () => {
    const keys = await r1.keys(`${prefix}:*`);
    if (keys.length > 0) await r1.del(...keys);
    await Promise.all([r1.quit(), r2.quit()]);
  });

  it('two workers racing 50 times on the same period: exactly one wins each time, the other is told done-this-period', async () => {
    const wins = { a: 0, b: 0 };
    for (let i = 0; i < 50; i++) {
      const [ra, rb] = await Promise.all([
        a.tryStart(1, 'runEveryMinute', minute(i), 60_000),
        b.tryStart(1, 'runEveryMinute', minute(i), 60_000),
      ]);
      assert.equal(Number(ra.ok) + Number(rb.ok), 1, `round ${i}: ${JSON.stringify([ra, rb])}`);
      const [winner, loser] = ra.ok ? [ra, rb] : [rb, ra];
      assert.deepEqual(loser, { ok: false, reason: 'done-this-period' });
      wins[ra.ok ? 'a' : 'b']++;
      if (winner.ok) await winner.release();
      // the period stays done after the run ended
      assert.deepEqual(await b.tryStart(1, 'runEveryMinute', minute(i), 60_000), {
        ok: false,
        reason: 'done-this-period',
      });
    }
    assert.equal(wins.a + wins.b, 50);
  });

  it('periods, tasks and configs are separate locks', async () => {
    const p = minute(100);
    const runs = await Promise.all([
      a.tryStart(2, 'runEveryMinute', p, 60_000),
      a.tryStart(3, 'runEveryMinute', p, 60_000),
      a.tryStart(2, 'runEveryHour', periodStart('runEveryHour', p), 60_000),
      a.tryStart(2, 'runEveryDay', periodStart('runEveryDay', p), 60_000),
    ]);
    assert.deepEqual(
      runs.map((r) => r.ok),
      [true, true, true, true],
    );
    for (const r of runs) if (r.ok) await r.release();
    const ttl = await r1.pttl(`${prefix}:2:runEveryMinute:period:${p.toISOString()}`);
    assert.ok(ttl > 60_000 && ttl <= 120_000, `period key of a minute lives a bit longer than the minute: ${ttl} ms`);
  });

  it('a run still going blocks the next period (still-running, not marked done); after release the period can run', async () => {
    const first = await a.tryStart(4, 'runEveryMinute', minute(0), 60_000);
    assert.ok(first.ok);
    assert.deepEqual(await b.tryStart(4, 'runEveryMinute', minute(1), 60_000), { ok: false, reason: 'still-running' });
    assert.deepEqual(await a.tryStart(4, 'runEveryMinute', minute(1), 60_000), { ok: false, reason: 'still-running' });
    assert.equal(await r1.exists(`${prefix}:4:runEveryMinute:period:${minute(1).toISOString()}`), 0);
    await first.release();
    const second = await b.tryStart(4, 'runEveryMinute', minute(1), 60_000);
    assert.ok(second.ok);
    await second.release();
  });

  it('a run that never releases frees the config after maxRunMs; its late release cannot free the next run', async () => {
    const stuck = await a.tryStart(5, 'runEveryMinute', minute(0), 300);
    assert.ok(stuck.ok);
    assert.deepEqual(await b.tryStart(5, 'runEveryMinute', minute(1), 60_000), { ok: false, reason: 'still-running' });
    const next = await waitUntil(
      async () => {
        const r = await b.tryStart(5, 'runEveryMinute', minute(1), 60_000);
        return r.ok ? r : null;
      },
      10_000,
      'the running key to expire',
    );
    await stuck.release(); // the expired run ends late: must not delete worker-b's key
    const held = await r1.get(`${prefix}:5:runEveryMinute:running`);
    assert.match(held ?? '', /^worker-b:/);
    assert.deepEqual(await a.tryStart(5, 'runEveryMinute', minute(2), 60_000), { ok: false, reason: 'still-running' });
    await next.release();
    assert.equal(await r1.exists(`${prefix}:5:runEveryMinute:running`), 0);
    await next.release(); // twice is harmless
  });

  it('refuses a date that is not a period start, a bad config id or maxRunMs', async () => {
    await assert.rejects(a.tryStart(6, 'runEveryHour', minute(1), 1000), /is not the start of a period/);
    await assert.rejects(a.tryStart(0, 'runEveryMinute', minute(1), 1000), /invalid plugin config id 0/);
    await assert.rejects(a.tryStart(6, 'runEveryMinute', minute(1), 0), /maxRunMs must be a positive integer/);
    await assert.rejects(a.tryStart(6, 'runEveryYear' as ScheduledTask, minute(1), 1000), /unknown scheduled task/);
  });
});
