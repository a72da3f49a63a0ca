import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { KOMBU_UNACKED } from '../../src/brokers/redis/keys';
import { assertNothingLost } from '../helpers/loss';
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';
import { type SinkWorker, startSinkWorker, sendEvents } from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { BIN, REPO, type WorkerProcess, alive, childrenOf, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * Redis chaos under load (issue 18): a `posthog-plugins start` tree (2 workers, a plugin using meta.cache) drains
 * a backlog produced by real Python Celery while its private Redis (append-only file, fsync always) is restarted
 * again and again, softly and with SIGKILL, and while each kind of Redis connection we hold is killed with
 * `CLIENT KILL`. After every blow the backlog must drain completely: nothing left in the queue, no unacked
 * record (a wedged worker keeps its batch unacked under a live lease forever). Then SIGTERM must end the tree
 * while Redis is down, and at the end a Python Celery worker ingests every output: lost = 0, duplicates reported.
 * Uses its own Redis server (startPrivateRedis), nothing on the shared one.
 */
const QUEUE = 'posthog-plugins';
const OUTPUT = 'celery';
const CHUNK = 1200;
const RESTARTS = 5;
const SHUTDOWN_TIMEOUT_MS = 8_000;
const STUCK_TIMEOUT_MS = 15_000;
/**
 * A plugin that uses meta.cache on every event, so the cache connection is under load too, and spends ~4 ms of CPU
 * per event, so that a backlog takes seconds to drain and every restart hits busy workers.
 */
const COUNTER_PLUGIN = `
async function processEvent(event, { cache }) {
  await cache.incr('seen')
  const until = Date.now() + 4
  while (Date.now() < until) {}
  return event
}
module.exports = { processEvent }
`;

/** Our Redis clients, told apart by the connection names they set. */
type ClientKind = 'broker' | 'wait' | 'cache' | 'pubsub' | 'supervisor' | 'health';
function kindOf(name: string): ClientKind | null {
  if (!name.startsWith('posthog-plugins:')) return null;
  if (name.endsWith(':wait')) return 'wait';
  if (name.startsWith('posthog-plugins:cache:')) return 'cache';
  if (name.startsWith('posthog-plugins:reload:')) return 'pubsub';
  if (name === 'posthog-plugins:supervisor') return 'supervisor';
  if (name === 'posthog-plugins:health') return 'health';
  return 'broker';
}

async function health(file: string, extra: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await execFileAsync(BIN, ['health', '--health-file', file, ...extra], { cwd: REPO });
    return { code: 0, out: stdout.trim() };
  } catch (err) {
    const e = err as { code?: number; stderr?: string; stdout?: string };
    return { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() };
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('Redis restarts and killed connections never wedge a worker', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-redis-restart-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
  let redis: PrivateRedis;
  let admin: Redis;
  let tree: WorkerProcess | null = null;
  let sink: SinkWorker | null = null;
  let sent = 0;

  const healthFile = path.join(tmp, 'health.json');
  const startTree = (extra: string[] = []): Promise<WorkerProcess> =>
    startWorker(
      [
        ...extra,
        '--broker',
        redis.url(0),
        '--workers',
        '2',
        '--batch-size',
        '20',
        '--health-file',
        healthFile,
        '--shutdown-timeout-ms',
        String(SHUTDOWN_TIMEOUT_MS),
        '--log-level',
        'info',
      ],
      env,
    );

  const produce = async (count: number): Promise<void> => {
    await sendEvents({ brokerUrl: redis.url(0), count, startIndex: sent, teamId: 2, timeoutMs: 120_000 });
    sent += count;
  };
  const outputs = (): Promise<number> => admin.llen(OUTPUT);
  /** Everything sent so far is out, and nothing is in the queue, in flight or unacked. */
  const drained = async (what: string): Promise<void> => {
    await waitUntil(
      async () => {
        const [queued, unacked, out] = await Promise.all([admin.llen(QUEUE), admin.hlen(KOMBU_UNACKED), outputs()]);
        const landing = await admin.keys('posthog-plugins:landing:*');
        const landed = landing.length
          ? (await Promise.all(landing.map((k) => admin.llen(k)))).reduce((a, b) => a + b, 0)
          : 0;
        return queued === 0 && unacked === 0 && landed === 0 && out >= sent;
      },
      180_000,
      `${what}: every input processed and acked`,
      200,
    );
  };
  /** Waits until the tree is busy with the backlog: some outputs out, inputs still queued. */
  const busy = async (base: number): Promise<number> => {
    await waitUntil(async () => (await outputs()) >= base + 100, 120_000, 'the workers busy with the backlog', 20);
    return admin.llen(QUEUE);
  };
  const clients = async (): Promise<Array<{ id: string; kind: ClientKind }>> => {
    const list = (await admin.client('LIST')) as string;
    return list
      .split('\n')
      .map((line) => ({ id: /(?:^| )id=(\d+)/.exec(line)?.[1], name: /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '' }))
      .flatMap(({ id, name }) => {
        const kind = kindOf(name);
        return id && kind ? [{ id, kind }] : [];
      });
  };

  before(async () => {
    redis = await startPrivateRedis({ appendonly: true });
    // The test's own client rides out the restarts (offline queue, reconnect every 100 ms).
    admin = new Redis(redis.url(0), { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    admin.on('error', () => undefined);
    const pluginFile = path.join(tmp, 'counter.js');
    writeFileSync(pluginFile, COUNTER_PLUGIN);
    await cli(['install', pluginFile, '--team', '2'], env);
    tree = await startTree();
  });

  after(async () => {
    await tree?.kill().catch(() => undefined);
    await sink?.stop(5_000);
    admin?.disconnect();
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test(`${RESTARTS} Redis restarts (soft and SIGKILL) while the backlog drains: progress resumes after each`, async (t) => {
    const recoveries: number[] = [];
    for (let i = 0; i < RESTARTS; i++) {
      const hard = i % 2 === 1;
      const base = await outputs();
      await produce(CHUNK);
      const queued = await busy(base);
      await redis.restart({ hard, downMs: 2_000 });
      const back = Date.now();
      const at = await outputs();
      await waitUntil(
        async () =>
          (await outputs()) > at || ((await admin.llen(QUEUE)) === 0 && (await admin.hlen(KOMBU_UNACKED)) === 0),
        60_000,
        `progress after restart ${i + 1}`,
        20,
      );
      recoveries.push(Date.now() - back);
      await drained(`restart ${i + 1} (${hard ? 'SIGKILL' : 'SIGTERM'})`);
      t.diagnostic(
        `restart ${i + 1} (${hard ? 'SIGKILL' : 'SIGTERM'}, down ~2 s, ${queued} queued then): first output ${recoveries[i]} ms after Redis was back`,
      );
    }
    t.diagnostic(
      `recovery after Redis was back: max ${Math.max(...recoveries)} ms, median ${[...recoveries].sort((a, b) => a - b)[Math.floor(recoveries.length / 2)]} ms`,
    );
    const wedged = tree!.logs().filter((l) => String(l.message).includes('killing it'));
    assert.deepEqual(wedged, [], 'no worker had to be killed');
  });

  test('CLIENT KILL of each kind of connection: it reconnects and its work goes on', async (t) => {
    const kinds: ClientKind[] = ['broker', 'wait', 'cache', 'pubsub', 'supervisor', 'health'];
    // Idle clients (pubsub, supervisor) reconnect on their own backoff (up to 4 s after the last restart's 2 s
    // outage), which can outlast the drain that ended the previous test: wait for every kind to be back.
    let before: Array<{ id: string; kind: ClientKind }> = [];
    await waitUntil(
      async () => {
        before = await clients();
        return kinds.every((kind) => before.some((c) => c.kind === kind));
      },
      30_000,
      'a connection of every kind open after the restarts',
    ).catch(() => undefined);
    for (const kind of kinds)
      assert.ok(
        before.some((c) => c.kind === kind),
        `a ${kind} connection is open (${JSON.stringify(before)})`,
      );
    for (const kind of kinds) {
      const base = await outputs();
      await produce(CHUNK / 2);
      await busy(base);
      const counterKey = await waitUntil(
        async () => (await admin.keys('@plugin/*/2/seen'))[0],
        30_000,
        'the plugin cache counter',
      );
      const victims = (await clients()).filter((c) => c.kind === kind);
      const seen = Number(await admin.get(counterKey));
      const reloads = tree!
        .logs()
        .filter((l) => String(l.message).startsWith('plugins reloaded (reload-plugins)')).length;
      const backBefore = tree!
        .logs()
        .filter((l) => String(l.message).startsWith('reload channel reload-plugins back')).length;
      for (const v of victims) await admin.client('KILL', 'ID', v.id);
      // Reconnected: as many connections of this kind as before, none of them a killed one.
      await waitUntil(
        async () => {
          const now = (await clients()).filter((c) => c.kind === kind);
          return now.length >= victims.length && now.every((c) => !victims.some((v) => v.id === c.id));
        },
        30_000,
        `${kind} connections back after CLIENT KILL`,
      );
      if (kind === 'pubsub') {
        const count = (prefix: string): number =>
          tree!.logs().filter((l) => String(l.message).startsWith(prefix)).length;
        // Announcements made while a subscriber was away are lost: each worker reloads once when it is back.
        await waitUntil(
          () =>
            count('reload channel reload-plugins back') >= backBefore + victims.length &&
            count('plugins reloaded (reload-plugins)') >= reloads + victims.length,
          30_000,
          'each worker reloads once when its subscriber is back',
        );
        const settled = count('plugins reloaded (reload-plugins)');
        // Resubscribed: a change announced now reaches every worker.
        await waitUntil(
          async () => {
            await admin.publish('reload-plugins', 'changed');
            return count('plugins reloaded (reload-plugins)') >= settled + 2;
          },
          30_000,
          'both workers reload after their subscriber was killed',
          1_000,
        );
      }
      await drained(`CLIENT KILL ${kind}`);
      if (kind === 'cache') {
        // Calls made while it reconnected failed (CacheError, the event went on unchanged); once back, every
        // event's INCR counts again.
        const from = Number(await admin.get(counterKey));
        await produce(50);
        await drained('events after the cache reconnected');
        const to = Number(await admin.get(counterKey));
        assert.ok(
          to - from >= 50,
          `meta.cache works again after its connection was killed (counter ${from} -> ${to} for 50 events)`,
        );
      }
      t.diagnostic(
        `CLIENT KILL ${kind}: ${victims.length} connection(s) killed, reconnected, backlog drained; cache counter ${seen} -> ${await admin.get(counterKey)}`,
      );
    }
  });

  test('SIGTERM with Redis down ends the whole tree within the shutdown timeout; nothing is lost', async (t) => {
    const base = await outputs();
    await produce(CHUNK);
    await busy(base);
    const pids = [tree!.child.pid!, ...(await childrenOf(tree!.child.pid!))];
    let redisBack = false;
    const down = redis.restart({ downMs: 40_000 }).then(() => (redisBack = true));
    await waitUntil(async () => !(await portOpen(redis.port)), 10_000, 'Redis down');
    const signalled = Date.now();
    const code = await Promise.race([
      tree!.stop(120_000),
      new Promise<'hung'>((r) => setTimeout(() => r('hung'), SHUTDOWN_TIMEOUT_MS + 20_000)),
    ]);
    const tookMs = Date.now() - signalled;
    assert.notEqual(
      code,
      'hung',
      `start still running ${SHUTDOWN_TIMEOUT_MS + 20_000} ms after SIGTERM with Redis down:\n${tree!.logText().slice(-3000)}`,
    );
    assert.equal(redisBack, false, 'it ended while Redis was still down');
    assert.deepEqual(pids.filter(alive), [], 'no process of the tree is left');
    t.diagnostic(
      `SIGTERM with Redis down: start exited with code ${String(code)} after ${tookMs} ms (--shutdown-timeout-ms ${SHUTDOWN_TIMEOUT_MS})`,
    );
    await down;
    // What the stopped workers still held is restored by the next workers (their processes are gone).
    tree = await startTree(['--stuck-timeout-ms', String(STUCK_TIMEOUT_MS)]);
    await drained('after the restart with Redis down');
  });

  test('a worker that cannot settle fails health and is replaced; the backlog drains once Redis writes again', async (t) => {
    const base = await outputs();
    await produce(CHUNK);
    await busy(base);
    // Redis takes no more writes (its replies to them never come): pops and settles hang until the socket timeout,
    // then fail, again and again; the workers hold their batches and settle none.
    await admin.client('PAUSE', '600000', 'WRITE');
    try {
      const verdict = await waitUntil(
        async () => {
          const h = await health(healthFile, ['--stuck-after-ms', '3000']);
          return h.code === 1 && /has settled none/.test(h.out) ? h.out : null;
        },
        60_000,
        'health failing a worker that settles nothing',
        500,
      );
      t.diagnostic(`health: ${verdict}`);
      const killed = await tree!.waitForLog(
        (l) => /holds \d+ message\(s\) and has settled none for .*: killing it/.test(String(l.message)),
        60_000,
        'the supervisor killing the stuck worker',
      );
      t.diagnostic(`supervisor: ${String(killed.message)}`);
    } finally {
      await admin.client('UNPAUSE');
    }
    await drained('after writes resumed');
  });

  test('Python Celery ingests every output: lost = 0, duplicates reported', async (t) => {
    assert.equal(await tree!.stop(60_000), 0, 'clean stop with Redis up');
    tree = null;
    sink = await startSinkWorker({ brokerUrl: redis.url(0) });
    await sink.waitFor(sent, 300_000);
    await waitUntil(async () => (await outputs()) === 0, 120_000, 'the sink drained celery');
    t.diagnostic(assertNothingLost(sink, sent));
  });
});
