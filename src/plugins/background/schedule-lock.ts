import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { luaScript } from '../../redis/lua';

/**
 * runEveryMinute/Hour/Day run once per period across every worker process on every machine, and a config's task
 * is skipped while its previous run is still going (PostHog ran them on the one instance holding a Redlock and
 * debounced per config; docs/posthog-plugin-api.md#scheduled-tasks). Here every worker may try, and Redis picks one:
 *
 *   period key  `<prefix>:<configId>:<task>:period:<ISO period start>`  set once per period (NX), expiring a bit
 *               after the period ends, so a worker whose clock or timer is late cannot run the period again;
 *   running key `<prefix>:<configId>:<task>:running`  held by the run (NX, PX maxRunMs) and deleted at the end
 *               only by its holder (compare-and-delete), so a run that outlived maxRunMs cannot free its
 *               successor's key.
 *
 * Both are checked and set in one Lua call: no state where one is taken and the other not. A period skipped
 * because the previous run is still going is not marked done: if that run ends while the period is current, a
 * later attempt in the same period may still run it (at most once per period either way).
 */

export type ScheduledTask = 'runEveryMinute' | 'runEveryHour' | 'runEveryDay';

export type TryStartResult =
  { ok: true; release(): Promise<void> } | { ok: false; reason: 'done-this-period' | 'still-running' };

export interface ScheduleLockOptions {
  /** This worker's instance id; part of the running key's value (who holds it, for operators). */
  owner: string;
  /** Key prefix, default `posthog-plugins:schedule`. */
  prefix?: string;
}

const PERIOD_MS: Record<ScheduledTask, number> = {
  runEveryMinute: 60_000,
  runEveryHour: 3_600_000,
  runEveryDay: 86_400_000,
};

/** How long a period key outlives its period: covers clock skew between machines and late timers. */
function periodKeyTtlMs(task: ScheduledTask): number {
  const period = PERIOD_MS[task];
  return period + Math.min(period, 10 * 60_000);
}

/** The UTC minute, hour or day `now` falls in. */
export function periodStart(task: ScheduledTask, now: Date): Date {
  const period = PERIOD_MS[task];
  if (period === undefined) throw new Error(`periodStart: unknown scheduled task ${JSON.stringify(task)}`);
  const t = now.getTime();
  if (!Number.isFinite(t)) throw new Error(`periodStart(${task}): invalid date`);
  // Unix time has no leap seconds, so UTC minutes/hours/days are exact multiples of the epoch
  return new Date(t - (((t % period) + period) % period));
}

/** Claims a period and the running key in one step (lua/schedule-try-start.lua: 0 started, 1 done, 2 running). */
const TRY_START = luaScript('plugins/background/lua', 'schedule-try-start');
/** Deletes the running key only while this run holds it (lua/schedule-release.lua). */
const RELEASE = luaScript('plugins/background/lua', 'schedule-release');

export class ScheduleLock {
  private readonly owner: string;
  private readonly prefix: string;

  constructor(
    private readonly redis: Redis,
    opts: ScheduleLockOptions,
  ) {
    if (typeof opts.owner !== 'string' || opts.owner === '')
      throw new Error('ScheduleLock: owner must be a non-empty string');
    this.owner = opts.owner;
    this.prefix = opts.prefix ?? 'posthog-plugins:schedule';
  }

  /**
   * Claim `task` of plugin config `configId` for the period starting at `periodStart` (as periodStart() gives it).
   * On `ok`, run the task and call release() when it ends (also when it throws); a run that never releases frees
   * the config after maxRunMs. Redis errors are thrown (the caller skips this period and logs).
   */
  async tryStart(configId: number, task: ScheduledTask, start: Date, maxRunMs: number): Promise<TryStartResult> {
    if (!Number.isSafeInteger(configId) || configId <= 0)
      throw new Error(`ScheduleLock.tryStart: invalid plugin config id ${String(configId)}`);
    if (!(task in PERIOD_MS)) throw new Error(`ScheduleLock.tryStart: unknown scheduled task ${JSON.stringify(task)}`);
    if (!(start instanceof Date) || periodStart(task, start).getTime() !== start.getTime()) {
      throw new Error(
        `ScheduleLock.tryStart(${configId}, ${task}): ${String(start)} is not the start of a period (use periodStart())`,
      );
    }
    if (!Number.isSafeInteger(maxRunMs) || maxRunMs <= 0)
      throw new Error(
        `ScheduleLock.tryStart(${configId}, ${task}): maxRunMs must be a positive integer, got ${String(maxRunMs)}`,
      );

    const base = `${this.prefix}:${configId}:${task}`;
    const periodKey = `${base}:period:${start.toISOString()}`;
    const runningKey = `${base}:running`;
    // unique per run: the same owner's late release must not free its own next run either
    const token = `${this.owner}:${randomUUID()}`;
    let code: unknown;
    try {
      code = await this.redis.eval(
        TRY_START,
        2,
        periodKey,
        runningKey,
        token,
        String(maxRunMs),
        String(periodKeyTtlMs(task)),
      );
    } catch (err) {
      throw new Error(`schedule lock for ${task} of plugin config ${configId} failed: ${(err as Error).message}`);
    }
    if (code === 1) return { ok: false, reason: 'done-this-period' };
    if (code === 2) return { ok: false, reason: 'still-running' };
    if (code !== 0)
      throw new Error(
        `schedule lock for ${task} of plugin config ${configId}: unexpected script reply ${JSON.stringify(code)}`,
      );

    let released: Promise<void> | undefined;
    const release = (): Promise<void> =>
      (released ??= (async () => {
        try {
          await this.redis.eval(RELEASE, 1, runningKey, token);
        } catch (err) {
          // the key still expires after maxRunMs; until then the config's next runs are skipped
          throw new Error(
            `releasing the schedule lock for ${task} of plugin config ${configId} failed: ${(err as Error).message}`,
          );
        }
      })());
    return { ok: true, release };
  }
}
