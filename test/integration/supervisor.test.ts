import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { type BrokerFixture, amqpFixture, redisFixture } from '../helpers/brokers';
import { type SentTask, type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { PYTHON, PYTHON_DIR } from '../helpers/python';
import { flushRedisDb, waitUntil } from '../helpers/services';
import { BIN, REPO, type WorkerProcess, alive, childrenOf, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * `posthog-plugins start` as a supervisor of worker processes, with real parts only: real Python Celery
 * produces, the real CLI supervises two workers, a real Python Celery worker executes what they publish.
 * A worker is SIGKILLed while events flow: the supervisor restarts it at once and returns its in-flight
 * messages to the queue itself (measured), and every event still comes out. A worker that stops answering
 * heartbeats is killed and replaced. SIGTERM ends everything cleanly, no process left behind.
 * On RabbitMQ the broker requeues a dead worker's deliveries itself; a setting RabbitMQ will never accept ends
 * the supervisor with exit 1 and the reason, instead of a restart loop.
 * Redis db 7 and vhost `posthog-plugins-test-supervisor` are reserved for this file (test/helpers/services.ts).
 */
const REDIS_DB = 7;
const VHOST = 'posthog-plugins-test-supervisor';
const INPUT = 'posthog-plugins';
const TEAM = 2;
const COUNT = 1000;
const BATCH = 10;
/** processEvent busy-waits this long per event, so that batches are in flight most of the time. */
const EVENT_MS = 8;

const SLOW_PLUGIN = `
exports.processEvent = function (event) {
  const end = Date.now() + ${EVENT_MS}
  while (Date.now() < end) {}
  event.properties = Object.assign({}, event.properties, { slow_seen: true })
  return event
}
`;

function uuidOf(r: SinkRecord): string {
  return String((r.data as { uuid: string }).uuid);
}

function uuidOfSent(t: SentTask): string {
  return String((t.args[3] as { uuid: string }).uuid);
}

describe('supervisor: worker processes on redis', () => {
  let broker: BrokerFixture;
  let redis: Redis;
  let sink: SinkWorker;
  let sup: WorkerProcess;
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-supervisor-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };

  /** Live worker processes as the supervisor's log tells: pid → {index, workerId}. */
  function workersFromLog(): Map<number, { index: number; workerId?: string; started: boolean; exited: boolean }> {
    const out = new Map<number, { index: number; workerId?: string; started: boolean; exited: boolean }>();
    for (const l of sup.logs()) {
      const msg = String(l.message ?? '');
      const pid = typeof l.pid === 'number' ? l.pid : undefined;
      if (pid === undefined) continue;
      if (/^worker \d+ started/.test(msg)) out.set(pid, { index: Number(l.worker), started: true, exited: false });
      const w = out.get(pid);
      if (!w) continue;
      if (/holds Redis worker id/.test(msg)) w.workerId = String(l.workerId);
      if (/^worker \d+ \(pid \d+\) (died|stopped|ended)/.test(msg)) w.exited = true;
    }
    return out;
  }

  function consumingPids(): number[] {
    return sup
      .logs()
      .filter((l) => String(l.message ?? '').startsWith('consuming ') && typeof l.pid === 'number')
      .map((l) => l.pid as number);
  }

  before(async () => {
    broker = redisFixture(REDIS_DB);
    await broker.reset();
    redis = new Redis(broker.url);
    const plugin = path.join(tmp, 'slow.js');
    writeFileSync(plugin, SLOW_PLUGIN);
    await cli(['migrate'], env);
    await cli(['install', plugin, '--team', String(TEAM), '--name', 'slow'], env);
    sink = await startSinkWorker({ brokerUrl: broker.url });
    sup = await startWorker(
      [
        '--broker',
        broker.url,
        '--workers',
        '2',
        '--batch-size',
        String(BATCH),
        '--heartbeat-interval-ms',
        '500',
        '--heartbeat-timeout-ms',
        '5000',
      ],
      env,
    );
    await waitUntil(() => consumingPids().length >= 2, 60_000, 'both worker processes consuming');
  });

  after(async () => {
    await sup?.stop();
    await sink?.stop();
    redis?.disconnect();
    await broker?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('start runs two worker processes with --no-node-snapshot, each with its own Redis worker id', async () => {
    const kids = await childrenOf(sup.child.pid!);
    assert.equal(kids.length, 2, `two children of the supervisor: ${kids.join(' ')}`);
    const ws = workersFromLog();
    for (const pid of kids) {
      assert.ok(ws.get(pid)?.workerId, `worker id of ${pid} logged by the supervisor`);
      const { stdout } = await execFileAsync('ps', ['-o', 'args=', '-p', String(pid)]);
      assert.match(stdout, /--no-node-snapshot .*main\.js worker/, stdout);
      // On the Node the supervisor runs on (bin/posthog-plugins: POSTHOG_PLUGINS_NODE, i.e. the line under test).
      assert.equal(realpathSync(`/proc/${pid}/exe`), realpathSync(process.execPath), `node binary of worker ${pid}`);
    }
    // The supervisor itself never registers as a consumer.
    const registered = await redis.smembers('posthog-plugins:workers');
    assert.ok(!registered.some((id) => id.includes(`-${sup.child.pid}-`)), JSON.stringify(registered));
  });

  test('SIGKILL of a worker while events flow: restarted at once, its messages back within a second or two, every event out', async (t) => {
    // Not awaited: the kill lands while the producer is still sending.
    const sending = sendEvents({ brokerUrl: broker.url, count: COUNT, teamId: TEAM, timeoutMs: 120_000 });

    // Pick a worker that holds a batch right now.
    const ws = workersFromLog();
    const live = [...ws].filter(([, w]) => !w.exited && w.workerId);
    assert.equal(live.length, 2);
    const [victimPid, victim] = live[0]!;
    const inflightKey = `posthog-plugins:inflight:${victim.workerId}`;
    await waitUntil(async () => (await redis.scard(inflightKey)) >= 3, 30_000, 'the victim holding a batch', 2);
    process.kill(victimPid, 'SIGKILL');
    const killedAt = Date.now();
    const heldAtKill = await redis.scard(inflightKey);

    // Its in-flight set empties as the supervisor restores it (nothing else touches it: the holder is dead).
    await waitUntil(
      async () => (await redis.scard(inflightKey)) === 0,
      10_000,
      'the dead worker’s messages restored',
      5,
    );
    const restoreMs = Date.now() - killedAt;
    const restartLine = await sup.waitForLog(
      (l) => /^worker \d+ started/.test(String(l.message)) && l.worker === victim.index && l.pid !== victimPid,
      10_000,
      'replacement started',
    );
    const restartMs = Date.now() - killedAt;
    const newPid = restartLine.pid as number;
    await sup.waitForLog(
      (l) => String(l.message).startsWith('consuming ') && l.pid === newPid,
      60_000,
      'replacement consuming',
    );
    const readyMs = Date.now() - killedAt;
    const restoredLine = sup
      .logs()
      .find(
        (l) => /^returned \d+ in-flight message\(s\) of dead worker/.test(String(l.message)) && l.pid === victimPid,
      );
    assert.ok(restoredLine, 'the supervisor restored the dead worker’s messages itself');
    const deathLine = sup.logs().find((l) => /died/.test(String(l.message)) && l.pid === victimPid);
    assert.ok(deathLine, 'death logged');
    assert.match(String(deathLine.message), /SIGKILL from outside/);
    assert.match(String(deathLine.message), /not charged|no plugin call/);
    assert.ok(
      !sup.logs().some((l) => /crashed worker/.test(String(l.message))),
      'an outside kill is not charged to the plugin',
    );

    // Every event comes out; duplicates only for inputs that were in flight.
    const sentUuids = new Set((await sending).map(uuidOfSent));
    const deadline = Date.now() + 120_000;
    let records: SinkRecord[] = [];
    for (;;) {
      records = sink.records();
      const seen = new Set(records.map(uuidOf));
      if ([...sentUuids].every((u) => seen.has(u))) break;
      assert.ok(Date.now() < deadline, `only ${seen.size} of ${sentUuids.size} events out after 120 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 1000));
    records = sink.records();
    const counts = new Map<string, number>();
    for (const r of records) counts.set(uuidOf(r), (counts.get(uuidOf(r)) ?? 0) + 1);
    const duplicates = [...counts.values()].reduce((sum, n) => sum + n - 1, 0);
    assert.ok(duplicates <= BATCH, `${duplicates} duplicate(s), at most one batch (${BATCH}) expected`);
    for (const r of records)
      assert.equal(
        (r.data as { properties: Record<string, unknown> }).properties['slow_seen'],
        true,
        `event ${uuidOf(r)} went through the plugin`,
      );
    assert.deepEqual(sink.problems(), []);
    assert.equal(await broker.unsettled(INPUT), 0);
    t.diagnostic(
      `held at kill ${heldAtKill}; kill → in-flight restored ${restoreMs} ms (supervisor: ${String(restoredLine.restoreMs)} ms after exit); ` +
        `kill → replacement spawned ${restartMs} ms, consuming ${readyMs} ms; duplicates ${duplicates}`,
    );
    // "At once": generous bounds for a loaded 2-core machine (measured 20-140 ms when quiet).
    assert.ok(restoreMs < 10_000, `restore took ${restoreMs} ms`);
    assert.ok(restartMs < 10_000, `restart took ${restartMs} ms`);
  });

  test('a worker that stops answering heartbeats is killed and replaced', async (t) => {
    const ws = workersFromLog();
    const live = [...ws].filter(([, w]) => !w.exited);
    assert.equal(live.length, 2);
    const [victimPid, victim] = live[1]!;
    process.kill(victimPid, 'SIGSTOP'); // its main thread answers nothing from now on, as if stuck in an isolate
    const stoppedAt = Date.now();
    try {
      await sup.waitForLog(
        (l) => /has not answered heartbeats/.test(String(l.message)) && l.pid === victimPid,
        20_000,
        'heartbeat kill',
      );
    } finally {
      if (alive(victimPid)) process.kill(victimPid, 'SIGCONT');
    }
    const killMs = Date.now() - stoppedAt;
    const line = await sup.waitForLog(
      (l) =>
        /^worker \d+ started/.test(String(l.message)) &&
        l.worker === victim.index &&
        typeof l.pid === 'number' &&
        l.pid !== victimPid &&
        !ws.has(l.pid),
      10_000,
      'replacement',
    );
    await sup.waitForLog(
      (l) => String(l.message).startsWith('consuming ') && l.pid === line.pid,
      60_000,
      'replacement consuming',
    );
    await waitUntil(() => !alive(victimPid), 5_000, 'the stuck worker gone');
    t.diagnostic(`SIGSTOP → killed after ${killMs} ms (timeout 5000 ms, interval 500 ms)`);
    assert.ok(killMs >= 4000 && killMs < 20_000, `killed after ${killMs} ms`);

    const before = sink.records().length;
    const more = await sendEvents({ brokerUrl: broker.url, count: 20, teamId: TEAM, startIndex: 5000 });
    const records = await sink.waitFor(before + more.length, 60_000);
    const uuids = new Set(records.map(uuidOf));
    for (const m of more) assert.ok(uuids.has(uuidOfSent(m)));
  });

  test('SIGTERM to the whole process group: workers finish and exit, the supervisor exits 0, nothing left running or held', async () => {
    const supPid = sup.child.pid!;
    const kids = await childrenOf(supPid);
    assert.equal(kids.length, 2);
    // As a terminal, `timeout` or systemd deliver it: to every process, then the supervisor forwards it again.
    for (const pid of kids) process.kill(pid, 'SIGTERM');
    const code = await sup.stop(60_000);
    assert.ok(
      !sup.logs().some((l) => /exiting at once|exit code 1/.test(String(l.message))),
      sup.logText().slice(-3000),
    );
    assert.equal(code, 0, sup.logText().slice(-3000));
    for (const pid of kids) assert.ok(!alive(pid), `worker ${pid} still running after the supervisor exited`);
    assert.equal(sup.logs().filter((l) => l.message === 'stopped cleanly').length >= 2, true);
    assert.ok(sup.logs().some((l) => l.message === 'all workers stopped cleanly'));
    assert.equal(await broker.unsettled(INPUT), 0);
    assert.deepEqual(await redis.smembers('posthog-plugins:workers'), []);
  });
});

describe('supervisor: worker processes on rabbitmq', () => {
  let broker: BrokerFixture;
  let sink: SinkWorker;
  let sup: WorkerProcess;
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-supervisor-amqp-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };

  before(async () => {
    broker = amqpFixture(VHOST);
    await broker.reset();
    const plugin = path.join(tmp, 'slow.js');
    writeFileSync(plugin, SLOW_PLUGIN);
    await cli(['migrate'], env);
    await cli(['install', plugin, '--team', String(TEAM), '--name', 'slow'], env);
    sink = await startSinkWorker({ brokerUrl: broker.url });
  });

  after(async () => {
    await sup?.stop();
    await sink?.stop();
    await broker?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('SIGKILL of a worker while events flow: RabbitMQ requeues its deliveries, the supervisor restarts it, every event out', async (t) => {
    sup = await startWorker(['--broker', broker.url, '--workers', '2', '--batch-size', String(BATCH)], env);
    await waitUntil(
      () => sup.logs().filter((l) => String(l.message ?? '').startsWith('consuming ')).length >= 2,
      60_000,
      'both workers consuming',
    );
    const sending = sendEvents({ brokerUrl: broker.url, count: 400, teamId: TEAM, timeoutMs: 120_000 });
    const before = sink.records().length;
    await waitUntil(() => sink.records().length > before + 20, 60_000, 'events flowing');
    const victim = sup.logs().find((l) => /^worker 0 started/.test(String(l.message)))!.pid as number;
    process.kill(victim, 'SIGKILL');
    const killedAt = Date.now();
    const line = await sup.waitForLog(
      (l) => /^worker 0 started/.test(String(l.message)) && l.pid !== victim,
      10_000,
      'replacement',
    );
    const restartMs = Date.now() - killedAt;
    await sup.waitForLog(
      (l) => String(l.message).startsWith('consuming ') && l.pid === line.pid,
      60_000,
      'replacement consuming',
    );
    const sent = await sending;
    const want = new Set(sent.map(uuidOfSent));
    const deadline = Date.now() + 120_000;
    for (;;) {
      const seen = new Set(sink.records().map(uuidOf));
      const missing = [...want].filter((u) => !seen.has(u));
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        const unsettled = await broker.unsettled(INPUT);
        assert.fail(
          `${missing.length} event(s) never came out (${unsettled} unacked in ${INPUT}): ${missing.slice(0, 3).join(' ')}\n${sup.logText().slice(-6000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const counts = new Map<string, number>();
    for (const r of sink.records()) if (want.has(uuidOf(r))) counts.set(uuidOf(r), (counts.get(uuidOf(r)) ?? 0) + 1);
    const duplicates = [...counts.values()].reduce((sum, n) => sum + n - 1, 0);
    // Prefetch is batch x concurrency (10): at most one batch can be published but not acked when the kill lands.
    assert.ok(duplicates <= BATCH, `${duplicates} duplicate(s)`);
    assert.deepEqual(sink.problems(), []);
    t.diagnostic(`kill → replacement spawned ${restartMs} ms; duplicates ${duplicates}`);
    assert.equal(await sup.stop(60_000), 0);
    assert.equal(await broker.unsettled(INPUT), 0);
  });

  test('a setting RabbitMQ refuses for good: exit 1 with the reason once, no restart loop, nothing left running', async () => {
    await broker.reset();
    const script = `
import sys
from kombu import Connection, Exchange, Queue
with Connection(sys.argv[1]) as conn:
    Queue('posthog-plugins', Exchange('posthog-plugins'), 'posthog-plugins', queue_arguments={'x-max-priority': 10})(conn.default_channel).declare()
`;
    await execFileAsync(PYTHON, ['-c', script, broker.url], { cwd: PYTHON_DIR, timeout: 60_000 });
    const child = spawn(BIN, ['start', '--log-format', 'json', '--broker', broker.url, '--workers', '2'], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    assert.equal(code, 1, output.slice(-3000));
    assert.equal(output.match(/refused to declare/g)?.length, 1, output.slice(-3000));
    assert.match(output, /--amqp-passive/);
    assert.doesNotMatch(output, /restarting it|next attempt/);
    const workerPids = [...output.matchAll(/"message":"worker \d+ started \(pid (\d+)\)"/g)].map((m) => Number(m[1]));
    assert.ok(workerPids.length >= 1, 'worker processes were started');
    for (const pid of workerPids) assert.ok(!alive(pid), `worker ${pid} left running`);
  });
});

describe('supervisor: a worker that keeps dying at start', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-supervisor-backoff-'));
  // The workers open the database through a symlink that the test points at garbage and back.
  const link = path.join(tmp, 'plugins.sqlite3');
  const env = { DATABASE_URL: `sqlite:${link}` };
  let sup: WorkerProcess | undefined;

  after(async () => {
    await sup?.stop();
    // The worker declared its queues' kombu bindings in the db.
    await flushRedisDb(REDIS_DB);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('is restarted with growing delays, the log says why; once the cause is gone it consumes again', async (t) => {
    const broker = redisFixture(REDIS_DB);
    await broker.reset();
    await broker.close();
    await cli(['migrate'], env);
    renameSync(link, path.join(tmp, 'real.sqlite3'));
    symlinkSync('real.sqlite3', link);
    writeFileSync(path.join(tmp, 'bad.sqlite3'), 'this is not a database file '.repeat(10));
    sup = await startWorker(['--broker', redisFixture(REDIS_DB).url, '--workers', '1'], env);
    const first = workerPid(sup.logs(), 0);
    // The database goes bad under a running worker; it dies (here: killed) and its replacements cannot start.
    const repoint = (target: string): void => {
      rmSync(path.join(tmp, 'next'), { force: true });
      symlinkSync(target, path.join(tmp, 'next'));
      renameSync(path.join(tmp, 'next'), link);
    };
    repoint('bad.sqlite3');
    process.kill(first, 'SIGKILL');
    const backoff = await sup.waitForLog(
      (l) => /failed 3 time\(s\) in a row, next attempt in 2 s/.test(String(l.message)),
      60_000,
      'third early death, 2 s delay',
    );
    assert.match(String(backoff.message), /exit code 1; error: .*not a database.*during startup/);
    const delays = sup
      .logs()
      .filter((l) => typeof l.delayMs === 'number')
      .map((l) => l.delayMs as number);
    assert.deepEqual(delays.slice(0, 2), [1000, 2000]);
    // Fixed: the next attempt consumes again.
    repoint('real.sqlite3');
    const consumingBefore = sup.logs().filter((l) => String(l.message ?? '').startsWith('consuming ')).length;
    await waitUntil(
      () => sup!.logs().filter((l) => String(l.message ?? '').startsWith('consuming ')).length > consumingBefore,
      60_000,
      'consuming again',
    );
    t.diagnostic(
      `delays before recovery: ${sup
        .logs()
        .filter((l) => typeof l.delayMs === 'number')
        .map((l) => l.delayMs)
        .join(', ')} ms`,
    );
    assert.equal(await sup.stop(), 0);
  });
});

function workerPid(logs: Array<Record<string, unknown>>, index: number): number {
  const line = [...logs].reverse().find((l) => l.worker === index && /^worker \d+ started/.test(String(l.message)));
  assert.ok(line, `worker ${index} started`);
  return line.pid as number;
}
