import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { PYTHON, PYTHON_DIR, type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { amqpUrl, deleteVhost, resetVhost, waitUntil } from '../helpers/services';
import { BIN, REPO, type WorkerProcess, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * posthog-plugins and PostHog's Python Celery workers declare the same RabbitMQ queues (`posthog-plugins` by
 * PostHog's producer, `celery` by both). Whoever comes first, the other must not get 406 PRECONDITION_FAILED;
 * and when Python declared `posthog-plugins` with other arguments (x-max-priority), our worker must stop with
 * a clear error, not crash-loop, and work when told to use the queue as it is. Vhost
 * `posthog-plugins-test-shared` is reserved for this file (test/helpers/services.ts).
 */
const VHOST = 'posthog-plugins-test-shared';
const URL = amqpUrl(VHOST);
const INPUT = 'posthog-plugins';
const OUTPUT = 'celery';
const TEAM = 2;
const MARK = 'shared_test';
/** Worker processes of each `start`: both declare the queues at once, as replicas on several machines would. */
const PROCESSES = 2;

const tmp = mkdtempSync(path.join(tmpdir(), 'pp-shared-'));
const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
const workers: WorkerProcess[] = [];
const sinks: SinkWorker[] = [];

async function worker(extra: string[] = []): Promise<WorkerProcess> {
  const w = await startWorker(['--broker', URL, '--batch-size', '10', '--workers', String(PROCESSES), ...extra], env);
  workers.push(w);
  // startWorker returns at the first worker process that consumes; wait for all of them.
  await waitUntil(
    () => w.logs().filter((l) => String(l.message).startsWith(`consuming ${INPUT} `)).length >= PROCESSES,
    30_000,
    'every worker process consuming',
  );
  return w;
}

async function sinkWorker(): Promise<SinkWorker> {
  const s = await startSinkWorker({ brokerUrl: URL, queue: OUTPUT });
  sinks.push(s);
  return s;
}

interface QueueRow {
  name: string;
  durable: string;
  autoDelete: string;
  arguments: string;
  consumers: number;
  messages: number;
}

async function queues(): Promise<Map<string, QueueRow>> {
  const { stdout } = await execFileAsync('rabbitmqctl', [
    '-q',
    'list_queues',
    '-p',
    VHOST,
    'name',
    'durable',
    'auto_delete',
    'arguments',
    'consumers',
    'messages',
    '--no-table-headers',
  ]);
  const rows = new Map<string, QueueRow>();
  for (const line of stdout.split('\n')) {
    const cols = line.split('\t');
    if (cols.length !== 6) continue;
    rows.set(cols[0]!, {
      name: cols[0]!,
      durable: cols[1]!,
      autoDelete: cols[2]!,
      arguments: cols[3]!,
      consumers: Number(cols[4]),
      messages: Number(cols[5]),
    });
  }
  return rows;
}

async function exchanges(): Promise<Map<string, string>> {
  const { stdout } = await execFileAsync('rabbitmqctl', [
    '-q',
    'list_exchanges',
    '-p',
    VHOST,
    'name',
    'type',
    'durable',
    'auto_delete',
    '--no-table-headers',
  ]);
  const rows = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const cols = line.split('\t');
    if (cols.length === 4 && cols[0] !== '') rows.set(cols[0]!, cols.slice(1).join(' '));
  }
  return rows;
}

/** Neither side met a 406 and both consume what they should, with the topology Celery declares. */
async function checkShared(w: WorkerProcess, sink: SinkWorker, inputArguments = '[]'): Promise<void> {
  for (const [who, text] of [
    ['posthog-plugins', w.logText()],
    ['Python Celery', sink.log()],
  ] as const) {
    // Not in a timestamp's milliseconds (",406" / ".406"), inside a number, or inside a task id (…-9b47b406-…).
    assert.doesNotMatch(
      text,
      /PRECONDITION|Precondition|inequivalent arg|(?<![\w,.-])406(?![\w-])/,
      `${who} log mentions a 406:\n${text.slice(-3000)}`,
    );
  }
  assert.equal(
    w.logs().filter((l) => String(l.message).startsWith(`consuming ${INPUT} `)).length,
    PROCESSES,
    'posthog-plugins is consuming',
  );
  assert.match(sink.log(), / ready\.\s*$/m, 'Python Celery is consuming');
  assert.equal(w.child.exitCode, null);
  assert.equal(sink.exitStatus(), undefined);
  const q = await queues();
  assert.deepEqual(
    [q.get(INPUT), q.get(OUTPUT)].map((r) => r && [r.name, r.durable, r.autoDelete, r.arguments, r.consumers]),
    [
      [INPUT, 'true', 'false', inputArguments, PROCESSES],
      [OUTPUT, 'true', 'false', '[]', 1],
    ],
  );
  const x = await exchanges();
  assert.equal(x.get(INPUT), 'direct true false');
  assert.equal(x.get(OUTPUT), 'direct true false');
}

function uuidOf(r: SinkRecord): string {
  return String((r.data as { uuid: string }).uuid);
}

/** Waits for exactly these events at the sink (no others), each processed by the plugin. */
async function expectOut(sink: SinkWorker, uuids: string[], timeoutMs = 30_000): Promise<void> {
  const records = await sink.waitFor(uuids.length, timeoutMs);
  await new Promise((r) => setTimeout(r, 500));
  const all = sink.records();
  assert.deepEqual(all.map(uuidOf).sort(), [...uuids].sort(), `exactly the sent events (got ${records.length})`);
  for (const r of all) assert.equal((r.data as { properties: Record<string, unknown> }).properties[MARK], 'yes');
  assert.deepEqual(sink.problems(), []);
}

/** Python, configured like a PostHog whose `posthog-plugins` queue has x-max-priority 10, sends events. */
async function sendToPriorityQueue(count: number, startIndex: number): Promise<string[]> {
  const script = `
import datetime, json, sys
from kombu import Exchange, Queue
from producer import build_event, make_app, send_one
url, count, start, team = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
app = make_app(url)
app.conf.task_queues = (
    Queue('celery', Exchange('celery'), 'celery'),
    Queue('posthog-plugins', Exchange('posthog-plugins'), 'posthog-plugins', queue_arguments={'x-max-priority': 10}),
)
now = datetime.datetime.now(datetime.timezone.utc)
with app.producer_or_acquire() as producer:
    for i in range(start, start + count):
        data = build_event(i, 'user-%d' % i)
        send_one(app, 'user-%d' % i, '127.0.0.1', 'http://localhost:8000', data, team, now, now,
                 queue='posthog-plugins', producer=producer, priority=i % 10)
        print(data['uuid'])
`;
  const { stdout } = await execFileAsync(PYTHON, ['-c', script, URL, String(count), String(startIndex), String(TEAM)], {
    cwd: PYTHON_DIR,
    timeout: 60_000,
  });
  return stdout.split('\n').filter((l) => l.trim() !== '');
}

/** Fresh vhost where Python declared `posthog-plugins` with x-max-priority 10 (kombu), as PostHog configured so would. */
async function priorityVhost(): Promise<void> {
  await resetVhost(VHOST);
  const script = `
import sys
from kombu import Connection, Exchange, Queue
with Connection(sys.argv[1]) as conn:
    Queue('posthog-plugins', Exchange('posthog-plugins'), 'posthog-plugins', queue_arguments={'x-max-priority': 10})(conn.default_channel).declare()
`;
  await execFileAsync(PYTHON, ['-c', script, URL], { cwd: PYTHON_DIR, timeout: 60_000 });
  assert.equal((await queues()).get(INPUT)?.arguments, '[{"x-max-priority",10}]');
}

/** `posthog-plugins start` run to its end (or killed after `timeoutMs`): exit code and everything it printed. */
function runToExit(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(BIN, ['start', '--log-format', 'json', ...args], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, ms: Date.now() - started });
    });
  });
}

async function stopAll(): Promise<void> {
  for (const w of workers.splice(0)) await w.stop(10_000).catch(() => undefined);
  for (const s of sinks.splice(0)) await s.stop().catch(() => undefined);
}

describe('shared queues on RabbitMQ: posthog-plugins next to Python Celery', () => {
  before(async () => {
    await cli(['migrate'], env);
    await cli(
      [
        'install',
        'fixtures/plugins/add-property',
        '--team',
        String(TEAM),
        '--config',
        JSON.stringify({ propertyName: MARK, propertyValue: 'yes' }),
      ],
      env,
    );
  });

  after(async () => {
    await stopAll();
    await deleteVhost(VHOST);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('posthog-plugins starts first, then the Python Celery worker: no 406 on either side, an event flows', async () => {
    await resetVhost(VHOST);
    try {
      const w = await worker();
      const sink = await sinkWorker();
      await checkShared(w, sink);
      const sent = await sendEvents({ brokerUrl: URL, count: 3, teamId: TEAM }); // PostHog's producer declares posthog-plugins too
      await expectOut(
        sink,
        sent.map((t) => String(t.uuid)),
      );
      await checkShared(w, sink);
    } finally {
      await stopAll();
    }
  });

  test('Python Celery (worker and producer) first, then posthog-plugins: no 406 on either side, events flow', async () => {
    await resetVhost(VHOST);
    try {
      const sink = await sinkWorker();
      const early = await sendEvents({ brokerUrl: URL, count: 3, teamId: TEAM, startIndex: 100 }); // declares posthog-plugins, no consumer yet
      const w = await worker();
      await checkShared(w, sink);
      const late = await sendEvents({ brokerUrl: URL, count: 2, teamId: TEAM, startIndex: 200 });
      await expectOut(
        sink,
        [...early, ...late].map((t) => String(t.uuid)),
      );
      // A Python worker restarting next to ours declares everything again: still no 406.
      await sinks.splice(0)[0]!.stop();
      const again = await sinkWorker();
      await checkShared(w, again);
    } finally {
      await stopAll();
    }
  });

  test('posthog-plugins pre-declared by Python with x-max-priority 10: a plain start exits non-zero naming the queue and the argument', async () => {
    await priorityVhost();
    try {
      await sinkWorker();
      const waiting = await sendToPriorityQueue(4, 300);
      const run = await runToExit(['--broker', URL, '--workers', String(PROCESSES)], 30_000);
      assert.equal(run.signal, null, `still running after 30 s (retry loop?):\n${run.output.slice(-3000)}`);
      assert.notEqual(run.code, 0);
      assert.ok(run.code !== null && run.code > 0, `exit code ${run.code}`);
      assert.match(run.output, /queue 'posthog-plugins'/, run.output.slice(-3000));
      assert.match(run.output, /x-max-priority/);
      assert.match(run.output, /--amqp-passive/, 'it says what to do');
      // Not retried: no worker process restarted, none ever consumed.
      assert.doesNotMatch(
        run.output,
        /retrying in|next attempt in|restarting it now|consuming posthog-plugins/,
        run.output.slice(-3000),
      );
      // Nothing was changed or taken: the queue keeps its arguments and the waiting events.
      const q = (await queues()).get(INPUT);
      assert.equal(q?.arguments, '[{"x-max-priority",10}]');
      assert.equal(q?.messages, waiting.length);
      assert.equal(q?.consumers, 0);
    } finally {
      await stopAll();
    }
  });

  test('posthog-plugins pre-declared with x-max-priority 10: --amqp-passive uses it as it is, events flow', async () => {
    await priorityVhost();
    try {
      const sink = await sinkWorker();
      const early = await sendToPriorityQueue(4, 400);
      const w = await worker(['--amqp-passive']);
      const late = await sendToPriorityQueue(4, 500);
      await expectOut(sink, [...early, ...late]);
      await checkShared(w, sink, '[{"x-max-priority",10}]');
    } finally {
      await stopAll();
    }
  });

  test('posthog-plugins with --amqp-queue-arguments \'{"x-max-priority":10}\' first, then the Python Celery worker: no 406 on `celery`', async () => {
    await resetVhost(VHOST);
    try {
      const w = await worker(['--amqp-queue-arguments', '{"x-max-priority":10}']);
      const sink = await sinkWorker();
      await checkShared(w, sink, '[{"x-max-priority",10}]');
    } finally {
      await stopAll();
    }
  });

  test('posthog-plugins pre-declared with x-max-priority 10: --amqp-queue-arguments \'{"x-max-priority":10}\' matches it, events flow', async () => {
    await priorityVhost();
    try {
      const sink = await sinkWorker();
      const early = await sendToPriorityQueue(4, 600);
      const w = await worker(['--amqp-queue-arguments', '{"x-max-priority":10}']);
      const late = await sendToPriorityQueue(4, 700);
      await expectOut(sink, [...early, ...late]);
      await checkShared(w, sink, '[{"x-max-priority",10}]');
    } finally {
      await stopAll();
    }
  });
});
