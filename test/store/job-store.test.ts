import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { JobStore } from '../../src/store/job-store';
import { openDatabase } from '../../src/store/database';
import { migrate, migrateOwnTables } from '../../src/store/migrate';
import { apiDatabases, runChildren } from './api-databases';

const T0 = new Date('2030-01-01T00:00:00.000Z');
const at = (ms: number): Date => new Date(T0.getTime() + ms);

describe('migrateOwnTables', () => {
  it('creates only the job table (for a database whose PostHog tables Django owns), once', async () => {
    const db = openDatabase('sqlite::memory:');
    try {
      assert.deepEqual(await migrateOwnTables(db), ['posthog_plugins_job']);
      assert.deepEqual(await migrateOwnTables(db), []);
      assert.equal(await db.schema.hasTable('posthog_plugin'), false);
    } finally {
      await db.destroy();
    }
  });
});

for (const target of apiDatabases('jobs')) {
  describe(`JobStore on ${target.label}`, () => {
    let db: Knex;
    let jobs: JobStore;
    const job = (name: string, runAt: Date, pluginConfigId = 1) => ({
      pluginConfigId,
      teamId: 2,
      name,
      payloadJson: JSON.stringify({ name, é: [1] }),
      runAt,
    });

    before(async () => {
      await target.setup();
      db = target.open();
      await migrate(db);
      jobs = new JobStore(db);
    });
    beforeEach(async () => {
      await db('posthog_plugins_job').delete();
    });
    after(async () => {
      await db?.destroy();
      await target.cleanup();
    });

    it('claims only due jobs, in run_at order, up to the limit, with the payload and attempt count', async () => {
      assert.equal(await jobs.nextRunAt(), null);
      const late = await jobs.enqueue(job('late', at(5_000)));
      const first = await jobs.enqueue(job('first', at(-10)));
      const second = await jobs.enqueue(job('second', at(0)));
      const third = await jobs.enqueue(job('third', at(-5)));
      assert.deepEqual(await jobs.nextRunAt(), at(-10));
      const claimed = await jobs.claimDue('w1', 2, 1_000, T0);
      assert.deepEqual(
        claimed.map((j) => j.id),
        [first, third],
      );
      assert.deepEqual(claimed[0], {
        id: first,
        pluginConfigId: 1,
        teamId: 2,
        name: 'first',
        payloadJson: '{"name":"first","é":[1]}',
        runAt: at(-10),
        attempts: 1,
        lockedUntil: at(1_000),
        createdAt: claimed[0].createdAt,
      });
      assert.ok(claimed[0].createdAt.getTime() > 0);
      assert.deepEqual(
        (await jobs.claimDue('w2', 10, 1_000, T0)).map((j) => j.id),
        [second],
        'held jobs are skipped',
      );
      assert.deepEqual(await jobs.claimDue('w2', 10, 1_000, T0), []);
      assert.deepEqual((await jobs.claimDue('w2', 10, 1_000, at(5_000))).map((j) => j.id).includes(late), true);
    });

    it('an expired lease makes the job claimable again (attempts counts claims); the old holder then loses it', async () => {
      const id = await jobs.enqueue(job('crashy', at(0)));
      assert.equal((await jobs.claimDue('dead-worker', 5, 1_000, T0))[0].attempts, 1);
      assert.deepEqual(await jobs.claimDue('w2', 5, 1_000, at(999)), [], 'lease still running');
      assert.deepEqual(await jobs.nextRunAt(), at(1_000), 'a held job is next claimable when its lease ends');
      const again = await jobs.claimDue('w2', 5, 1_000, at(1_000));
      assert.deepEqual(
        again.map((j) => [j.id, j.attempts]),
        [[id, 2]],
      );
      assert.equal(await jobs.complete(id, 'dead-worker'), false);
      assert.equal(await jobs.extend(id, 'dead-worker', 1_000, at(1_000)), false);
      assert.equal(await jobs.release(id, 'dead-worker', at(0)), false);
      assert.equal(await jobs.complete(id, 'w2'), true);
      assert.equal(await jobs.nextRunAt(), null);
    });

    it('complete / release / extend work only for the holder', async () => {
      const id = await jobs.enqueue(job('held', at(0)));
      await jobs.claimDue('holder', 1, 1_000, T0);
      assert.equal(await jobs.complete(id, 'intruder'), false);
      assert.equal(await jobs.release(id, 'intruder', at(0)), false);
      assert.equal(await jobs.extend(id, 'intruder', 60_000, T0), false);
      assert.deepEqual(await jobs.claimDue('intruder', 1, 1_000, at(999)), []);

      assert.equal(await jobs.extend(id, 'holder', 5_000, at(500)), true);
      assert.deepEqual(await jobs.claimDue('intruder', 1, 1_000, at(5_499)), [], 'extended lease holds');
      assert.deepEqual(await jobs.nextRunAt(), at(5_500));

      assert.equal(await jobs.release(id, 'holder', at(60_000)), true);
      assert.equal(await jobs.extend(id, 'holder', 1_000, T0), false, 'released: no longer held');
      assert.deepEqual(await jobs.nextRunAt(), at(60_000));
      assert.deepEqual(await jobs.claimDue('intruder', 1, 1_000, at(59_999)), [], 'released for later: not due yet');
      const retried = await jobs.claimDue('intruder', 1, 1_000, at(60_000));
      assert.deepEqual(
        retried.map((j) => [j.id, j.attempts]),
        [[id, 2]],
      );
      assert.equal(await jobs.complete(id, 'holder'), false);
      assert.equal(await jobs.complete(id, 'intruder'), true);
      assert.equal(await db('posthog_plugins_job').where({ id }).first(), undefined, 'completed jobs are deleted');
    });

    it('rejects bad input with the reason', async () => {
      await assert.rejects(jobs.enqueue(job('x'.repeat(201), at(0))), /1–200 characters/);
      await assert.rejects(jobs.enqueue(job('ok', new Date('nope'))), /runAt is not a valid date/);
      await assert.rejects(jobs.claimDue('', 1, 1_000), /worker id/);
      await assert.rejects(jobs.claimDue('w', 0, 1_000), /claim limit/);
      await assert.rejects(jobs.claimDue('w', 1, 0), /lease/);
    });

    it('jobs survive a new connection (restart)', async () => {
      const id = await jobs.enqueue(job('persisted', at(0)));
      const restarted = target.open();
      try {
        assert.deepEqual(
          (await new JobStore(restarted).claimDue('new-process', 5, 1_000, T0)).map((j) => j.id),
          [id],
        );
      } finally {
        await restarted.destroy();
      }
    });

    it('two pools claiming at once never get the same job (many rounds)', async () => {
      const other = target.open();
      try {
        const a = new JobStore(db);
        const b = new JobStore(other);
        for (let round = 0; round < 20; round++) {
          const ids = new Set<number>();
          for (let i = 0; i < 30; i++) ids.add(await jobs.enqueue(job(`r${round}-${i}`, at(-i))));
          const got: number[] = [];
          const claimer = async (store: JobStore, worker: string): Promise<void> => {
            for (;;) {
              const claimed = await store.claimDue(worker, 3, 60_000, T0);
              if (claimed.length === 0) return;
              for (const j of claimed) got.push(j.id);
            }
          };
          await Promise.all([claimer(a, 'a1'), claimer(b, 'b1'), claimer(a, 'a2'), claimer(b, 'b2')]);
          assert.equal(
            got.length,
            ids.size,
            `round ${round}: ${got.length} claims for ${ids.size} jobs (a job was claimed twice or missed)`,
          );
          assert.deepEqual(new Set(got), ids);
          const attempts = (await db('posthog_plugins_job')
            .whereIn('id', [...ids])
            .pluck('attempts')) as unknown[];
          assert.ok(
            attempts.every((n) => Number(n) === 1),
            `round ${round}: every job claimed exactly once`,
          );
          await db('posthog_plugins_job').delete();
        }
      } finally {
        await other.destroy();
      }
    });

    it('three processes claiming at once never get the same job', async () => {
      for (let round = 0; round < 3; round++) {
        const ids = new Set<number>();
        for (let i = 0; i < 150; i++)
          ids.add(await jobs.enqueue(job(`p${round}-${i}`, new Date(Date.now() - 1_000 - i))));
        const answers = await runChildren<number[]>(
          ['p1', 'p2', 'p3'].map((workerId) => ({
            op: 'claim',
            target: target.target,
            workerId,
            limit: 2,
            leaseMs: 60_000,
            idleRounds: 3,
          })),
        );
        const all = answers.flat();
        assert.equal(
          all.length,
          ids.size,
          `round ${round}: ${all.length} jobs done for ${ids.size} enqueued (per process: ${answers.map((a) => a.length).join(', ')})`,
        );
        assert.deepEqual(new Set(all), ids);
        assert.equal(Number((await db('posthog_plugins_job').count({ n: '*' }))[0].n), 0, 'all completed');
      }
    });
  });
}
