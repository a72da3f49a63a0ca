import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { tempDir } from '../helpers/temp';
import {
  HEALTH_STATUS_VERSION,
  type HealthRule,
  type HealthStatus,
  type WorkerHealth,
  defaultHealthFile,
  judgeHealth,
  readHealthStatus,
  trackProgress,
  writeHealthStatus,
} from '../../src/supervisor/health';

/** The health rule of one instance, as a pure function over the supervisor's status. */
const NOW = 1_700_000_000_000;
const rule: HealthRule = { now: NOW, maxAgeMs: 30_000, stuckAfterMs: 300_000, pidAlive: () => true };

function worker(p: Partial<WorkerHealth> = {}): WorkerHealth {
  return {
    index: 0,
    pid: 200,
    ready: true,
    startedAt: NOW - 60_000,
    lastPongAt: NOW - 1_000,
    progress: null,
    lastProgressAt: NOW - 60_000,
    ...p,
  };
}

function status(p: Partial<HealthStatus> = {}): HealthStatus {
  return {
    version: HEALTH_STATUS_VERSION,
    pid: 100,
    hostname: 'h',
    queue: 'posthog-plugins',
    broker: 'redis://127.0.0.1:6379/0',
    state: 'running',
    startedAt: NOW - 60_000,
    writtenAt: NOW - 1_000,
    workers: [worker(), worker({ index: 1, pid: 201 })],
    slots: 2,
    ...p,
  };
}

describe('health rule', () => {
  test('healthy: fresh status, live pid, workers consuming and answering', () => {
    const v = judgeHealth(status(), rule);
    assert.equal(v.healthy, true, v.reason);
    assert.match(v.reason, /^supervisor pid 100: 2 of 2 worker\(s\) consuming posthog-plugins, status 1 s old$/);
  });

  test('an idle worker (nothing in hand) is healthy however long since it settled anything', () => {
    const idle = worker({ progress: { inHand: 0, settled: 5 }, lastProgressAt: NOW - 3_600_000 });
    assert.equal(judgeHealth(status({ workers: [idle] }), rule).healthy, true);
  });

  test('a worker busy within the stuck limit is healthy', () => {
    const busy = worker({ progress: { inHand: 10, settled: 5 }, lastProgressAt: NOW - 120_000 });
    const v = judgeHealth(status({ workers: [busy] }), rule);
    assert.equal(v.healthy, true, v.reason);
    assert.match(v.reason, /10 message\(s\) in hand/);
  });

  test('one worker restarting while another consumes is healthy', () => {
    assert.equal(judgeHealth(status({ workers: [worker()] }), rule).healthy, true);
  });

  const unhealthy: Array<[string, HealthStatus | null, Partial<HealthRule>, RegExp]> = [
    ['no status file', null, {}, /^no status file/],
    [
      'the supervisor is gone',
      status(),
      { pidAlive: () => false },
      /^supervisor pid 100 is gone \(its last status is 1 s old\)$/,
    ],
    [
      'the status is stale (stuck supervisor)',
      status({ writtenAt: NOW - 31_000 }),
      {},
      /^supervisor pid 100 is stuck: its status is 31 s old \(limit 30 s\)$/,
    ],
    ['stopping', status({ state: 'stopping' }), {}, /^supervisor pid 100 is stopping$/],
    [
      'no worker consuming yet',
      status({ workers: [worker({ ready: false })] }),
      {},
      /^no worker process is consuming yet \(1 of 2 starting\)$/,
    ],
    ['no worker at all', status({ workers: [] }), {}, /^no worker process is consuming yet \(0 of 2 starting\)$/],
    [
      'a worker silent for longer than the max age',
      status({ workers: [worker(), worker({ index: 1, pid: 201, lastPongAt: NOW - 1_000 - 40_000 })] }),
      {},
      /^worker 1 \(pid 201\) has not answered heartbeats for 40 s \(limit 30 s\)$/,
    ],
    [
      'a worker holding messages without settling any for longer than the stuck limit',
      status({ workers: [worker({ progress: { inHand: 3, settled: 7 }, lastProgressAt: NOW - 1_000 - 301_000 })] }),
      {},
      /^worker 0 \(pid 200\) holds 3 message\(s\) and has settled none for 301 s \(limit 300 s\)$/,
    ],
  ];
  for (const [what, s, r, reason] of unhealthy) {
    test(`unhealthy: ${what}`, () => {
      const v = judgeHealth(s, { ...rule, ...r });
      assert.equal(v.healthy, false);
      assert.match(v.reason, reason);
    });
  }

  test("the limits are the caller's: a smaller max age fails sooner", () => {
    assert.equal(judgeHealth(status({ writtenAt: NOW - 5_000 }), rule).healthy, true);
    assert.equal(judgeHealth(status({ writtenAt: NOW - 5_000 }), { ...rule, maxAgeMs: 3_000 }).healthy, false);
  });
});

describe('progress tracking', () => {
  test('settling, or having nothing in hand, is progress; holding without settling is not', () => {
    let w = { progress: null as null | { inHand: number; settled: number }, lastProgressAt: 0 };
    w = trackProgress(w, { inHand: 5, settled: 0 }, 1_000); // first report
    assert.equal(w.lastProgressAt, 1_000);
    w = trackProgress(w, { inHand: 5, settled: 0 }, 2_000); // holding, nothing settled
    assert.equal(w.lastProgressAt, 1_000);
    w = trackProgress(w, { inHand: 5, settled: 5 }, 3_000); // settled a batch
    assert.equal(w.lastProgressAt, 3_000);
    w = trackProgress(w, { inHand: 5, settled: 5 }, 4_000);
    assert.equal(w.lastProgressAt, 3_000);
    w = trackProgress(w, { inHand: 0, settled: 5 }, 9_000); // idle
    assert.equal(w.lastProgressAt, 9_000);
  });
});

describe('status file', () => {
  test('written atomically, read back; absent is null; garbage is an error naming the file', () => {
    const dir = tempDir('pp-health-');
    const file = path.join(dir, 's.health.json');
    assert.equal(readHealthStatus(file), null);
    writeHealthStatus(file, status());
    assert.deepEqual(readHealthStatus(file), status());
    assert.deepEqual(readdirSync(dir), ['s.health.json']); // no temporary file left behind
    writeFileSync(file, '{"version":99}');
    assert.throws(() => readHealthStatus(file), /s\.health\.json is not a posthog-plugins status/);
    writeFileSync(file, 'nope');
    assert.throws(() => readHealthStatus(file), /s\.health\.json is not JSON/);
  });

  test('the default path depends on broker and queue, and is stable', () => {
    const a = defaultHealthFile('redis://127.0.0.1:6379/0', 'posthog-plugins');
    assert.equal(a, defaultHealthFile('redis://127.0.0.1:6379/0', 'posthog-plugins'));
    assert.notEqual(a, defaultHealthFile('redis://127.0.0.1:6379/1', 'posthog-plugins'));
    assert.notEqual(a, defaultHealthFile('redis://127.0.0.1:6379/0', 'other'));
    assert.match(path.basename(a), /^posthog-plugins-[0-9a-f]{16}\.health\.json$/);
  });
});
