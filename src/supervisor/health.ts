import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { WorkerProgress } from '../ipc/messages';

/**
 * Health of ONE `posthog-plugins start` instance. PostHog's healthcheck looked at a global Redis key, so a dead
 * instance passed while any other instance was alive (B12). Here the supervisor writes what it knows about itself
 * and its workers to a small status file on every heartbeat tick (atomically: write + rename), and
 * `posthog-plugins health` judges that file with `judgeHealth` — a pure function, so the rule is tested alone.
 *
 * The rule, in order (the first failure is the reason):
 * 1. the status file exists and parses;
 * 2. the supervisor that wrote it is still running (its pid exists);
 * 3. the file is fresh: written less than `maxAgeMs` ago — a stuck or stopped supervisor stops writing;
 * 4. the instance is not stopping;
 * 5. at least one worker process is consuming (ready) — none during startup or when every worker is restarting;
 * 6. every live worker answered a heartbeat within `maxAgeMs` — a worker whose main thread is stuck does not;
 * 7. no worker holds messages without settling any for `stuckAfterMs` (only when the worker reports its
 *    progress) — an idle worker with nothing in hand is healthy however long it waits.
 */
export const HEALTH_STATUS_VERSION = 1;
/** Defaults of `health --max-age-ms` and `--stuck-after-ms` (the ping key uses the same rule). */
export const DEFAULT_MAX_AGE_MS = 30_000;
/** A batch may legitimately take a while: each plugin call of a chain has up to --wall-timeout-ms (30 s). */
export const DEFAULT_STUCK_AFTER_MS = 300_000;

export interface WorkerHealth {
  index: number;
  pid: number;
  /** Consuming (it said "ready"). */
  ready: boolean;
  startedAt: number;
  /** Last heartbeat answer (ms since the epoch); the start time before the first. */
  lastPongAt: number;
  /** Progress as last reported with a heartbeat, null when the worker does not report it. */
  progress: WorkerProgress | null;
  /** Last time `settled` grew, or the worker had nothing in hand (ms since the epoch). */
  lastProgressAt: number;
}

export interface HealthStatus {
  version: number;
  pid: number;
  hostname: string;
  queue: string;
  /** Broker URL without credentials. */
  broker: string;
  state: 'running' | 'stopping';
  startedAt: number;
  writtenAt: number;
  /** Worker slots with a live process; a slot waiting for its restart delay is absent. */
  workers: WorkerHealth[];
  /** Configured worker count. */
  slots: number;
}

export interface HealthRule {
  now: number;
  maxAgeMs: number;
  stuckAfterMs: number;
  pidAlive: (pid: number) => boolean;
}

export interface HealthVerdict {
  healthy: boolean;
  reason: string;
}

export function judgeHealth(status: HealthStatus | null, rule: HealthRule): HealthVerdict {
  if (status === null)
    return {
      healthy: false,
      reason:
        'no status file: `posthog-plugins start` is not running with this broker and queue (or uses another --health-file)',
    };
  const age = rule.now - status.writtenAt;
  const sup = `supervisor pid ${status.pid}`;
  if (!rule.pidAlive(status.pid))
    return { healthy: false, reason: `${sup} is gone (its last status is ${secs(age)} old)` };
  if (age > rule.maxAgeMs)
    return { healthy: false, reason: `${sup} is stuck: its status is ${secs(age)} old (limit ${secs(rule.maxAgeMs)})` };
  if (status.state === 'stopping') return { healthy: false, reason: `${sup} is stopping` };
  const ready = status.workers.filter((w) => w.ready);
  if (ready.length === 0)
    return {
      healthy: false,
      reason: `no worker process is consuming yet (${status.workers.length} of ${status.slots} starting)`,
    };
  for (const w of status.workers) {
    const silent = status.writtenAt - w.lastPongAt;
    const name = `worker ${w.index} (pid ${w.pid})`;
    if (silent > rule.maxAgeMs)
      return {
        healthy: false,
        reason: `${name} has not answered heartbeats for ${secs(silent)} (limit ${secs(rule.maxAgeMs)})`,
      };
    if (w.progress && w.progress.inHand > 0) {
      const still = status.writtenAt - w.lastProgressAt;
      if (still > rule.stuckAfterMs) {
        return {
          healthy: false,
          reason: `${name} holds ${w.progress.inHand} message(s) and has settled none for ${secs(still)} (limit ${secs(rule.stuckAfterMs)})`,
        };
      }
    }
  }
  const busy = ready.reduce((n, w) => n + (w.progress?.inHand ?? 0), 0);
  return {
    healthy: true,
    reason: `${sup}: ${ready.length} of ${status.slots} worker(s) consuming ${status.queue}${busy > 0 ? `, ${busy} message(s) in hand` : ''}, status ${secs(age)} old`,
  };
}

/**
 * The supervisor's bookkeeping for rule 7: progress is a growing `settled` count, and having nothing in hand
 * counts as progress (an idle worker is never stuck).
 */
export function trackProgress(
  prev: { progress: WorkerProgress | null; lastProgressAt: number },
  report: WorkerProgress,
  now: number,
): { progress: WorkerProgress; lastProgressAt: number } {
  const moved = prev.progress === null || report.settled > prev.progress.settled || report.inHand === 0;
  return { progress: report, lastProgressAt: moved ? now : prev.lastProgressAt };
}

/**
 * Default status file: one per broker + queue on this machine, so `health` finds it from the same settings
 * `start` had. Several instances on one machine with the same broker and queue need their own --health-file.
 */
export function defaultHealthFile(broker: string, queue: string): string {
  const hash = createHash('sha256').update(`${broker}\n${queue}`).digest('hex').slice(0, 16);
  return path.join(tmpdir(), `posthog-plugins-${hash}.health.json`);
}

/** Write atomically: a reader sees the previous status or the new one, never half a file. */
export function writeHealthStatus(file: string, status: HealthStatus): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(status));
  fs.renameSync(tmp, file);
}

/** null when there is no file; throws with the path when it exists but cannot be read as a status. */
export function readHealthStatus(file: string): HealthStatus | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read health status ${file}: ${(err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`health status ${file} is not JSON: ${(err as Error).message}`);
  }
  const s = v as Partial<HealthStatus>;
  if (
    s?.version !== HEALTH_STATUS_VERSION ||
    typeof s.pid !== 'number' ||
    typeof s.writtenAt !== 'number' ||
    !Array.isArray(s.workers)
  ) {
    throw new Error(`health status ${file} is not a posthog-plugins status (version ${String(s?.version)})`);
  }
  return s as HealthStatus;
}

function secs(ms: number): string {
  return `${Math.max(0, Math.round(ms / 100) / 10)} s`;
}
