import fs from 'node:fs';
import {
  WORKER_INIT_ENV,
  isSupervisorMessage,
  type SupervisorMessage,
  type WorkerInit,
  type WorkerMessage,
  type WorkerProgress,
} from '../ipc/messages';

/**
 * The worker process's end of the supervisor link: answers heartbeats from the main thread (so a main thread
 * stuck in an isolate stops answering), takes suspects and reload requests, and notices the supervisor going
 * away (the IPC channel closes) so a worker never outlives it.
 */
export class WorkerLink {
  private onSuspects: ((m: Extract<SupervisorMessage, { type: 'suspects' }>['suspects']) => void) | null = null;
  private onReload: (() => void) | null = null;
  private reloadPending = false;
  private progress: (() => WorkerProgress) | null = null;
  private metrics: (() => Promise<unknown[]>) | null = null;
  private readonly pendingSuspects: Array<Extract<SupervisorMessage, { type: 'suspects' }>['suspects']> = [];

  constructor(onDisconnect: () => void) {
    if (!process.send) throw new Error('the worker command is started by `posthog-plugins start`, not by hand');
    process.on('message', (m: unknown) => this.receive(m));
    process.on('disconnect', onDisconnect);
  }

  /** The settings the supervisor started this process with. */
  static init(): WorkerInit {
    const file = process.env[WORKER_INIT_ENV];
    if (!file) throw new Error('the worker command is started by `posthog-plugins start`, not by hand');
    const init = JSON.parse(fs.readFileSync(file, 'utf8')) as WorkerInit;
    fs.rmSync(file, { force: true }); // it holds the broker and database URLs: read once, gone
    return init;
  }

  /** Send and wait until the message has left this process; false when it could not (channel gone). */
  send(message: WorkerMessage): Promise<boolean> {
    return new Promise((resolve) => {
      if (!process.connected || !process.send) return resolve(false);
      try {
        process.send(message, undefined, {}, (err) => resolve(!err));
      } catch {
        resolve(false);
      }
    });
  }

  /** Report this progress with every heartbeat answer (the supervisor's health status uses it). */
  reportProgress(fn: () => WorkerProgress): void {
    this.progress = fn;
  }

  /** Answer the supervisor's scrapes with these metrics (none until set). */
  handleMetrics(fn: () => Promise<unknown[]>): void {
    this.metrics = fn;
  }

  handleSuspects(fn: (s: Extract<SupervisorMessage, { type: 'suspects' }>['suspects']) => void): void {
    this.onSuspects = fn;
    for (const s of this.pendingSuspects.splice(0)) fn(s);
  }

  handleReload(fn: () => void): void {
    this.onReload = fn;
    if (this.reloadPending) {
      this.reloadPending = false;
      fn();
    }
  }

  disconnect(): void {
    if (process.connected) process.disconnect();
  }

  private receive(m: unknown): void {
    if (!isSupervisorMessage(m)) return;
    switch (m.type) {
      case 'ping':
        void this.send({ type: 'pong', seq: m.seq, ...(this.progress ? { progress: this.progress() } : {}) });
        break;
      case 'suspects':
        if (this.onSuspects) this.onSuspects(m.suspects);
        else this.pendingSuspects.push(m.suspects);
        break;
      case 'reload':
        if (this.onReload) this.onReload();
        else this.reloadPending = true;
        break;
      case 'metrics': {
        const seq = m.seq;
        (this.metrics ? this.metrics() : Promise.resolve([])).then(
          (metrics) => void this.send({ type: 'metrics', seq, metrics }),
          () => void this.send({ type: 'metrics', seq, metrics: [] }),
        );
        break;
      }
    }
  }
}
