import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JobRunner } from '../../../src/plugins/background/job-runner';
import { JobStore } from '../../../src/store/job-store';
import { captureLogger, closeHarness, FAST_LIMITS, harness, until } from '../helpers';

/** The job runner over a real job table (SQLite) and real isolates: what happens to jobs it cannot finish. */
describe('JobRunner', () => {
  it('runs a due job once and deletes it; a job of a config that is not installed is dropped', async () => {
    const h = await harness(
      [
        {
          name: 'j',
          source: `const jobs = { hello: async (p) => console.log('hello ' + p.n) }\nmodule.exports = { jobs }`,
        },
      ],
      FAST_LIMITS,
    );
    const jobs = new JobStore(h.store.db);
    const { logger, logs } = captureLogger();
    const runner = new JobRunner({ manager: h.manager, jobs, workerId: 'w1', logger, leaseMs: 60_000, pollMs: 20 });
    try {
      await jobs.enqueue({
        pluginConfigId: h.ids[0].configId,
        teamId: 1,
        name: 'hello',
        payloadJson: '{"n":1}',
        runAt: new Date(),
      });
      await jobs.enqueue({ pluginConfigId: 9999, teamId: 1, name: 'hello', payloadJson: '{}', runAt: new Date() });
      runner.start();
      await until(
        async () => (await h.store.db('posthog_plugins_job').count('* as n').first())!.n === 0,
        'both jobs gone',
      );
      await until(() => h.logs.some((l) => l.message === 'hello 1'), 'the job ran');
      assert.equal(h.logs.filter((l) => l.message === 'hello 1').length, 1);
      assert.ok(logs.some((l) => /dropped: plugin config 9999 is not enabled/.test(l.message)));
    } finally {
      await runner.stop();
      await closeHarness(h);
    }
  });

  it(
    'a job cut short by shutdown goes back to the table; stop() returns once the plugins are closed',
    { timeout: 30_000 },
    async () => {
      const h = await harness(
        [{ name: 'slow', source: `const jobs = { hang: () => new Promise(() => {}) }\nmodule.exports = { jobs }` }],
        FAST_LIMITS,
        { taskWallTimeoutMs: 60_000 },
      );
      const jobs = new JobStore(h.store.db);
      const { logger } = captureLogger();
      const runner = new JobRunner({ manager: h.manager, jobs, workerId: 'w1', logger, leaseMs: 120_000, pollMs: 20 });
      try {
        const id = await jobs.enqueue({
          pluginConfigId: h.ids[0].configId,
          teamId: 1,
          name: 'hang',
          payloadJson: 'null',
          runAt: new Date(),
        });
        runner.start();
        await until(
          async () => (await h.store.db('posthog_plugins_job').where({ id }).first()).locked_by === 'w1',
          'the job claimed',
        );
        const stopped = runner.stop();
        await h.manager.close(); // disposes the isolate: the hanging job ends as interrupted
        await stopped;
        const row = await h.store.db('posthog_plugins_job').where({ id }).first();
        assert.ok(row, 'still in the table');
        assert.equal(row.locked_by, null, 'released for another worker');
      } finally {
        await h.store.db.destroy();
      }
    },
  );

  it(
    'jobs of a config whose setupPlugin is being retried wait without using up their attempts',
    { timeout: 30_000 },
    async () => {
      const h = await harness(
        [
          {
            name: 'down',
            source: `function setupPlugin() { throw new Error('backend down') }\nconst jobs = { later: async () => {} }\nmodule.exports = { setupPlugin, jobs }`,
          },
        ],
        FAST_LIMITS,
        { setupRetries: 5, setupRetryBaseMs: 60_000 },
      );
      const jobs = new JobStore(h.store.db);
      const { logger } = captureLogger();
      const runner = new JobRunner({
        manager: h.manager,
        jobs,
        workerId: 'w1',
        logger,
        leaseMs: 60_000,
        pollMs: 10,
        notReadyDelayMs: 10,
        maxAttempts: 2,
      });
      try {
        const id = await jobs.enqueue({
          pluginConfigId: h.ids[0].configId,
          teamId: 1,
          name: 'later',
          payloadJson: 'null',
          runAt: new Date(),
        });
        runner.start();
        await new Promise((r) => setTimeout(r, 500)); // dozens of claims and give-backs
        const row = await h.store.db('posthog_plugins_job').where({ id }).first();
        assert.ok(row, 'kept while the plugin may still come up');
        assert.ok(Number(row.attempts) <= 1, `claims that could not run it do not count: attempts ${row.attempts}`);
      } finally {
        await runner.stop();
        await closeHarness(h);
      }
    },
  );
});
