/**
 * `start` against brokers and databases that say no: a permanent error (wrong password on RabbitMQ or Redis, a
 * missing vhost, a 406 on the queue, an unusable SQLite path) ends it with exit 1 and one line naming what and
 * where; an unreachable Redis is retried with backoff, one line per attempt with its count, no stack traces.
 * Resources: RabbitMQ vhost `posthog-plugins-test-cli`, private Redis servers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import amqp from 'amqplib';
import Redis from 'ioredis';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { amqpUrl, deleteVhost, ensureVhost } from '../helpers/services';
import { BIN, REPO } from '../helpers/worker';
import { hasStackTrace } from './run';

const VHOST = 'posthog-plugins-test-cli';

/**
 * `start` until it exits (or `stopAfterMs` passes, or its output matches `stopWhen`: then SIGTERM); its exit code
 * and everything it printed.
 */
function start(
  args: string[],
  opts: { stopAfterMs?: number; stopWhen?: RegExp; env?: Record<string, string> } = {},
): Promise<{ code: number | null; output: string; lines: string[] }> {
  return new Promise((resolve) => {
    // Its status file goes with the test's temp dir.
    const child = spawn(
      BIN,
      [
        'start',
        '--workers',
        '1',
        '--log-format',
        'pretty',
        '--health-file',
        path.join(tmpdir(), `pp-cli-start-${process.pid}.health.json`),
        ...args,
      ],
      {
        cwd: REPO,
        env: { ...process.env, REDIS_URL: '', CELERY_BROKER_URL: '', ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    let stopping = false;
    const take = (d: Buffer): void => {
      output += d.toString();
      if (!stopping && opts.stopWhen?.test(output)) {
        stopping = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const hard = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const soft = opts.stopAfterMs ? setTimeout(() => child.kill('SIGTERM'), opts.stopAfterMs) : null;
    child.on('exit', (code) => {
      rmSync(path.join(tmpdir(), `pp-cli-start-${process.pid}.health.json`), { force: true });
      clearTimeout(hard);
      if (soft) clearTimeout(soft);
      resolve({ code, output, lines: output.split('\n').filter((l) => l.trim() !== '') });
    });
  });
}

async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('start: permanent errors end it, transient ones are retried quietly', { timeout: 600_000 }, () => {
  let tmp = '';
  let db = '';
  let redis: PrivateRedis;

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'pp-cli-start-'));
    db = `sqlite:${path.join(tmp, 'plugins.sqlite3')}`;
    redis = await startPrivateRedis({ appendonly: false });
  });
  after(async () => {
    await redis?.stop();
    await deleteVhost(VHOST);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('RabbitMQ: a wrong password (403 ACCESS_REFUSED) ends start with exit 1 and the reason', async () => {
    await ensureVhost(VHOST);
    const url = amqpUrl(VHOST).replace('guest:guest@', 'guest:wrong@');
    const r = await start(['--broker', url, '--database-url', db]);
    assert.equal(r.code, 1, r.output);
    assert.match(r.lines.at(-1)!, /^posthog-plugins: .*ACCESS_REFUSED.*\(wrong user name or password\)$/);
    assert.ok(r.lines.at(-1)!.includes(`amqp://guest:**@127.0.0.1:5672/${VHOST}`), r.lines.at(-1));
    assert.ok(!hasStackTrace(r.output), r.output);
  });

  test('RabbitMQ: a vhost that does not exist ends start with exit 1 naming it', async () => {
    await deleteVhost(VHOST);
    const r = await start(['--broker', amqpUrl(VHOST), '--database-url', db]);
    assert.equal(r.code, 1, r.output);
    assert.match(r.lines.at(-1)!, new RegExp(`^posthog-plugins: .*vhost '${VHOST}' missing or not permitted`));
    assert.ok(!hasStackTrace(r.output), r.output);
  });

  test('RabbitMQ: a queue declared with other arguments (406) ends start with exit 1 naming the queue', async () => {
    await ensureVhost(VHOST);
    const conn = await amqp.connect(amqpUrl(VHOST));
    try {
      const ch = await conn.createChannel();
      await ch.assertQueue('cli-406', { durable: true, arguments: { 'x-max-priority': 10 } });
      await ch.close();
    } finally {
      await conn.close();
    }
    const r = await start(['--broker', amqpUrl(VHOST), '--queue', 'cli-406', '--database-url', db]);
    assert.equal(r.code, 1, r.output);
    assert.match(
      r.lines.at(-1)!,
      /^posthog-plugins: .*RabbitMQ refused to declare queue 'cli-406' in vhost 'posthog-plugins-test-cli': argument 'x-max-priority' differs/,
    );
    assert.ok(!hasStackTrace(r.output), r.output);
  });

  test('Redis: a wrong password ends start with exit 1 and the reason', async () => {
    const admin = new Redis(redis.url());
    await admin.config('SET', 'requirepass', 'right');
    admin.disconnect();
    try {
      const r = await start(['--broker', `redis://:wrong@127.0.0.1:${redis.port}/1`, '--database-url', db]);
      assert.equal(r.code, 1, r.output);
      // WRONGPASS or NOAUTH: whichever of the worker's two connections reports first.
      assert.match(
        r.lines.at(-1)!,
        new RegExp(
          `^posthog-plugins: Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}/1: (WRONGPASS|NOAUTH) `,
        ),
      );
      assert.ok(!hasStackTrace(r.output), r.output);
    } finally {
      const fix = new Redis(`redis://:right@127.0.0.1:${redis.port}/0`);
      await fix.config('SET', 'requirepass', '');
      fix.disconnect();
    }
  });

  test('an unusable SQLite path ends start with exit 1 naming the path, without a stack trace', async () => {
    const notADir = path.join(tmp, 'a-file');
    writeFileSync(notADir, 'x');
    const file = path.join(notADir, 'plugins.sqlite3');
    const r = await start(['--broker', redis.url(1), '--database-url', `sqlite:${file}`]);
    assert.equal(r.code, 1, r.output);
    assert.match(r.lines.at(-1)!, new RegExp(`^posthog-plugins: cannot use SQLite database ${file}: `));
    assert.ok(!hasStackTrace(r.output), r.output);
  });

  test('RabbitMQ lost mid-run: one line per reconnect step with its count, then it resumes', async () => {
    await ensureVhost(VHOST);
    const run = start(['--broker', amqpUrl(VHOST), '--database-url', db, '--queue', 'cli-reconnect'], {
      stopAfterMs: 30_000,
    });
    await new Promise((r) => setTimeout(r, 8_000)); // consuming by now on a loaded machine (checked below)
    await deleteVhost(VHOST); // closes the connection; reconnecting fails while the vhost is missing
    await new Promise((r) => setTimeout(r, 6_000));
    await ensureVhost(VHOST);
    const r = await run;
    assert.equal(r.code, 0, r.output);
    assert.ok(!hasStackTrace(r.output), r.output);
    const amqpLines = r.lines.filter((l) => /AMQP (reconnect|connection (lost|resumed))/.test(l));
    assert.match(amqpLines[0] ?? '', /warn AMQP connection lost/, r.output);
    assert.match(amqpLines[1] ?? '', /info AMQP reconnecting in \d+\.\ds \(attempt 1\)/, r.output);
    const failed = amqpLines.filter((l) => /AMQP reconnect failed/.test(l));
    assert.ok(failed.length >= 2, r.output);
    // Each failed step is one line that also says when the next attempt comes.
    failed.forEach((l, i) =>
      assert.match(l, new RegExp(`AMQP reconnect failed: .*; reconnecting in \\d+\\.\\ds \\(attempt ${i + 2}\\)`)),
    );
    assert.equal(amqpLines.length, 2 + failed.length + 1, amqpLines.join('\n'));
    assert.match(amqpLines.at(-1)!, /info AMQP connection resumed after/);
  });

  test('an unreachable Redis is retried with backoff: one line per attempt, with its count, no stack traces', async () => {
    const port = await closedPort();
    // Stopped once the broker connection has failed twice (a loaded machine boots the worker slowly).
    const r = await start(['--broker', `redis://127.0.0.1:${port}/0`, '--database-url', db], {
      stopWhen: /cannot connect to broker \(attempt 2\)/,
      stopAfterMs: 60_000,
    });
    assert.ok(!hasStackTrace(r.output), r.output);
    // Every component that retries says so once per attempt, counting: the broker connection, the supervisor's and
    // the reload channel's Redis clients. The plugin cache's client says it once a minute at most.
    const byWhat = new Map<string, number[]>();
    for (const line of r.lines.filter((l) => /ECONNREFUSED/.test(l))) {
      const attempt = /\(attempt (\d+)\)/.exec(line)?.[1];
      if (attempt === undefined) {
        assert.match(
          line,
          /plugin Redis \(meta\.cache, schedule locks\)/,
          `a connection line without an attempt count: ${line}`,
        );
        continue;
      }
      const what = line.includes('cannot connect to broker')
        ? 'cannot connect to broker'
        : (/warn ([^:]+):/.exec(line)?.[1] ?? line);
      byWhat.set(what, [...(byWhat.get(what) ?? []), Number(attempt)]);
    }
    assert.equal(r.lines.filter((l) => /plugin Redis \(meta\.cache/.test(l)).length, 1);
    const broker = byWhat.get('cannot connect to broker') ?? [];
    assert.ok(broker.length >= 2, r.output);
    for (const [what, counts] of byWhat) {
      assert.deepEqual(
        counts,
        counts.map((_, i) => i + 1),
        `${what}: one line per attempt, counted`,
      );
      // Backoff 0.5 s, 1 s, 2 s, 4 s, 8 s, 10 s: within the ~7 s (up to 25 s loaded) until the broker's second
      // attempt at most 6 attempts.
      assert.ok(counts.length <= 6, `${what} retried too often:\n${r.output}`);
    }
  });
});
