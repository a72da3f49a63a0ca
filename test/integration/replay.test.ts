import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inflateSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { MESSAGES_DIR, type MessageCase, messagesIndex } from '../helpers/fixtures';
import { type SinkRecord, type SinkWorker, startSinkWorker } from '../helpers/python';
import { flushRedisDb, redisUrl } from '../helpers/services';
import { BIN, REPO, cli } from '../helpers/worker';

/**
 * `posthog-plugins replay` as an operator runs it: captured Celery 5.2 messages in, process_event envelopes out,
 * with plugins installed through the CLI in a SQLite database. The output must be stable to the byte, contain
 * exactly the surviving events with the kwargs the plugins produced, and be real Celery: a Python Celery 5.2
 * worker (Redis db 5) executes every line after it is LPUSHed into `celery`.
 */
const REDIS_DB = 5;
const TEAM = 2; // add-property (plugin_added=yes), then drop-events (default $drop_me: drops none of the fixtures)
const DROP_TEAM = 3; // drop-events configured to drop $pageview: multi-team's two team-3 events vanish
// team 4 (multi-team) has no plugins: passes through unchanged.

const CASES: MessageCase[] = [
  'v2',
  'v1',
  'priority-0',
  'priority-5',
  'priority-9',
  'compressed',
  'unicode',
  'nulls',
  'multi-team',
  'pickle',
  'unknown-task',
  'expired',
];
const fixture = (c: MessageCase): string => path.join(MESSAGES_DIR, `${c}.jsonl`);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  logs: Array<Record<string, unknown>>;
}

/** The CLI with its exit status (cli() throws on non-zero), JSON logs parsed from stderr. */
function replay(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      BIN,
      ['replay', '--log-format', 'json', ...args],
      { cwd: REPO, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? null) : 0;
        const logs = stderr
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => {
            try {
              return JSON.parse(l) as Record<string, unknown>;
            } catch {
              return { level: 'raw', message: l };
            }
          });
        resolve({ code: typeof code === 'number' ? code : null, stdout, stderr, logs });
      },
    );
  });
}

function summaryOf(run: Run): Record<string, number> {
  const line = run.logs.find((l) => typeof l.message === 'string' && l.message.startsWith('replayed '));
  assert.ok(line, `no summary line in stderr:\n${run.stderr}`);
  const { read, published, dropped, expired, rejected } = line as Record<string, number>;
  return { read, published, dropped, expired, rejected };
}

function rejections(run: Run): string[] {
  return run.logs
    .filter((l) => l.level === 'warn' && /rejected: /.test(String(l.message)))
    .map((l) => String(l.message));
}

type Obj = Record<string, unknown>;

/** One captured input, decoded here independently of protocol/ (base64, zlib, v1 or v2 body). */
interface Input {
  id: string;
  task: string;
  args: unknown[];
}
function readInputs(c: MessageCase): Input[] {
  return readFileSync(fixture(c), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const env = JSON.parse(line) as { body: string; headers: Obj; 'content-type': string };
      let bytes = Buffer.from(env.body, 'base64');
      if (env.headers['compression']) bytes = inflateSync(bytes);
      if (env['content-type'] !== 'application/json')
        return { id: String(env.headers['id']), task: String(env.headers['task']), args: [] };
      const body = JSON.parse(bytes.toString('utf8')) as unknown;
      if (Array.isArray(body))
        return { id: String(env.headers['id']), task: String(env.headers['task']), args: body[0] as unknown[] };
      const v1 = body as { id: string; task: string; args: unknown[] };
      return { id: v1.id, task: v1.task, args: v1.args };
    });
}

/** What process_event must receive for an input: the seven values by name, data changed by the team's plugins. */
function expectedKwargs(args: unknown[]): Obj {
  const [distinct_id, ip, site_url, data, team_id, now, sent_at] = args as [
    string,
    string | null,
    string,
    Obj,
    number,
    string,
    string | null,
  ];
  const out = structuredClone(data);
  if (team_id === TEAM) (out['properties'] as Obj)['plugin_added'] = 'yes';
  return { distinct_id, ip, site_url, data: out, team_id, now, sent_at };
}

function survives(args: unknown[]): boolean {
  return args[4] !== DROP_TEAM;
}

/** One output line, decoded independently: envelope, base64 body, [args, kwargs, embed]. */
interface Output {
  envelope: {
    headers: Obj;
    properties: Obj & { delivery_info: Obj };
    'content-type': string;
    'content-encoding': string;
  };
  args: unknown[];
  kwargs: Obj;
  embed: unknown;
}
function readOutput(text: string): Output[] {
  assert.ok(text === '' || text.endsWith('\n'), 'output ends with a newline');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const envelope = JSON.parse(line) as Output['envelope'] & { body: string };
      const [args, kwargs, embed] = JSON.parse(Buffer.from(envelope.body, 'base64').toString('utf8')) as [
        unknown[],
        Obj,
        unknown,
      ];
      return { envelope, args, kwargs, embed };
    });
}

function receivedKwargs(r: SinkRecord): Obj {
  return {
    distinct_id: r.distinct_id,
    ip: r.ip,
    site_url: r.site_url,
    data: r.data,
    team_id: r.team_id,
    now: r.now,
    sent_at: r.sent_at,
  };
}

describe('posthog-plugins replay', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-replay-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
  const inputs = CASES.flatMap((c) => readInputs(c).map((i) => ({ ...i, case: c })));
  const runnable = inputs.filter((i) => i.task === messagesIndex().task && i.case !== 'pickle' && i.case !== 'expired');
  const surviving = runnable.filter((i) => survives(i.args));
  let sink: SinkWorker | undefined;
  let mainOutput = '';

  before(async () => {
    await cli(['migrate'], env);
    await cli(
      [
        'install',
        'fixtures/plugins/add-property',
        '--team',
        String(TEAM),
        '--config',
        '{"propertyName":"plugin_added","propertyValue":"yes"}',
      ],
      env,
    );
    await cli(['install', 'fixtures/plugins/drop-events', '--team', String(TEAM)], env);
    await cli(
      [
        'install',
        'fixtures/plugins/drop-events',
        '--team',
        String(DROP_TEAM),
        '--config',
        '{"eventToDrop":"$pageview"}',
      ],
      env,
    );
    const configs = JSON.parse((await cli(['list', '--json'], env)).stdout) as Array<{
      teamId: number;
      pluginName: string;
      enabled: boolean;
    }>;
    assert.deepEqual(
      configs.map((c) => [c.teamId, c.pluginName, c.enabled]),
      [
        [TEAM, 'Add property', true],
        [TEAM, 'Drop events', true],
        [DROP_TEAM, 'Drop events', true],
      ],
    );
  });

  after(async () => {
    await sink?.stop();
    await flushRedisDb(REDIS_DB);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('the fixtures replay to one process_event per surviving event, byte-identical on every run', async () => {
    const files = CASES.map(fixture);
    const outA = path.join(tmp, 'a.jsonl');
    const outB = path.join(tmp, 'b.jsonl');
    const runA = await replay([...files, '--out', outA], env);
    assert.equal(runA.code, 0, runA.stderr);
    assert.ok(
      runA.logs.some((l) => l.message === 'plugins loaded: 3 config(s) for 2 team(s), 0 failed'),
      runA.stderr,
    );
    const runB = await replay([...files, '--out', outB, '--batch-size', '1'], env);
    assert.equal(runB.code, 0, runB.stderr);
    const runC = await replay(files, env); // to stdout
    assert.equal(runC.code, 0, runC.stderr);

    mainOutput = readFileSync(outA, 'utf8');
    assert.ok(
      readFileSync(outA).equals(readFileSync(outB)),
      'same bytes on a second run (and whatever the batch size)',
    );
    assert.equal(runC.stdout, mainOutput, 'stdout carries the same bytes as --out');
    assert.equal(runA.stdout, '', 'nothing but results on stdout');

    assert.deepEqual(summaryOf(runA), {
      read: inputs.length,
      published: surviving.length,
      dropped: runnable.length - surviving.length,
      expired: 1,
      rejected: 2,
    });
    assert.equal(runnable.length - surviving.length, 2, 'the two team-3 events of multi-team are dropped');

    const outputs = readOutput(mainOutput);
    assert.equal(outputs.length, surviving.length, 'one line per surviving event');
    const ids = new Set<string>();
    outputs.forEach((o, i) => {
      const input = surviving[i]!; // input order is kept
      const where = `output line ${i + 1} (${input.case} ${input.id})`;
      const h = o.envelope.headers;
      assert.equal(h['task'], 'posthog.tasks.process_event.process_event', where);
      assert.equal(h['parent_id'], input.id, `${where}: parent is the input task`);
      assert.equal(h['root_id'], input.id, `${where}: root is the input task`);
      assert.equal(h['eta'], null, where);
      assert.equal(h['expires'], null, where);
      assert.equal(h['origin'], 'posthog-plugins-replay', where);
      assert.match(
        String(h['id']),
        /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
        `${where}: derived (uuid5) id`,
      );
      assert.notEqual(h['id'], input.id, `${where}: a new task id`);
      ids.add(String(h['id']));
      assert.equal(o.envelope['content-type'], 'application/json');
      assert.equal(o.envelope['content-encoding'], 'utf-8');
      assert.deepEqual(o.envelope.properties.delivery_info, { exchange: '', routing_key: 'celery' }, where);
      assert.equal(o.envelope.properties['priority'], 0, where);
      assert.equal(o.envelope.properties['body_encoding'], 'base64', where);
      assert.equal(o.envelope.properties['correlation_id'], h['id'], where);
      assert.deepEqual(o.args, [], `${where}: everything by keyword`);
      assert.deepEqual(o.kwargs, expectedKwargs(input.args), `${where}: kwargs`);
      assert.deepEqual(o.embed, { callbacks: null, errbacks: null, chain: null, chord: null });
    });
    assert.equal(ids.size, outputs.length, 'task ids are unique');

    const reasons = rejections(runA);
    assert.equal(reasons.length, 2, reasons.join('\n'));
    assert.ok(
      reasons.some(
        (r) =>
          r.startsWith(`line ${fixture('pickle')}:1: rejected: `) &&
          /pickle/.test(r) &&
          /application\/x-python-serialize/.test(r),
      ),
      reasons.join('\n'),
    );
    assert.ok(
      reasons.some(
        (r) =>
          r.startsWith(`line ${fixture('unknown-task')}:1: rejected: `) &&
          /unknown task "posthog\.tasks\.process_event\.no_such_task"/.test(r),
      ),
      reasons.join('\n'),
    );
  });

  test('unreadable lines are reported with file:line and reason; blank lines are skipped', async () => {
    const bad = path.join(tmp, 'bad.jsonl');
    const v2 = readFileSync(fixture('v2'), 'utf8').split('\n')[0]!;
    writeFileSync(bad, `${v2}\n\nthis is not an envelope\n{"body": "x"}\n`);
    const run = await replay([bad], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(readOutput(run.stdout).length, 1);
    const reasons = rejections(run);
    assert.equal(reasons.length, 2, reasons.join('\n'));
    assert.match(
      reasons[0]!,
      new RegExp(`^line ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: rejected: envelope is not valid JSON`),
    );
    assert.match(reasons[1]!, /:4: rejected: envelope has no properties object/);
    assert.deepEqual(summaryOf(run), { read: 3, published: 1, dropped: 0, expired: 0, rejected: 2 });
  });

  test('--strict exits 1 when something was rejected, and only then', async () => {
    const out = path.join(tmp, 'strict.jsonl');
    const rejected = await replay(['--strict', fixture('v2'), fixture('pickle'), '--out', out], env);
    assert.equal(rejected.code, 1, rejected.stderr);
    assert.equal(readOutput(readFileSync(out, 'utf8')).length, 3, 'the good messages are still written');
    const unknown = await replay(['--strict', fixture('unknown-task')], env);
    assert.equal(unknown.code, 1, unknown.stderr);
    const clean = await replay(['--strict', fixture('v2'), fixture('expired')], env);
    assert.equal(clean.code, 0, `an expired task is not a rejection:\n${clean.stderr}`);
    assert.equal(readOutput(clean.stdout).length, 3);
    const noStrict = await replay([fixture('pickle')], env);
    assert.equal(noStrict.code, 0, noStrict.stderr);
  });

  test('an --out that cannot be written is an error exit with a clear message, not a crash', async () => {
    const out = path.join(tmp, 'missing-dir', 'out.jsonl');
    const run = await replay([fixture('v2'), '--out', out], env);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /cannot write .*missing-dir\/out\.jsonl/);
    assert.doesNotMatch(run.stderr, /Unhandled 'error' event/);
    assert.equal(run.stdout, '');
  });

  test('--now decides what has expired (eta never delays a replay)', async () => {
    // expired.jsonl: expires 2020-01-01T00:00:00Z. eta-expires.jsonl: [0] eta/expires = capture time + 60/300 s,
    // [1] eta 2030-01-01T00:00Z, expires 2030-01-01T01:00Z.
    const expired = await replay([fixture('expired')], env);
    assert.equal(readOutput(expired.stdout).length, 0, 'expired by default (now)');
    assert.equal(summaryOf(expired).expired, 1);
    const before2020 = await replay([fixture('expired'), '--now', '2019-12-31T23:59:59Z'], env);
    const [revived] = readOutput(before2020.stdout);
    assert.ok(revived, before2020.stderr);
    assert.equal(revived.kwargs['distinct_id'], 'user-60');
    assert.deepEqual(summaryOf(before2020), { read: 1, published: 1, dropped: 0, expired: 0, rejected: 0 });
    const atExpiry = await replay([fixture('expired'), '--now', '2020-01-01T00:00:00Z'], env);
    assert.equal(summaryOf(atExpiry).published, 1, 'expired only when now > expires (Celery)');

    const at2020 = await replay([fixture('eta-expires'), '--now', messagesIndex().now], env);
    assert.deepEqual(
      readOutput(at2020.stdout).map((o) => o.kwargs['distinct_id']),
      ['user-50', 'user-51'],
      'future etas run at once',
    );
    const at2030 = await replay([fixture('eta-expires'), '--now', '2030-01-01T00:30:00Z'], env);
    assert.deepEqual(
      readOutput(at2030.stdout).map((o) => o.kwargs['distinct_id']),
      ['user-51'],
    );
    assert.deepEqual(summaryOf(at2030), { read: 2, published: 1, dropped: 0, expired: 1, rejected: 0 });
    const after2030 = await replay([fixture('eta-expires'), '--now', '2030-01-01T01:00:00.001Z'], env);
    assert.equal(summaryOf(after2030).expired, 2);
    // The same input at the same --now gives the same bytes.
    const again = await replay([fixture('eta-expires'), '--now', messagesIndex().now], env);
    assert.equal(again.stdout, at2020.stdout);

    const invalid = await replay([fixture('expired'), '--now', 'yesterday'], env);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /--now must be an ISO-8601 date/);
  });

  test('the output is real Celery: a Python Celery 5.2 worker executes every line with the expected kwargs', async () => {
    assert.ok(mainOutput !== '', 'needs the output of the first test');
    await flushRedisDb(REDIS_DB);
    sink = await startSinkWorker({ brokerUrl: redisUrl(REDIS_DB), queue: 'celery' });
    const lines = mainOutput.split('\n').filter((l) => l !== '');
    const redis = new Redis(redisUrl(REDIS_DB));
    try {
      await redis.lpush('celery', ...lines);
    } finally {
      redis.disconnect();
    }
    const records = await sink.waitFor(lines.length, 30_000);
    const outputs = readOutput(mainOutput);
    const byTaskId = new Map(records.map((r) => [r.task_id, r]));
    outputs.forEach((o, i) => {
      const input = surviving[i]!;
      const got = byTaskId.get(String(o.envelope.headers['id']));
      assert.ok(got, `line ${i + 1} (${input.case} ${input.id}) was not executed`);
      assert.equal(got.task, 'posthog.tasks.process_event.process_event');
      assert.equal(got.positional, 0);
      assert.deepEqual(got.keywords, ['data', 'distinct_id', 'ip', 'now', 'sent_at', 'site_url', 'team_id']);
      assert.deepEqual(receivedKwargs(got), expectedKwargs(input.args), `kwargs Python received for line ${i + 1}`);
      assert.equal(got.routing_key, 'celery');
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(sink.records().length, lines.length, 'each line executed once');
    assert.deepEqual(sink.problems(), []);
  });
});
