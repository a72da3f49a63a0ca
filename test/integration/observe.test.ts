import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { PYTHON, PYTHON_DIR, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';
import { amqpUrl, deleteVhost, resetVhost, waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * Celery's own tools see posthog-plugins as Celery workers, next to a real Python Celery 5.2 worker on the same
 * broker: `celery inspect ping|stats|active_queues`, `celery status`, `app.control.broadcast` (registered,
 * active, conf, an unknown command: the same error reply as Python's), `app.events.Receiver` (worker heartbeats,
 * task events with --task-events), and `celery control shutdown` stopping the instance cleanly.
 * Resources: a private Redis server (db 3, so the `/3.` channel prefix is exercised) and RabbitMQ vhost
 * `posthog-plugins-test-observe` (test/helpers/services.ts).
 */
const VHOST = 'posthog-plugins-test-observe';
const COUNT = 20;
const HOST = hostname();
const NODES = [`pp-observe-0@${HOST}`, `pp-observe-1@${HOST}`];
/** An event with properties.hold waits in its plugin until the test answers the plugin's fetch. */
const HOLDING_PLUGIN = (url: string): string => `
exports.processEvent = async function (event) {
  if (event.properties && event.properties.hold) await fetch('${url}')
  return event
}
`;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

async function celery(url: string, args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(PYTHON, ['-m', 'celery', '-A', 'control_app', ...args], {
    cwd: PYTHON_DIR,
    env: { ...process.env, CONTROL_BROKER_URL: url },
    timeout: 60_000,
  });
  return stdout;
}

/** `app.control.broadcast(method, reply=True)`: the list of `{node: reply}` dicts. */
async function broadcast(url: string, method: string, args: Record<string, Json> = {}): Promise<Record<string, Json>> {
  const { stdout } = await execFileAsync(PYTHON, ['control_app.py', 'broadcast', method, JSON.stringify(args)], {
    cwd: PYTHON_DIR,
    env: { ...process.env, CONTROL_BROKER_URL: url, CONTROL_TIMEOUT: '4' },
    timeout: 60_000,
  });
  return Object.assign({}, ...(JSON.parse(stdout) as Array<Record<string, Json>>));
}

interface EventReceiver {
  events: Array<Record<string, Json>>;
  stop(): Promise<void>;
}

/** `app.events.Receiver` in a Python process, every event as a JSON line. */
async function receiveEvents(url: string): Promise<EventReceiver> {
  const child: ChildProcess = spawn(PYTHON, ['control_app.py', 'events', '600'], {
    cwd: PYTHON_DIR,
    env: { ...process.env, CONTROL_BROKER_URL: url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Array<Record<string, Json>> = [];
  let pending = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout!.on('data', (c: Buffer) => {
    pending += c.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      events.push(JSON.parse(pending.slice(0, nl)) as Record<string, Json>);
      pending = pending.slice(nl + 1);
    }
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await waitUntil(
    () => events.some((e) => e.type === 'receiver-ready') || child.exitCode !== null,
    60_000,
    'event receiver ready',
  );
  if (child.exitCode !== null) throw new Error(`event receiver exited: ${stderr}`);
  return {
    events,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

for (const kind of ['redis', 'amqp'] as const) {
  describe(`Celery tools see posthog-plugins (${kind})`, () => {
    let redis: PrivateRedis | undefined;
    let url = '';
    let sink: SinkWorker;
    let sup: WorkerProcess;
    let receiver: EventReceiver;
    const tmp = mkdtempSync(path.join(tmpdir(), `pp-observe-${kind}-`));
    const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
    const held: http.ServerResponse[] = [];
    const holder = http.createServer((_req, res) => held.push(res));

    before(async () => {
      await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
      writeFileSync(
        path.join(tmp, 'hold.js'),
        HOLDING_PLUGIN(`http://127.0.0.1:${(holder.address() as AddressInfo).port}/hold`),
      );
      await cli(['migrate'], env);
      await cli(['install', path.join(tmp, 'hold.js'), '--team', '2', '--name', 'hold'], env);
      if (kind === 'redis') {
        redis = await startPrivateRedis({ appendonly: false });
        url = redis.url(3);
      } else {
        await resetVhost(VHOST);
        url = amqpUrl(VHOST);
      }
      sink = await startSinkWorker({ brokerUrl: url });
      sup = await startWorker(
        [
          '--broker',
          url,
          '--workers',
          '2',
          '--task-events',
          '--hostname',
          'pp-observe@%h',
          '--fetch-allow',
          '127.0.0.1',
        ],
        env,
      );
      await waitUntil(
        () => sup.logs().filter((l) => /^remote control: node /.test(String(l.message))).length >= 2,
        90_000,
        'both nodes listening',
      );
      receiver = await receiveEvents(url);
    });

    after(async () => {
      for (const res of held.splice(0)) res.end('ok');
      holder.close();
      await receiver?.stop();
      await sup?.stop();
      await sink?.stop();
      await redis?.stop();
      if (kind === 'amqp') await deleteVhost(VHOST);
      rmSync(tmp, { recursive: true, force: true });
    });

    test('celery inspect ping and celery status list both worker processes next to the Python worker', async () => {
      const pong = JSON.parse(await celery(url, ['inspect', 'ping', '--json', '--timeout', '5'])) as Record<
        string,
        Json
      >;
      for (const n of NODES) assert.deepEqual(pong[n], { ok: 'pong' }, `ping reply of ${n}: ${JSON.stringify(pong)}`);
      assert.equal(Object.keys(pong).length, 3, `our two nodes and the Python sink worker: ${JSON.stringify(pong)}`);
      const status = await celery(url, ['status', '--timeout', '5']);
      for (const n of NODES) assert.match(status, new RegExp(`${n.replace(/\./g, '\\.')}: OK`));
      assert.match(status, /3 nodes online/);
    });

    test("celery inspect stats and active_queues answer in Celery's shape", async () => {
      const stats = JSON.parse(await celery(url, ['inspect', 'stats', '--json', '--timeout', '5'])) as Record<
        string,
        Record<string, Json>
      >;
      const pids = new Set<number>();
      for (const n of NODES) {
        const s = stats[n]!;
        assert.ok(s, `stats of ${n}`);
        assert.equal(typeof s.pid, 'number');
        pids.add(s.pid as number);
        assert.equal((s.pool as Record<string, Json>)['max-concurrency'], 1);
        assert.equal((s.broker as Record<string, Json>).transport, kind);
        assert.equal(typeof s.uptime, 'number');
      }
      assert.equal(pids.size, 2, 'two processes');
      const queues = JSON.parse(await celery(url, ['inspect', 'active_queues', '--json', '--timeout', '5'])) as Record<
        string,
        Array<Record<string, Json>>
      >;
      for (const n of NODES)
        assert.deepEqual(
          queues[n]!.map((q) => q.name),
          ['posthog-plugins'],
        );
      const sinkNode = Object.keys(queues).find((k) => !NODES.includes(k))!;
      assert.deepEqual(
        queues[sinkNode]!.map((q) => q.name),
        ['celery'],
      );
      // Same keys as kombu's Queue.as_dict from the real Python worker.
      assert.deepEqual(Object.keys(queues[NODES[0]!]![0]!).sort(), Object.keys(queues[sinkNode]![0]!).sort());
    });

    test('registered, active, conf, and an unknown command gets the same error reply as from Python', async () => {
      const registered = await broadcast(url, 'registered');
      assert.deepEqual(registered[NODES[0]!], ['posthog.tasks.process_event.process_event_with_plugins']);
      const active = await broadcast(url, 'active');
      for (const n of NODES) assert.ok(Array.isArray(active[n]), `active of ${n}: ${JSON.stringify(active)}`);
      const conf = await broadcast(url, 'conf');
      assert.equal((conf[NODES[1]!] as Record<string, Json>).worker_send_task_events, true);
      const unknown = await broadcast(url, 'no_such_command');
      const sinkNode = Object.keys(unknown).find((k) => !NODES.includes(k))!;
      assert.ok(sinkNode, `the Python worker replied: ${JSON.stringify(unknown)}`);
      for (const n of NODES)
        assert.deepEqual(unknown[n], unknown[sinkNode], `${n} answers like Python: ${JSON.stringify(unknown)}`);
    });

    test('inspect active shows a task while its plugin is at work', async () => {
      const [task] = await sendEvents({
        brokerUrl: url,
        events: [
          { event: 'held', properties: { hold: true, distinct_id: 'h' }, uuid: '0190aaaa-0000-7000-8000-000000000001' },
        ],
      });
      await waitUntil(() => held.length === 1, 60_000, 'the plugin waiting on its fetch');
      const active = await broadcast(url, 'active');
      const running: Array<Record<string, Json>> = NODES.flatMap((n) =>
        (active[n] as Array<Record<string, Json>>).map((r) => ({ ...r, node: n })),
      );
      assert.equal(running.length, 1, JSON.stringify(active));
      const r = running[0]!;
      assert.equal(r.id, task!.id);
      assert.equal(r.name, 'posthog.tasks.process_event.process_event_with_plugins');
      assert.equal(r.hostname, r.node);
      assert.equal(r.acknowledged, false);
      assert.equal(typeof r.worker_pid, 'number');
      assert.equal(typeof r.time_start, 'number');
      assert.match(String(r.args), /'held'/);
      held.splice(0).forEach((res) => res.end('ok'));
      await sink.waitFor(1, 60_000);
      await waitUntil(
        async () => {
          const now = await broadcast(url, 'active');
          return NODES.every((n) => (now[n] as Json[]).length === 0);
        },
        30_000,
        'nothing active any more',
      );
    });

    test('app.events.Receiver sees worker heartbeats and, with --task-events, every task received and succeeded', async () => {
      await waitUntil(
        () => NODES.every((n) => receiver.events.some((e) => e.type === 'worker-heartbeat' && e.hostname === n)),
        30_000,
        'heartbeats of both nodes',
      );
      const beat = receiver.events.find((e) => e.type === 'worker-heartbeat' && e.hostname === NODES[0])!;
      assert.equal(beat.sw_ident, 'posthog-plugins');
      assert.equal(beat.freq, 2);
      assert.equal(typeof beat.clock, 'number');
      assert.equal(typeof beat.utcoffset, 'number');
      assert.equal((beat.loadavg as number[]).length, 3);

      const sent = await sendEvents({ brokerUrl: url, count: COUNT });
      await sink.waitFor(COUNT + 1, 90_000); // and the held one of the test before
      const ids = new Set(sent.map((t) => t.id));
      const of = (type: string): Set<string> =>
        new Set(receiver.events.filter((e) => e.type === type && ids.has(String(e.uuid))).map((e) => String(e.uuid)));
      await waitUntil(() => of('task-succeeded').size === COUNT, 30_000, 'task-succeeded for every task sent');
      assert.equal(of('task-received').size, COUNT);
      assert.equal(of('task-started').size, COUNT);
      const ok = receiver.events.find((e) => e.type === 'task-succeeded' && ids.has(String(e.uuid)))!;
      assert.ok(NODES.includes(String(ok.hostname)));
      assert.equal(typeof ok.runtime, 'number');
      const received = receiver.events.find((e) => e.type === 'task-received' && ids.has(String(e.uuid)))!;
      assert.equal(received.name, 'posthog.tasks.process_event.process_event_with_plugins');
      // Processed counts reach the heartbeats.
      await waitUntil(
        () =>
          NODES.reduce(
            (sum, n) =>
              sum +
              Math.max(
                0,
                ...receiver.events
                  .filter((e) => e.type === 'worker-heartbeat' && e.hostname === n)
                  .map((e) => e.processed as number),
              ),
            0,
          ) >= COUNT,
        30_000,
        'heartbeats counting the processed tasks',
      );
    });

    test('celery control shutdown stops the instance cleanly; both nodes say worker-offline', async () => {
      // Celery's shutdown never replies (the worker raises SystemExit), so the CLI ends with "No nodes replied",
      // exit 69, for a Python worker too.
      await assert.rejects(celery(url, ['control', 'shutdown', '-d', NODES[0]!, '--timeout', '2']), /No nodes replied/);
      await waitUntil(() => sup.child.exitCode !== null, 60_000, 'start to exit');
      assert.equal(sup.child.exitCode, 0);
      await waitUntil(
        () => NODES.every((n) => receiver.events.some((e) => e.type === 'worker-offline' && e.hostname === n)),
        30_000,
        'worker-offline of both nodes',
      );
    });
  });
}
