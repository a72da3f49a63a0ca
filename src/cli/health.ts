import type { Options } from 'yargs';
import { env, num } from '../config';
import { processExists } from '../process-exists';
import {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_STUCK_AFTER_MS,
  type HealthVerdict,
  defaultHealthFile,
  judgeHealth,
  readHealthStatus,
} from '../supervisor/health';

/**
 * `posthog-plugins health`: exit 0 when THIS instance is healthy, 1 when not, with one line saying why (stdout
 * when healthy, stderr when not). It reads the status file its `start` writes (same --broker and --queue, or the
 * same --health-file) and needs neither the broker nor Redis: another instance being alive never makes a stuck
 * one pass. The rule is `judgeHealth` in src/supervisor/health.ts.
 */
/** Shared by `start` (where to write) and `health` (where to read). */
export const healthFileOption = {
  'health-file': {
    type: 'string',
    describe:
      'Status file of this instance for `posthog-plugins health` (env HEALTH_FILE; default: one per broker and queue in the temporary directory)',
    default: env('HEALTH_FILE') ?? '',
  },
} satisfies Record<string, Options>;

export const healthRuleOptions = {
  'max-age-ms': {
    type: 'number',
    describe:
      'Unhealthy when the status is older than this (a stuck supervisor) or a worker has not answered heartbeats for this long, ms (env HEALTH_MAX_AGE_MS)',
    default: num('HEALTH_MAX_AGE_MS', DEFAULT_MAX_AGE_MS),
  },
  'stuck-after-ms': {
    type: 'number',
    describe:
      'Unhealthy when a worker holds messages and has settled none for this long, ms (env HEALTH_STUCK_AFTER_MS)',
    default: num('HEALTH_STUCK_AFTER_MS', DEFAULT_STUCK_AFTER_MS),
  },
} satisfies Record<string, Options>;

export function healthFileFor(file: string, broker: string, queue: string): string {
  return file !== '' ? file : defaultHealthFile(broker, queue);
}

export interface HealthArgs {
  file: string;
  maxAgeMs: number;
  stuckAfterMs: number;
}

export function runHealth(args: HealthArgs): HealthVerdict {
  let verdict: HealthVerdict;
  try {
    const status = readHealthStatus(args.file);
    verdict = judgeHealth(status, {
      now: Date.now(),
      maxAgeMs: args.maxAgeMs,
      stuckAfterMs: args.stuckAfterMs,
      pidAlive: processExists,
    });
    if (status === null) verdict = { ...verdict, reason: `${verdict.reason}; looked for ${args.file}` };
  } catch (err) {
    verdict = { healthy: false, reason: (err as Error).message };
  }
  return verdict;
}
