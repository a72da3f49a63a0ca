import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { type BrokerFixture, amqpFixture } from '../helpers/brokers';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { PYTHON, PYTHON_DIR, type SinkWorker, startSinkWorker } from '../helpers/python';
import { deleteVhost } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * Numbers Python's json writes but JSON.parse would change (ints beyond 2^53, -0.0, 1.0, 1e+16, 1.5e-07, inf,
 * nan, …; test/python/numbers_roundtrip.py) sent by real Python Celery, through the real worker, executed by a
 * real Python Celery worker: Python must hold the same values of the same types (compared as "<type>:<repr>")
 * after the round trip, with no plugin, with a plugin that gives back a copy of the event, and with one that
 * changes a sibling property (only that property changes). A float team_id comes back a float.
 */
const NO_PLUGIN = 2;
const IDENTITY = 3;
const SIBLING = 4;
const VHOST = 'posthog-plugins-test-numbers';

type Described = Record<string, unknown>;
interface Line {
  uuid: string;
  team_id: string;
  data: Described;
}

async function roundtrip(args: string[]): Promise<Line[]> {
  const { stdout } = await execFileAsync(PYTHON, [path.join(PYTHON_DIR, 'numbers_roundtrip.py'), ...args], {
    cwd: PYTHON_DIR,
    timeout: 60_000,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
  });
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Line);
}

interface Case {
  name: string;
  setUp(): Promise<{ url: string; unsettled(): Promise<number>; close(): Promise<void> }>;
}

const CASES: Case[] = [
  {
    name: 'redis',
    async setUp() {
      const server: PrivateRedis = await startPrivateRedis({ appendonly: false });
      const redis = new Redis(server.url(0), { lazyConnect: true });
      return {
        url: server.url(0),
        async unsettled() {
          return (await redis.hvals('unacked')).filter(
            (r) => (JSON.parse(r) as [unknown, string, string])[2] === 'posthog-plugins',
          ).length;
        },
        async close() {
          redis.disconnect();
          await server.stop();
        },
      };
    },
  },
  {
    name: 'rabbitmq',
    async setUp() {
      const broker: BrokerFixture = amqpFixture(VHOST);
      await broker.reset();
      return {
        url: broker.url,
        unsettled: () => broker.unsettled('posthog-plugins'),
        async close() {
          await broker.close();
          await deleteVhost(VHOST);
        },
      };
    },
  },
];

for (const c of CASES) {
  describe(`lossless numbers, Python to Python: ${c.name}`, () => {
    let broker: Awaited<ReturnType<Case['setUp']>> | undefined;
    let sink: SinkWorker | undefined;
    let worker: WorkerProcess | undefined;
    const tmp = mkdtempSync(path.join(tmpdir(), 'pp-numbers-'));

    before(async () => {
      broker = await c.setUp();
      const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
      await cli(['migrate'], env);
      await cli(
        ['install', 'fixtures/plugins/numbers', '--team', String(IDENTITY), '--config', '{"mode":"identity"}'],
        env,
      );
      await cli(
        ['install', 'fixtures/plugins/numbers', '--team', String(SIBLING), '--config', '{"mode":"sibling"}'],
        env,
      );
      sink = await startSinkWorker({ brokerUrl: broker.url });
      worker = await startWorker(['--broker', broker.url, '--workers', '1', '--reload-channel', ''], env);
    });

    after(async () => {
      await worker?.stop();
      await sink?.stop();
      await broker?.close();
      rmSync(tmp, { recursive: true, force: true });
    });

    test('Python receives every value with the type and repr it sent, except what a plugin changed', async () => {
      const url = broker!.url;
      const sent = [
        ...(await roundtrip(['send', '--broker', url, '--team-id', String(NO_PLUGIN), '--count', '2'])),
        ...(await roundtrip(['send', '--broker', url, '--team-id', String(NO_PLUGIN), '--float-team-id'])),
        ...(await roundtrip(['send', '--broker', url, '--team-id', String(IDENTITY), '--count', '2'])),
        ...(await roundtrip(['send', '--broker', url, '--team-id', String(SIBLING), '--count', '2'])),
      ];
      await sink!.waitFor(sent.length, 120_000);
      const received = new Map((await roundtrip(['describe', sink!.outputFile])).map((l) => [l.uuid, l]));
      assert.equal(received.size, sent.length);

      for (const s of sent) {
        const got = received.get(s.uuid);
        assert.ok(got, `event ${s.uuid} never reached process_event`);
        const expected = structuredClone(s);
        if (s.team_id === `int:${SIBLING}`) {
          const props = expected.data.properties as Described;
          props.change_me = 'int:6'; // 3.0 as the plugin's JS number 3, times 2: written as JS writes 6
          props.plugin_touched = true;
        }
        assert.deepEqual(got, expected, `event of team ${s.team_id}`);
      }
      // The sent values really are the hard ones (a check of the check).
      const props = sent[0]!.data.properties as Described;
      assert.equal(props.int_2_64_plus_1, 'int:18446744073709551617');
      assert.equal(props.neg_zero, 'float:-0.0');
      assert.equal(props.one_float, 'float:1.0');
      assert.equal(props.nan, 'float:nan');
      assert.equal(sent[2]!.team_id, 'float:2.0');

      assert.deepEqual(sink!.problems(), []);
      assert.equal(await broker!.unsettled(), 0);
    });
  });
}
