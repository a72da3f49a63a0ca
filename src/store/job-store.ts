import { Knex } from 'knex';
import { databaseKind } from './database';

const T_JOB = 'posthog_plugins_job';
const NAME_MAX_CHARS = 200;

export interface JobInput {
  pluginConfigId: number;
  teamId: number;
  /** The job's name in the plugin's `jobs` export (≤ 200 characters). */
  name: string;
  payloadJson: string;
  runAt: Date;
}

export interface ClaimedJob {
  id: number;
  pluginConfigId: number;
  teamId: number;
  name: string;
  payloadJson: string;
  runAt: Date;
  /** Claims so far, this one included. */
  attempts: number;
  lockedUntil: Date;
  createdAt: Date;
}

interface JobRow {
  id: unknown;
  plugin_config_id: unknown;
  team_id: unknown;
  name: unknown;
  payload: unknown;
  run_at: unknown;
  attempts: unknown;
  locked_until: unknown;
  created_at: unknown;
}

const RETURNED = 'id, plugin_config_id, team_id, name, payload, run_at, attempts, locked_until, created_at';

function ms(what: string, d: Date): number {
  const t = d instanceof Date ? d.getTime() : NaN;
  if (!Number.isFinite(t)) throw new Error(`job store: ${what} is not a valid date: ${String(d)}`);
  return t;
}

function checkInt(what: string, n: number): void {
  if (!Number.isSafeInteger(n)) throw new Error(`job store: ${what} must be an integer, got ${String(n)}`);
}

function checkWorker(workerId: string): void {
  if (typeof workerId !== 'string' || workerId === '' || workerId.length > 200) {
    throw new Error(
      `job store: worker id must be a non-empty string of at most 200 characters, got ${JSON.stringify(workerId)}`,
    );
  }
}

function checkLease(leaseMs: number): void {
  if (!Number.isSafeInteger(leaseMs) || leaseMs <= 0)
    throw new Error(`job store: lease must be a positive number of ms, got ${String(leaseMs)}`);
}

function toJob(r: JobRow): ClaimedJob {
  return {
    id: Number(r.id),
    pluginConfigId: Number(r.plugin_config_id),
    teamId: Number(r.team_id),
    name: String(r.name),
    payloadJson: String(r.payload),
    runAt: new Date(Number(r.run_at)),
    attempts: Number(r.attempts),
    lockedUntil: new Date(Number(r.locked_until)),
    createdAt: new Date(Number(r.created_at)),
  };
}

/** pg returns `{rows}`, better-sqlite3 an array. */
function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}

/**
 * Persisted plugin jobs (`meta.jobs.NAME(payload).runIn(…)`) in our own table `posthog_plugins_job` (created by
 * `migrate()` / `migrateOwnTables()`). Jobs survive restarts; a worker takes due jobs with a lease and holds
 * them alone until it completes, releases or loses them (lease expiry makes a job claimable again, so a job
 * whose worker died runs again: at-least-once). Times are epoch milliseconds.
 */
export class JobStore {
  private readonly pg: boolean;

  constructor(readonly db: Knex) {
    this.pg = databaseKind(db) === 'postgres';
  }

  /** Store a job; returns its id. */
  async enqueue(job: JobInput): Promise<number> {
    checkInt('plugin config id', job.pluginConfigId);
    checkInt('team id', job.teamId);
    if (typeof job.name !== 'string' || job.name === '' || Array.from(job.name).length > NAME_MAX_CHARS) {
      throw new Error(
        `job store: job name must be 1–${NAME_MAX_CHARS} characters, got ${JSON.stringify(String(job.name).slice(0, 60))}`,
      );
    }
    if (typeof job.payloadJson !== 'string')
      throw new Error(`job store: payload of job "${job.name}" must be JSON text`);
    const result = (await this.db(T_JOB)
      .insert({
        plugin_config_id: job.pluginConfigId,
        team_id: job.teamId,
        name: job.name,
        payload: job.payloadJson,
        run_at: ms('runAt', job.runAt),
        attempts: 0,
        created_at: Date.now(),
      })
      .returning('id')) as unknown[];
    const first = result[0];
    const id = Number(typeof first === 'object' && first !== null ? (first as { id: unknown }).id : first);
    if (!Number.isFinite(id)) throw new Error(`job store: insert of job "${job.name}" returned no id`);
    return id;
  }

  /**
   * Atomically take up to `limit` due jobs (run_at ≤ now) that nobody holds or whose lease has expired, in
   * run_at order; each gets `attempts + 1` and a lease until now + leaseMs. Concurrent callers, in any
   * process, never get the same job: Postgres locks the chosen rows (`FOR UPDATE SKIP LOCKED`, so claimers
   * skip each other's rows instead of waiting); on SQLite the whole claim is one UPDATE statement, which takes
   * the database's single write lock before it reads.
   */
  async claimDue(workerId: string, limit: number, leaseMs: number, now: Date = new Date()): Promise<ClaimedJob[]> {
    checkWorker(workerId);
    checkLease(leaseMs);
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new Error(`job store: claim limit must be a positive integer, got ${String(limit)}`);
    const t = ms('now', now);
    const due = `run_at <= ? AND (locked_until IS NULL OR locked_until <= ?)`;
    const sql = this.pg
      ? `WITH due AS (
           SELECT id FROM ${T_JOB} WHERE ${due} ORDER BY run_at, id LIMIT ? FOR UPDATE SKIP LOCKED
         )
         UPDATE ${T_JOB} j SET locked_by = ?, locked_until = ?, attempts = j.attempts + 1
         FROM due WHERE j.id = due.id
         RETURNING ${RETURNED.split(', ')
           .map((c) => `j.${c}`)
           .join(', ')}`
      : `UPDATE ${T_JOB} SET locked_by = ?, locked_until = ?, attempts = attempts + 1
         WHERE id IN (SELECT id FROM ${T_JOB} WHERE ${due} ORDER BY run_at, id LIMIT ?)
         RETURNING ${RETURNED}`;
    const bindings = this.pg ? [t, t, limit, workerId, t + leaseMs] : [workerId, t + leaseMs, t, t, limit];
    const rows = rowsOf<JobRow>(await this.db.raw(sql, bindings));
    // RETURNING order is unspecified
    return rows.map(toJob).sort((a, b) => a.runAt.getTime() - b.runAt.getTime() || a.id - b.id);
  }

  /** Delete a finished job. False (nothing done) when `workerId` no longer holds it. */
  async complete(id: number, workerId: string): Promise<boolean> {
    checkInt('job id', id);
    checkWorker(workerId);
    return (await this.db(T_JOB).where({ id, locked_by: workerId }).delete()) > 0;
  }

  /**
   * Give a held job back, to run again at `runAt`. `uncount`: this claim did not run it at all (its plugin was not
   * ready), so it does not count towards the job's attempts. False when `workerId` no longer holds it.
   */
  async release(id: number, workerId: string, runAt: Date, opts: { uncount?: boolean } = {}): Promise<boolean> {
    checkInt('job id', id);
    checkWorker(workerId);
    const change: Record<string, unknown> = { locked_by: null, locked_until: null, run_at: ms('runAt', runAt) };
    if (opts.uncount) change.attempts = this.db.raw('CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END');
    const n = await this.db(T_JOB).where({ id, locked_by: workerId }).update(change);
    return n > 0;
  }

  /**
   * Renew the lease of a held job to now + leaseMs. False when `workerId` no longer holds it (another
   * worker claimed it after the lease expired, or it was completed/released).
   */
  async extend(id: number, workerId: string, leaseMs: number, now: Date = new Date()): Promise<boolean> {
    checkInt('job id', id);
    checkWorker(workerId);
    checkLease(leaseMs);
    const n = await this.db(T_JOB)
      .where({ id, locked_by: workerId })
      .update({ locked_until: ms('now', now) + leaseMs });
    return n > 0;
  }

  /**
   * The earliest time some job can be claimed: its run_at, or for a held job the end of its lease if later.
   * Null when there are no jobs. For pollers deciding how long to sleep.
   */
  async nextRunAt(): Promise<Date | null> {
    const row = (await this.db(T_JOB)
      .select(
        this.db.raw(
          'MIN(CASE WHEN locked_until IS NOT NULL AND locked_until > run_at THEN locked_until ELSE run_at END) AS next',
        ),
      )
      .first()) as { next: unknown } | undefined;
    if (!row || row.next === null || row.next === undefined) return null;
    return new Date(Number(row.next));
  }
}
