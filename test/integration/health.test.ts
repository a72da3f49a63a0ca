import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { PING_KEY } from '../../src/supervisor/health-reporter';
import { flushRedisDb, redisUrl, waitUntil } from '../helpers/services';
import { tempDir } from '../helpers/temp';
import { BIN, REPO, type WorkerProcess, childrenOf, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * Liveness as PostHog reads it and health per instance, with the real CLI: `start` sets PostHog's ping key
 * (`@posthog-plugin-server/ping`, ISO time, ≤ 60 s expiry) and writes its status file; `health` passes while the
 * instance works, fails once its worker or its supervisor is frozen (SIGSTOP) for longer than --max-age-ms — while
 * the ping key, which PostHog's healthcheck looked at, still exists (B12) — and passes again after SIGCONT.
 * SIGTERM ends everything cleanly and removes the status file. Redis db 4 is reserved for this file.
 */
const REDIS_DB = 4;
const MAX_AGE_MS = 3_000;

async function health(file: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await execFileAsync(BIN, ['health', '--health-file', file, '--max-age-ms', String(MAX_AGE_MS)], {
      cwd: REPO,
    });
    return { code: 0, out: stdout.trim() };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: e.code ?? -1, out: (e.stderr ?? '').trim() };
  }
}

describe('health and liveness of one start instance', () => {
  const tmp = tempDir('pp-health-it-');
  const file = path.join(tmp, 'instance.health.json');
  let redis: Redis;
  let sup: WorkerProcess;
  let workerPid: number;

  before(async () => {
    await flushRedisDb(REDIS_DB);
    redis = new Redis(redisUrl(REDIS_DB));
    sup = await startWorker(
      [
        '--broker',
        redisUrl(REDIS_DB),
        '--workers',
        '1',
        '--health-file',
        file,
        '--heartbeat-interval-ms',
        '500',
        // The frozen worker must stay frozen (not be replaced) while health is asked about it.
        '--heartbeat-timeout-ms',
        '120000',
      ],
      { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` },
    );
    const kids = await childrenOf(sup.child.pid!);
    assert.equal(kids.length, 1, 'one worker process');
    workerPid = kids[0] as number;
  });

  after(async () => {
    if (workerPid)
      try {
        process.kill(workerPid, 'SIGCONT');
      } catch {
        /* gone */
      }
    if (sup)
      try {
        process.kill(sup.child.pid!, 'SIGCONT');
      } catch {
        /* gone */
      }
    await sup?.stop();
    redis?.disconnect();
    await flushRedisDb(REDIS_DB);
  });

  test('PostHog ping key: the ISO time, expiring within 60 s', async () => {
    const value = await waitUntil(() => redis.get(PING_KEY), 15_000, 'the ping key');
    assert.match(value, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const ttl = await redis.ttl(PING_KEY);
    assert.ok(ttl > 0 && ttl <= 60, `ttl ${ttl}`);
  });

  test('healthy while it works', async () => {
    const h = await waitUntil(
      async () => ((await health(file)).code === 0 ? health(file) : null),
      15_000,
      'health exit 0',
    );
    assert.match(
      h.out,
      /^healthy: supervisor pid \d+: 1 of 1 worker\(s\) consuming posthog-plugins, status [\d.]+ s old$/,
    );
  });

  test('a frozen worker makes it unhealthy; thawed, it is healthy again', async () => {
    process.kill(workerPid, 'SIGSTOP');
    const h = await waitUntil(
      async () => {
        const r = await health(file);
        return r.code === 1 ? r : null;
      },
      20_000,
      'health exit 1 with a frozen worker',
      250,
    );
    assert.match(
      h.out,
      new RegExp(
        `^unhealthy: worker 0 \\(pid ${workerPid}\\) has not answered heartbeats for [\\d.]+ s \\(limit 3 s\\)$`,
      ),
    );
    process.kill(workerPid, 'SIGCONT');
    await waitUntil(async () => (await health(file)).code === 0, 15_000, 'health exit 0 after SIGCONT', 250);
  });

  test('a frozen supervisor makes it unhealthy although the ping key still exists (PostHog B12); thawed, healthy again', async () => {
    const supPid = sup.child.pid!;
    process.kill(supPid, 'SIGSTOP');
    const h = await waitUntil(
      async () => {
        const r = await health(file);
        return r.code === 1 ? r : null;
      },
      20_000,
      'health exit 1 with a frozen supervisor',
      250,
    );
    assert.match(
      h.out,
      new RegExp(`^unhealthy: supervisor pid ${supPid} is stuck: its status is [\\d.]+ s old \\(limit 3 s\\)$`),
    );
    assert.ok((await redis.exists(PING_KEY)) === 1, 'the global key alone would still say alive');
    process.kill(supPid, 'SIGCONT');
    await waitUntil(async () => (await health(file)).code === 0, 15_000, 'health exit 0 after SIGCONT', 250);
  });

  test('SIGTERM: clean exit, status file removed, health says not running', async () => {
    assert.equal(await sup.stop(), 0);
    assert.equal(existsSync(file), false);
    const h = await health(file);
    assert.equal(h.code, 1);
    assert.match(h.out, /^unhealthy: no status file: .*; looked for .*instance\.health\.json$/);
    assert.deepEqual(await childrenOf(sup.child.pid!), []);
  });
});
