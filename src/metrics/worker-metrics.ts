import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Delivery } from '../brokers/broker';
import type { Outcome } from '../pipeline/batch-processor';
import type { LoopObserver } from '../pipeline/consumer-loop';

/** What the gauges read when scraped. */
export interface WorkerGaugeSources {
  inFlight(): number;
  etaHeld(): number;
  isolates(): number;
  isolateHeapBytes(): Promise<number>;
  exportWaiting(): number;
}

const PREFIX = 'posthog_plugins_';
/** Batches hold up to --batch-size (default 1000) messages. */
const BATCH_SIZE_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * One worker process's metrics, in its own prom-client registry. The supervisor asks every worker for
 * `registry.getMetricsAsJSON()` over IPC at each scrape and sums them (metrics-server.ts), so one scrape shows the
 * whole instance. Label sets stay bounded: queue names, plugin config ids and plugin names.
 */
export class WorkerMetrics implements LoopObserver {
  readonly registry = new Registry();
  private readonly received: Counter<'queue'>;
  private readonly processed: Counter<'queue' | 'outcome'>;
  private readonly batchSize: Histogram;
  private readonly batchDuration: Histogram;
  private readonly pluginDuration: Histogram<'plugin_config_id' | 'plugin'>;
  private readonly pluginErrors: Counter<'plugin_config_id' | 'plugin'>;
  private readonly recycles: Counter<'plugin_config_id' | 'plugin'>;
  private readonly evictions: Counter<'plugin_config_id'>;
  readonly brokerReconnects: Counter;
  private readonly started = new WeakMap<Delivery, bigint>();

  constructor(
    private readonly queue: string,
    sources: WorkerGaugeSources,
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.received = new Counter({
      name: `${PREFIX}events_received_total`,
      help: 'Input messages taken into processing (an eta message once, when due)',
      labelNames: ['queue'],
      registers,
    });
    this.received.inc({ queue }, 0);
    this.processed = new Counter({
      name: `${PREFIX}events_processed_total`,
      help: 'Input messages by what became of them: published, dropped (by a plugin), set_aside, expired',
      labelNames: ['queue', 'outcome'],
      registers,
    });
    for (const outcome of ['published', 'dropped', 'set_aside', 'expired']) this.processed.inc({ queue, outcome }, 0);
    this.batchSize = new Histogram({
      name: `${PREFIX}batch_size`,
      help: 'Messages per batch handed to the plugins',
      buckets: BATCH_SIZE_BUCKETS,
      registers,
    });
    this.batchDuration = new Histogram({
      name: `${PREFIX}batch_duration_seconds`,
      help: 'Time from a batch going to the plugins until its outcomes are decided (decode, plugins, encode)',
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.pluginDuration = new Histogram({
      name: `${PREFIX}plugin_call_duration_seconds`,
      help: 'One processEvent/processEventBatch chain step of a plugin config over its events of a batch',
      labelNames: ['plugin_config_id', 'plugin'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.pluginErrors = new Counter({
      name: `${PREFIX}plugin_errors_total`,
      help: 'Events a plugin config threw on, timed out on or ran out of memory on',
      labelNames: ['plugin_config_id', 'plugin'],
      registers,
    });
    this.recycles = new Counter({
      name: `${PREFIX}isolate_recycles_total`,
      help: 'Isolates disposed and created again after a limit was hit (memory, CPU)',
      labelNames: ['plugin_config_id', 'plugin'],
      registers,
    });
    this.evictions = new Counter({
      name: `${PREFIX}isolate_evictions_total`,
      help: 'Isolates evicted after --isolate-idle-ms without calls or past --isolate-memory-budget-mb',
      labelNames: ['plugin_config_id'],
      registers,
    });
    this.brokerReconnects = new Counter({
      name: `${PREFIX}broker_reconnects_total`,
      help: 'Connections to the broker lost and made again',
      registers,
    });
    new Gauge({
      name: `${PREFIX}messages_in_flight`,
      help: 'Messages taken from the broker and not settled yet',
      registers,
      collect() {
        this.set(sources.inFlight());
      },
    });
    new Gauge({
      name: `${PREFIX}messages_eta_held`,
      help: 'Messages held unacked until their eta',
      registers,
      collect() {
        this.set(sources.etaHeld());
      },
    });
    new Gauge({
      name: `${PREFIX}isolates`,
      help: 'Plugin isolates alive',
      registers,
      collect() {
        this.set(sources.isolates());
      },
    });
    new Gauge({
      name: `${PREFIX}isolate_heap_bytes`,
      help: 'Heap used by all plugin isolates',
      registers,
      async collect() {
        this.set(await sources.isolateHeapBytes());
      },
    });
    new Gauge({
      name: `${PREFIX}export_events_waiting`,
      help: 'Events waiting for onEvent or in exportEvents buffers',
      registers,
      collect() {
        this.set(sources.exportWaiting());
      },
    });
  }

  batchStarted(deliveries: readonly Delivery[]): void {
    if (deliveries.length === 0) return;
    this.started.set(deliveries[0] as Delivery, process.hrtime.bigint());
  }

  batchFinished(deliveries: readonly Delivery[], outcomes: readonly Outcome[] | null): void {
    if (outcomes === null || outcomes.length === 0 || deliveries.length === 0) return;
    const t0 = this.started.get(deliveries[0] as Delivery);
    if (t0 !== undefined) this.batchDuration.observe(Number(process.hrtime.bigint() - t0) / 1e9);
    this.batchSize.observe(outcomes.length);
    const counts = { published: 0, dropped: 0, set_aside: 0, expired: 0 };
    let received = 0;
    for (const o of outcomes) {
      if (o.kind === 'wait') continue; // counted once, when it runs
      received++;
      if (o.kind === 'reject') counts.set_aside++;
      else counts[o.result]++;
    }
    if (received > 0) this.received.inc({ queue: this.queue }, received);
    for (const [outcome, n] of Object.entries(counts)) if (n > 0) this.processed.inc({ queue: this.queue, outcome }, n);
  }

  pluginCall(
    config: { id: number; name: string },
    seconds: number,
    outcome: { errors: number; recreated: number },
  ): void {
    const labels = { plugin_config_id: String(config.id), plugin: config.name };
    this.pluginDuration.observe(labels, seconds);
    if (outcome.errors > 0) this.pluginErrors.inc(labels, outcome.errors);
    if (outcome.recreated > 0) this.recycles.inc(labels, outcome.recreated);
  }

  evicted(configId: number): void {
    this.evictions.inc({ plugin_config_id: String(configId) });
  }
}
