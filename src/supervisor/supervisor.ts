// Over 500 lines on purpose: one class owns the worker slots' state (spawn, exit, heartbeats, the metrics relay),
// and splitting it would pass that state around; the decisions it takes are pure modules beside it
// (attribution.ts, restart-policy.ts, crash-ledger.ts, health.ts).
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';
import { SuspectList } from '../pipeline/suspects';
import type { PluginStore } from '../store/plugin-store';
import { type DeathCause, classifyDeath, judge } from './attribution';
import { CrashLedger } from './crash-ledger';
import { readFlights } from '../worker/flight-recorder';
import { type WorkerHealth, trackProgress } from './health';
import {
  WORKER_INIT_ENV,
  isWorkerMessage,
  type SupervisorMessage,
  type WorkerInit,
  type WorkerProgress,
} from '../ipc/messages';
import type { DeadWorkerRestorer } from './dead-worker-restorer';
import { RestartPolicy } from './restart-policy';

export interface SupervisorOptions {
  workers: number;
  /** The worker settings, minus what the supervisor fills in per process. */
  worker: Omit<WorkerInit, 'index' | 'flightFile' | 'suspects' | 'serialLoad'>;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** A worker holding messages without settling any for this long is killed and replaced (health's rule 7). */
  stuckTimeoutMs: number;
  shutdownTimeoutMs: number;
  crashLimit: number;
  crashWindowMs: number;
  store: PluginStore;
  /** Redis only: returns a dead worker's messages to the queue at once (RabbitMQ requeues by itself). */
  restorer: DeadWorkerRestorer | null;
  logger: Logger;
  /** Directory for the flight records (one small file per worker process). */
  flightDir: string;
  /** Script the workers run (`main.js worker`). */
  mainScript?: string;
  /** A worker failed in a way that will not fix itself (no restart): the caller should stop and exit non-zero. */
  onPermanentFailure: (message: string) => void;
  /** Celery's `shutdown` reached a worker: stop the instance as on SIGTERM. */
  onShutdownRequest?: (reason: string) => void;
  /** Counted for Prometheus: a worker process restarted, a crash charged to a plugin config. */
  onRestart?: (index: number) => void;
  onCrashAttributed?: (configId: number) => void;
}

interface Slot {
  index: number;
  generation: number;
  child: ChildProcess | null;
  pid: number;
  startedAt: number;
  ready: boolean;
  workerId: string | null;
  flightFile: string;
  lastPong: number;
  /** Progress reported with the last heartbeat answer (null until a worker reports it). */
  progress: WorkerProgress | null;
  lastProgressAt: number;
  /** It has answered a heartbeat: from then on the heartbeat timeout applies (before: STARTUP_SILENCE_MS). */
  answered: boolean;
  killedForHang: boolean;
  lastFatal: string | null;
  lastFatalPermanent: boolean;
  restartTimer: NodeJS.Timeout | null;
  policy: RestartPolicy;
  exited: Promise<void>;
}

const MAIN_SCRIPT = path.resolve(__dirname, '../cli/main.js');
/**
 * Node flags of a worker process. isolated-vm needs the snapshot off. A young generation capped at 4 MB
 * semi-spaces: with Node's default (sized for throughput) a worker draining a backlog peaked at ~360 MB RSS for a
 * live heap of ~25 MB; at 4 MB it peaks at ~230 MB for the same CPU per event (docs/performance.md).
 */
const WORKER_EXEC_ARGV = ['--no-node-snapshot', '--max-semi-space-size=4'];
/**
 * A new worker loads its modules (isolated-vm, drivers) synchronously before it can answer anything; on a
 * busy machine that takes seconds. Until its first answer it gets at least this long.
 */
const STARTUP_SILENCE_MS = 60_000;
/** A late pop or BLMOVE of the dead process may land after the first restore: look again this much later. */
const SECOND_RESTORE_MS = 2_000;

/**
 * `posthog-plugins start`: keeps N worker processes running, each a complete consumer (own broker connection,
 * own plugins, own publishing). Plugins run only in workers, because some allocations end in a V8 fatal OOM
 * that aborts the whole process. When a worker dies the supervisor at once starts a replacement, returns its
 * Redis messages to the queue (RabbitMQ requeues on connection close), reads its flight record to tell which
 * plugin config was running, charges that config (disabled after `crashLimit` crashes within
 * `crashWindowMs`) and has every event that was in flight retried alone, so only the offending event loses
 * that plugin's change. Heartbeats catch a worker whose main thread is stuck; it is SIGKILLed.
 */
export class Supervisor {
  private readonly slots: Slot[] = [];
  private readonly suspects = new SuspectList();
  private readonly ledger: CrashLedger;
  private readonly background = new Set<Promise<unknown>>();
  private readonly metricReplies = new Map<number, (metrics: unknown[]) => void>();
  private metricSeq = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  private pingSeq = 0;
  private stopping = false;

  constructor(private readonly opts: SupervisorOptions) {
    this.ledger = new CrashLedger({ limit: opts.crashLimit, windowMs: opts.crashWindowMs });
  }

  start(): void {
    fs.mkdirSync(this.opts.flightDir, { recursive: true });
    for (let index = 0; index < Math.max(1, this.opts.workers); index++) {
      const slot: Slot = {
        index,
        generation: 0,
        child: null,
        pid: 0,
        startedAt: 0,
        ready: false,
        workerId: null,
        flightFile: '',
        lastPong: 0,
        progress: null,
        lastProgressAt: 0,
        answered: false,
        killedForHang: false,
        lastFatal: null,
        lastFatalPermanent: false,
        restartTimer: null,
        policy: new RestartPolicy(),
        exited: Promise.resolve(),
      };
      this.slots.push(slot);
      this.spawn(slot, false);
    }
    this.heartbeat = setInterval(() => this.beat(), this.opts.heartbeatIntervalMs);
  }

  /** The live worker processes as the health status shows them. */
  health(): WorkerHealth[] {
    return this.slots
      .filter((s) => s.child !== null)
      .map((s) => ({
        index: s.index,
        pid: s.pid,
        ready: s.ready,
        startedAt: s.startedAt,
        lastPongAt: s.lastPong,
        progress: s.progress,
        lastProgressAt: s.lastProgressAt,
      }));
  }

  /** Whether it is stopping (SIGTERM received). */
  isStopping(): boolean {
    return this.stopping;
  }

  /** Pids of the live worker processes (tests, diagnostics). */
  pids(): number[] {
    return this.slots.filter((s) => s.child !== null).map((s) => s.pid);
  }

  /**
   * SIGTERM every worker (each finishes its batch in hand, gives back what it holds and exits), wait for all,
   * SIGKILL those still running after the grace period. Resolves with how many had to be killed.
   */
  async stop(): Promise<number> {
    this.stopping = true;
    this.stopTimers();
    const live = this.slots.filter((s) => s.child !== null);
    for (const s of live) s.child?.kill('SIGTERM');
    const all = Promise.all(live.map((s) => s.exited));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), this.opts.shutdownTimeoutMs))),
    ]);
    clearTimeout(timer);
    let killed = 0;
    if (timedOut) {
      for (const s of this.slots) {
        if (!s.child) continue;
        killed++;
        this.opts.logger.warn(
          `worker ${s.index} (pid ${s.pid}) still running ${this.opts.shutdownTimeoutMs} ms after SIGTERM: killing it`,
          { worker: s.index, pid: s.pid },
        );
        s.child.kill('SIGKILL');
      }
      await all;
    }
    await this.settleBackground();
    fs.rmSync(this.opts.flightDir, { recursive: true, force: true });
    return killed;
  }

  /** Second signal: SIGKILL everything now, give back what the workers held. */
  async kill(): Promise<void> {
    this.stopping = true;
    this.stopTimers();
    for (const s of this.slots) s.child?.kill('SIGKILL');
    await Promise.all(this.slots.map((s) => s.exited));
    await Promise.race([this.settleBackground(), new Promise((r) => setTimeout(r, 5_000))]);
    fs.rmSync(this.opts.flightDir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------------------------------------------ internals

  private spawn(slot: Slot, serialLoad: boolean): void {
    slot.restartTimer = null;
    if (this.stopping) return;
    const { logger } = this.opts;
    slot.generation++;
    slot.flightFile = path.join(this.opts.flightDir, `worker-${slot.index}-${slot.generation}.flight`);
    const init: WorkerInit = {
      ...this.opts.worker,
      index: slot.index,
      flightFile: slot.flightFile,
      suspects: this.suspects.toJSON(),
      serialLoad,
    };
    const initFile = path.join(this.opts.flightDir, `worker-${slot.index}-${slot.generation}.init.json`);
    let child: ChildProcess;
    try {
      fs.writeFileSync(initFile, JSON.stringify(init), { mode: 0o600 });
      child = fork(this.opts.mainScript ?? MAIN_SCRIPT, ['worker'], {
        execPath: process.execPath,
        execArgv: WORKER_EXEC_ARGV,
        env: { ...process.env, [WORKER_INIT_ENV]: initFile },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'json',
      });
    } catch (err) {
      logger.error(`cannot start worker ${slot.index}: ${(err as Error).message}; retrying in 5 s`, {
        worker: slot.index,
      });
      slot.restartTimer = setTimeout(() => this.spawn(slot, serialLoad), 5_000);
      return;
    }
    slot.child = child;
    slot.pid = child.pid ?? 0;
    slot.startedAt = Date.now();
    slot.lastPong = slot.startedAt;
    slot.progress = null;
    slot.lastProgressAt = slot.startedAt;
    slot.answered = false;
    slot.ready = false;
    slot.workerId = null;
    slot.killedForHang = false;
    slot.lastFatal = null;
    slot.lastFatalPermanent = false;
    logger.info(`worker ${slot.index} started (pid ${slot.pid})`, { worker: slot.index, pid: slot.pid, serialLoad });

    child.on('message', (m: unknown) => {
      if (!isWorkerMessage(m) || slot.child !== child) return;
      switch (m.type) {
        case 'pong':
          slot.lastPong = Date.now();
          slot.answered = true;
          if (m.progress) Object.assign(slot, trackProgress(slot, m.progress, slot.lastPong));
          break;
        case 'broker':
          slot.workerId = m.workerId;
          if (m.workerId)
            logger.info(`worker ${slot.index} (pid ${slot.pid}) holds Redis worker id ${m.workerId}`, {
              worker: slot.index,
              pid: slot.pid,
              workerId: m.workerId,
            });
          break;
        case 'ready':
          slot.ready = true;
          slot.lastPong = Date.now();
          break;
        case 'metrics':
          this.metricReplies.get(m.seq)?.(m.metrics);
          break;
        case 'shutdown':
          logger.warn(`worker ${slot.index} (pid ${slot.pid}) asks to stop the instance: ${m.reason}`, {
            worker: slot.index,
            pid: slot.pid,
          });
          this.opts.onShutdownRequest?.(m.reason);
          break;
        case 'fatal':
          slot.lastFatal = m.message;
          slot.lastFatalPermanent = m.permanent === true;
          break;
      }
    });
    child.on('error', (err) =>
      logger.error(`worker ${slot.index} (pid ${slot.pid}): ${err.message}`, { worker: slot.index, pid: slot.pid }),
    );
    slot.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        try {
          this.onExit(slot, child, code, signal);
        } catch (err) {
          logger.error(
            `supervisor failed to handle the end of worker ${slot.index}: ${(err as Error).stack ?? String(err)}`,
          );
        }
        resolve();
      });
    });
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const { logger } = this.opts;
    const diedAt = Date.now();
    if (slot.child !== child) return;
    slot.child = null;
    const flights = readFlights(slot.flightFile);
    fs.rmSync(slot.flightFile, { force: true });
    fs.rmSync(`${slot.flightFile.replace(/\.flight$/, '')}.init.json`, { force: true });
    const cause = classifyDeath(code, signal, slot.killedForHang);
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    const meta = { worker: slot.index, pid: slot.pid, code, signal, cause };

    if (this.stopping) {
      if (code === 0) logger.info(`worker ${slot.index} (pid ${slot.pid}) stopped`, meta);
      else logger.warn(`worker ${slot.index} (pid ${slot.pid}) ended with ${how} while stopping`, meta);
      if (code !== 0 && slot.workerId) this.restore(slot.index, slot.pid, slot.workerId, diedAt, false);
      return;
    }

    if (slot.lastFatalPermanent && slot.lastFatal !== null) {
      // Restarting cannot help (e.g. RabbitMQ refuses our queue declaration): the caller stops everything.
      this.opts.onPermanentFailure(slot.lastFatal);
      return;
    }

    // 1. Siblings learn which events to run alone before those events are back in the queue.
    const verdict = judge(cause, flights);
    if (verdict.suspects.length > 0 || verdict.poison.length > 0) {
      const added = this.suspects.add(verdict.suspects, verdict.poison);
      this.broadcast({ type: 'suspects', suspects: added });
    }
    // 2. Its messages go back to the queue now (Redis; RabbitMQ already requeued them when the socket closed).
    if (slot.workerId) this.restore(slot.index, slot.pid, slot.workerId, diedAt, true);
    // 3. A replacement, at once unless it keeps dying before it gets going.
    const uptimeMs = diedAt - slot.startedAt;
    const pluginCrash = (cause === 'crash' || cause === 'hang') && (flights?.length ?? 0) > 0;
    const { delayMs, early } = slot.policy.onDeath(slot.ready, pluginCrash, diedAt);
    const why = [
      describeCause(cause, how),
      slot.lastFatal ? `error: ${slot.lastFatal}` : null,
      slot.ready ? `after ${formatMs(uptimeMs)}` : `during startup (${formatMs(uptimeMs)})`,
      verdict.reason,
    ]
      .filter(Boolean)
      .join('; ');
    if (delayMs > 0) {
      logger.error(
        `worker ${slot.index} (pid ${slot.pid}) died: ${why}; it failed ${early} time(s) in a row, next attempt in ${formatMs(delayMs)}`,
        { ...meta, delayMs, inFlight: flights },
      );
      slot.restartTimer = setTimeout(() => this.spawn(slot, verdict.serialLoad), delayMs);
    } else {
      logger.error(`worker ${slot.index} (pid ${slot.pid}) died: ${why}; restarting it now`, {
        ...meta,
        inFlight: flights,
      });
      this.spawn(slot, verdict.serialLoad);
    }
    this.opts.onRestart?.(slot.index);
    // 4. The crash ledger.
    if (verdict.charge !== null) this.opts.onCrashAttributed?.(verdict.charge);
    if (verdict.charge !== null)
      this.charge(
        verdict.charge,
        slot,
        how,
        verdict.poison.length > 0 ? (verdict.poison[0] as [string, number])[0] : null,
      );
  }

  private charge(configId: number, slot: Slot, how: string, taskId: string | null): void {
    const { logger, crashLimit, crashWindowMs } = this.opts;
    const c = this.ledger.charge(configId);
    const window = formatMs(crashWindowMs);
    logger.error(
      `plugin config ${configId} crashed worker ${slot.index} (${how}): crash ${c.count} of ${crashLimit} within ${window} before it is disabled`,
      {
        pluginConfigId: configId,
        crashes: c.count,
        taskId,
      },
    );
    if (!c.disable) return;
    const error = {
      message: `disabled: crashed its worker process ${c.count} times within ${window} (last: ${how}${how.includes('SIGABRT') ? ', e.g. a V8 fatal out-of-memory in the isolate' : ''})`,
      time: new Date().toISOString(),
      name: 'PluginCrashError',
    };
    this.track(
      this.opts.store.disable(configId, error).then(
        () => {
          logger.error(
            `plugin config ${configId} disabled after ${c.count} crashes within ${window}; reason written to posthog_pluginconfig.error`,
            { pluginConfigId: configId },
          );
          this.broadcast({ type: 'reload' });
        },
        (err: Error) =>
          logger.error(`could not disable plugin config ${configId}: ${err.message}`, { pluginConfigId: configId }),
      ),
    );
  }

  private restore(index: number, pid: number, workerId: string, diedAt: number, again: boolean): void {
    const restorer = this.opts.restorer;
    if (!restorer) return;
    const { logger } = this.opts;
    const once = async (): Promise<number> => {
      try {
        return await restorer.restore(workerId);
      } catch (err) {
        logger.error(
          `could not return the messages of dead worker ${index} (pid ${pid}) to the queue: ${(err as Error).message}; the other workers' dead-worker scan will`,
          { worker: index, workerId },
        );
        return 0;
      }
    };
    this.track(
      (async () => {
        const n = await once();
        logger.info(
          `returned ${n} in-flight message(s) of dead worker ${index} (pid ${pid}) to the queue, ${Date.now() - diedAt} ms after its death`,
          {
            worker: index,
            pid,
            workerId,
            restored: n,
            restoreMs: Date.now() - diedAt,
          },
        );
        if (!again) return;
        await new Promise((r) => setTimeout(r, SECOND_RESTORE_MS).unref());
        const late = await once();
        if (late > 0)
          logger.warn(
            `returned ${late} more message(s) of dead worker ${index} (pid ${pid}) that arrived after its death`,
            { worker: index, workerId },
          );
      })(),
    );
  }

  private beat(): void {
    const now = Date.now();
    const seq = ++this.pingSeq;
    for (const s of this.slots) {
      const child = s.child;
      if (!child || s.killedForHang) continue;
      const limit = s.answered
        ? this.opts.heartbeatTimeoutMs
        : Math.max(this.opts.heartbeatTimeoutMs, STARTUP_SILENCE_MS);
      if (now - s.lastPong > limit) {
        s.killedForHang = true;
        this.opts.logger.error(
          `worker ${s.index} (pid ${s.pid}) has not answered heartbeats for ${formatMs(now - s.lastPong)}: killing it`,
          { worker: s.index, pid: s.pid },
        );
        child.kill('SIGKILL');
        continue;
      }
      // Its main thread answers, but its loop is stuck (an await that never ends): as good as hung.
      if (s.progress && s.progress.inHand > 0 && now - s.lastProgressAt > this.opts.stuckTimeoutMs) {
        s.killedForHang = true;
        this.opts.logger.error(
          `worker ${s.index} (pid ${s.pid}) holds ${s.progress.inHand} message(s) and has settled none for ${formatMs(now - s.lastProgressAt)}: killing it`,
          { worker: s.index, pid: s.pid },
        );
        child.kill('SIGKILL');
        continue;
      }
      this.send(child, { type: 'ping', seq });
    }
  }

  /**
   * Every running worker's metrics (prom-client getMetricsAsJSON), for one scrape; a worker that does not answer
   * within `timeoutMs` (stuck in an isolate, starting) is left out of this scrape.
   */
  async collectMetrics(timeoutMs: number): Promise<unknown[][]> {
    const live = this.slots.filter((s) => s.child && s.ready);
    const replies = live.map(
      (s) =>
        new Promise<unknown[] | null>((resolve) => {
          const seq = ++this.metricSeq;
          const timer = setTimeout(() => {
            this.metricReplies.delete(seq);
            resolve(null);
          }, timeoutMs);
          this.metricReplies.set(seq, (metrics) => {
            clearTimeout(timer);
            this.metricReplies.delete(seq);
            resolve(metrics);
          });
          this.send(s.child as ChildProcess, { type: 'metrics', seq });
        }),
    );
    return (await Promise.all(replies)).filter((m): m is unknown[] => m !== null);
  }

  private broadcast(message: SupervisorMessage): void {
    for (const s of this.slots) if (s.child) this.send(s.child, message);
  }

  private send(child: ChildProcess, message: SupervisorMessage): void {
    if (!child.connected) return;
    try {
      child.send(message, (err) => {
        if (err) this.opts.logger.debug(`IPC send failed: ${err.message}`);
      });
    } catch {
      // channel closing: the exit handler takes over
    }
  }

  private stopTimers(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const s of this.slots) {
      if (s.restartTimer) clearTimeout(s.restartTimer);
      s.restartTimer = null;
    }
  }

  private track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  private async settleBackground(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }
}

function describeCause(cause: DeathCause, how: string): string {
  switch (cause) {
    case 'crash':
      return `${how} (a crash: a V8 fatal out-of-memory in a plugin isolate aborts this way)`;
    case 'hang':
      return `killed after missing heartbeats (${how})`;
    case 'killed':
      return `${how} from outside (an operator, or the kernel's OOM killer)`;
    case 'error':
      return how;
    case 'exit':
      return `${how} without being asked to stop`;
  }
}

function formatMs(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 100) / 10} s`;
  return `${Math.round(ms / 6000) / 10} min`;
}
