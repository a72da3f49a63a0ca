/**
 * Preloaded into every Node process of the worker's tree (`NODE_OPTIONS=--require …/cpu-prof-preload.js`) for
 * the profile run of `make bench`: `--cpu-prof` itself is not allowed in NODE_OPTIONS, and the supervisor forks
 * its worker processes with a fixed execArgv, so the profiler is started in-process through node:inspector.
 * On exit the profile goes to $BENCH_CPU_PROF_DIR/prof-<pid>.cpuprofile (the same format as --cpu-prof).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  const interval = Number(process.env.BENCH_CPU_PROF_INTERVAL_US ?? 200);
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval });
  session.post('Profiler.start');
  process.on('exit', () => {
    // The in-process session answers synchronously, so this completes inside the exit handler.
    session.post('Profiler.stop', (err, result) => {
      if (!err && result?.profile)
        writeFileSync(path.join(dir, `prof-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
