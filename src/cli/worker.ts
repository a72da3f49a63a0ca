import { isPermanentConnectError } from '../brokers/connect-errors';
import { createLogger, type LogFormat } from '../log';
import { runWorkerProcess } from '../worker/worker-process';
import { WorkerLink } from '../worker/worker-link';

/**
 * `posthog-plugins worker` (internal, started by `posthog-plugins start`): one complete consumer in its own
 * process. Loads the plugins, connects to the broker, runs the consumer loops; writes a flight record before
 * every isolate entry; answers the supervisor's heartbeats. SIGTERM (forwarded by the supervisor) or the
 * supervisor going away: finish the batches in hand, give back what was not finished, exit 0.
 */
export async function runWorker(): Promise<void> {
  const init = WorkerLink.init();
  const logger = createLogger(init.logLevel, init.logFormat as LogFormat);
  logger.defaultMeta = { worker: init.index };

  let requestStop: (why: string) => void = () => undefined;
  const stopRequested = new Promise<string>((resolve) => (requestStop = resolve));
  let consuming = false;
  let stopping = false;
  const onStop = (why: string): void => {
    // A SIGTERM sent to the whole process group (a terminal, `timeout`, systemd) arrives here and again through
    // the supervisor, milliseconds apart: both mean "stop cleanly". Hurrying is the supervisor's call (SIGKILL
    // after --shutdown-timeout-ms, or at once on a second signal to it).
    if (stopping) return;
    stopping = true;
    // Before consuming nothing is held: leave now.
    if (!consuming) process.exit(0);
    requestStop(why);
  };
  const link = new WorkerLink(() => onStop('supervisor gone'));
  process.on('SIGTERM', () => onStop('SIGTERM received'));
  process.on('SIGINT', () => undefined); // a terminal's Ctrl-C reaches the whole group: the supervisor decides

  try {
    await runWorkerProcess({ init, logger, link, stopRequested, onConsuming: () => (consuming = true), onStop });
  } catch (err) {
    // The supervisor logs it (once, with how often it happened); say it here only if it cannot hear us.
    const message = (err as Error).message;
    const permanent = (err as { permanent?: unknown }).permanent === true || isPermanentConnectError(err);
    if (!(await link.send({ type: 'fatal', message, permanent }))) logger.error(`worker failed: ${message}`);
    process.exit(1);
  }
  link.disconnect();
  process.exit(0);
}
