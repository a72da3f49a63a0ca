import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { assertNothingLost } from '../helpers/loss';
import { type PrivateRabbit, startPrivateRabbit } from '../helpers/private-rabbitmq';
import { type SinkWorker, startSinkWorker, sendEvents } from '../helpers/python';
import { amqpUrl, deleteVhost, resetVhost, waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * The RabbitMQ half of the chaos test (issue 18): a `posthog-plugins start` tree (2 workers) drains backlogs
 * produced by real Python Celery while every connection on its vhost is closed by the broker
 * (`rabbitmqctl close_all_connections --vhost`; RabbitMQ itself is shared, so it is never stopped). After each
 * close the backlog must drain; at the end a Python Celery worker ingests every output: lost = 0, duplicates
 * reported (an ack in flight when the connection died redelivers an input whose output is already out).
 * Vhost `posthog-plugins-test-chaos` is reserved for this file.
 */
const VHOST = 'posthog-plugins-test-chaos';
const QUEUE = 'posthog-plugins';
const OUTPUT = 'celery';
const CHUNK = 2000;
const CLOSES = 3;
/** ~6 ms of CPU per event, so that a backlog takes seconds and every close hits busy workers. */
const SLOW_PLUGIN = `
function processEvent(event) {
  const until = Date.now() + 6
  while (Date.now() < until) {}
  return event
}
module.exports = { processEvent }
`;

/** messages (ready + unacked) per queue of the vhost. */
async function queueDepths(): Promise<Map<string, number>> {
  const { stdout } = await execFileAsync(
    'rabbitmqctl',
    ['-q', 'list_queues', '-p', VHOST, 'name', 'messages', '--no-table-headers'],
    { timeout: 60_000 },
  );
  return parseDepths(stdout);
}

function parseDepths(stdout: string): Map<string, number> {
  const depths = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const [name, count] = line.trim().split(/\s+/);
    if (name && count !== undefined) depths.set(name, Number(count));
  }
  return depths;
}

describe('RabbitMQ connection closes never lose an event', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-amqp-chaos-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}`, REDIS_URL: '' };
  const url = amqpUrl(VHOST);
  let tree: WorkerProcess | null = null;
  let sink: SinkWorker | null = null;
  let sent = 0;

  const produce = async (count: number): Promise<void> => {
    await sendEvents({ brokerUrl: url, count, startIndex: sent, teamId: 2, timeoutMs: 120_000 });
    sent += count;
  };
  const outputs = async (): Promise<number> => (await queueDepths()).get(OUTPUT) ?? 0;

  before(async () => {
    await resetVhost(VHOST);
    const pluginFile = path.join(tmp, 'slow.js');
    writeFileSync(pluginFile, SLOW_PLUGIN);
    await cli(['install', pluginFile, '--team', '2'], env);
    tree = await startWorker(
      [
        '--broker',
        url,
        '--workers',
        '2',
        '--batch-size',
        '20',
        '--health-file',
        path.join(tmp, 'health.json'),
        '--log-level',
        'info',
      ],
      env,
    );
  });

  after(async () => {
    await tree?.kill().catch(() => undefined);
    await sink?.stop(5_000);
    await deleteVhost(VHOST);
    rmSync(tmp, { recursive: true, force: true });
  });

  test(`${CLOSES} closes of every connection on the vhost while the backlog drains; then lost = 0`, async (t) => {
    for (let i = 0; i < CLOSES; i++) {
      // At once when the producer is done: the workers are still on its backlog (rabbitmqctl is too slow to watch).
      await produce(CHUNK);
      await execFileAsync(
        'rabbitmqctl',
        ['-q', 'close_all_connections', '--vhost', VHOST, 'posthog-plugins chaos test'],
        { timeout: 60_000 },
      );
      const queued = (await queueDepths()).get(QUEUE) ?? 0;
      await waitUntil(
        async () => {
          const d = await queueDepths();
          return (d.get(QUEUE) ?? 0) === 0 && (d.get(OUTPUT) ?? 0) >= sent;
        },
        180_000,
        `close ${i + 1}: every input processed and acked`,
        1_000,
      );
      t.diagnostic(`close ${i + 1}: ${queued} message(s) in the input queue right after it; drained afterwards`);
    }
    assert.equal(await tree!.stop(60_000), 0, 'clean stop');
    tree = null;
    sink = await startSinkWorker({ brokerUrl: url });
    await sink.waitFor(sent, 300_000);
    await waitUntil(async () => (await outputs()) === 0, 120_000, 'the sink drained celery', 1_000);
    t.diagnostic(assertNothingLost(sink, sent));
  });
});

/**
 * Broker restarts: a RabbitMQ node of the test's own (the machine's is shared by every test file) is restarted
 * (`stop_app`, a few seconds down, `start_app`) while the tree drains a backlog from Python Celery. The queues are
 * durable and the messages persistent, so the backlog survives; the workers reconnect, declare again and go on.
 * At the end a Python Celery worker ingests every output: lost = 0, duplicates reported.
 */
describe('RabbitMQ restarts never lose an event', () => {
  const RESTARTS = 2;
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-amqp-restart-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}`, REDIS_URL: '' };
  let rabbit: PrivateRabbit;
  let tree: WorkerProcess | null = null;
  let sink: SinkWorker | null = null;
  let sent = 0;

  const depths = async (): Promise<Map<string, number>> =>
    parseDepths(await rabbit.ctl('list_queues', '-p', '/', 'name', 'messages', '--no-table-headers'));

  before(async () => {
    rabbit = await startPrivateRabbit();
    const pluginFile = path.join(tmp, 'slow.js');
    writeFileSync(pluginFile, SLOW_PLUGIN);
    await cli(['install', pluginFile, '--team', '2'], env);
    tree = await startWorker(
      [
        '--broker',
        rabbit.url,
        '--workers',
        '2',
        '--batch-size',
        '20',
        '--health-file',
        path.join(tmp, 'health.json'),
        '--log-level',
        'info',
      ],
      env,
    );
    await waitUntil(
      () => tree!.logs().filter((l) => String(l.message ?? '').startsWith('consuming ')).length >= 2,
      60_000,
      'both workers consuming',
    );
  });

  after(async () => {
    await tree?.kill().catch(() => undefined);
    await sink?.stop(5_000);
    await rabbit?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test(`${RESTARTS} broker restarts while the backlog drains; then lost = 0`, async (t) => {
    for (let i = 0; i < RESTARTS; i++) {
      // At once when the producer is done: the workers are still on its backlog.
      await sendEvents({ brokerUrl: rabbit.url, count: CHUNK, startIndex: sent, teamId: 2, timeoutMs: 120_000 });
      sent += CHUNK;
      const queued = (await depths()).get(QUEUE) ?? 0;
      const downAt = Date.now();
      await rabbit.restart(2_000);
      const upAt = Date.now();
      await waitUntil(
        async () => {
          const d = await depths();
          return (d.get(QUEUE) ?? 0) === 0 && (d.get(OUTPUT) ?? 0) >= sent;
        },
        180_000,
        `restart ${i + 1}: every input processed and acked`,
        1_000,
      );
      t.diagnostic(
        `restart ${i + 1}: ${queued} message(s) queued when it began, broker down ${((upAt - downAt) / 1000).toFixed(1)} s, drained ${((Date.now() - upAt) / 1000).toFixed(1)} s after it was back`,
      );
    }
    assert.equal(await tree!.stop(60_000), 0, 'clean stop');
    tree = null;
    sink = await startSinkWorker({ brokerUrl: rabbit.url });
    await sink.waitFor(sent, 300_000);
    await waitUntil(async () => ((await depths()).get(OUTPUT) ?? 0) === 0, 120_000, 'the sink drained celery', 1_000);
    t.diagnostic(assertNothingLost(sink, sent));
  });
});
