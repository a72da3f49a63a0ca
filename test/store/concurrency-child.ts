/**
 * A separate process hammering the same database as the test (cross-process atomicity): better-sqlite3 is
 * synchronous, so only another process can really race a SQLite writer. The child prints "ready", waits for a
 * line on stdin, runs, prints its JSON answer. Request (argv[2], JSON):
 * - `{op: 'increment', target, configId, key, count, parallel}` → the values cursorIncrement returned;
 * - `{op: 'claim', target, workerId, limit, leaseMs, idleRounds}` → ids of the jobs it claimed and completed,
 *   claiming until `idleRounds` claims in a row found nothing.
 */
import { JobStore } from '../../src/store/job-store';
import { PluginStorage } from '../../src/store/plugin-storage';
import { connect, DbTarget } from './api-databases';

type Request =
  | { op: 'increment'; target: DbTarget; configId: number; key: string; count: number; parallel: number }
  | { op: 'claim'; target: DbTarget; workerId: string; limit: number; leaseMs: number; idleRounds: number };

async function main(): Promise<void> {
  const req = JSON.parse(process.argv[2]) as Request;
  const db = connect(req.target);
  try {
    await db.raw('SELECT 1'); // connected before the start signal
    process.stdout.write('ready\n');
    await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
    if (req.op === 'increment') {
      const storage = new PluginStorage(db);
      const values: number[] = [];
      let left = req.count;
      const lane = async (): Promise<void> => {
        while (left > 0) {
          left--;
          values.push(await storage.cursorIncrement(req.configId, req.key, 1));
        }
      };
      await Promise.all(Array.from({ length: req.parallel }, lane));
      process.stdout.write(JSON.stringify(values));
    } else {
      const jobs = new JobStore(db);
      const ids: number[] = [];
      for (let idle = 0; idle < req.idleRounds;) {
        const claimed = await jobs.claimDue(req.workerId, req.limit, req.leaseMs);
        if (claimed.length === 0) {
          idle++;
          continue;
        }
        idle = 0;
        for (const j of claimed) {
          if (!(await jobs.complete(j.id, req.workerId)))
            throw new Error(`job ${j.id} claimed but not completable by ${req.workerId}`);
          ids.push(j.id);
        }
      }
      process.stdout.write(JSON.stringify(ids));
    }
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(String((err as Error).stack ?? err));
  process.exitCode = 1;
});
