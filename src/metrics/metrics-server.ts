import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AggregatorRegistry,
  Counter,
  Gauge,
  Registry,
  collectDefaultMetrics,
  type MetricObjectWithValues,
  type MetricValue,
  type PrometheusContentType,
} from 'prom-client';
import type { Logger } from '../log';
import { queueDepthSampler, type QueueDepthSampler } from './queue-depth';

export interface MetricsServerOptions {
  host: string;
  port: number;
  brokerUrl: string;
  /** Sampled at each scrape: input, output and `<input>.rejected`. */
  queues: readonly string[];
  /** Every worker process's getMetricsAsJSON() (see Supervisor.collectMetrics). */
  collectWorkers: () => Promise<unknown[][]>;
  logger: Logger;
}

const PREFIX = 'posthog_plugins_';
/** A scrape waits this long for the workers and the queue sample; who is late is left out of that scrape. */
const SCRAPE_TIMEOUT_MS = 3000;

/**
 * `/metrics` of one `start` instance, served by the supervisor: the sum of every worker process's registry
 * (prom-client's AggregatorRegistry.aggregate: counters and histograms add up, gauges too unless prom-client marks
 * them otherwise), plus the supervisor's own counters (restarts, crash attributions), its own process metrics
 * (prefixed `posthog_plugins_supervisor_`) and the queue depths it samples at scrape time.
 */
export class MetricsServer {
  readonly registry = new Registry();
  readonly restarts: Counter;
  readonly crashAttributions: Counter<'plugin_config_id'>;
  private readonly depth: QueueDepthSampler;
  private readonly depthGauge: Gauge<'queue'>;
  private server: http.Server | null = null;

  constructor(private readonly opts: MetricsServerOptions) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: `${PREFIX}supervisor_` });
    this.restarts = new Counter({
      name: `${PREFIX}worker_restarts_total`,
      help: 'Worker processes that died and were started again',
      registers,
    });
    this.crashAttributions = new Counter({
      name: `${PREFIX}crash_attributions_total`,
      help: 'Worker process deaths charged to a plugin config (see --crash-limit)',
      labelNames: ['plugin_config_id'],
      registers,
    });
    this.depth = queueDepthSampler(opts.brokerUrl);
    this.depthGauge = new Gauge({
      name: `${PREFIX}queue_depth`,
      help: 'Messages waiting in the queue, sampled at scrape time',
      labelNames: ['queue'],
      registers,
    });
  }

  /** Listen; resolves with the port (useful with port 0). */
  async start(): Promise<number> {
    const server = http.createServer((req, res) => void this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    this.opts.logger.info(`metrics on http://${this.opts.host}:${port}/metrics`, { metricsPort: port });
    return port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await this.depth.close();
  }

  /** The text exposition of the whole instance. */
  async render(): Promise<{ text: string; contentType: string }> {
    const [workers] = await Promise.all([this.opts.collectWorkers(), this.sampleDepth()]);
    const aggregated = AggregatorRegistry.aggregate<PrometheusContentType>(
      workers as Array<Array<MetricObjectWithValues<MetricValue<string>>>>,
    );
    const merged = Registry.merge([aggregated, this.registry]);
    return { text: await merged.metrics(), contentType: merged.contentType };
  }

  private async sampleDepth(): Promise<void> {
    this.depthGauge.reset();
    try {
      const sample = await withTimeout(this.depth.sample(this.opts.queues), SCRAPE_TIMEOUT_MS);
      for (const [queue, n] of sample) this.depthGauge.set({ queue }, n);
    } catch (err) {
      this.opts.logger.debug(`queue depth not sampled: ${(err as Error).message}`);
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    try {
      const { text, contentType } = await this.render();
      res.writeHead(200, { 'content-type': contentType }).end(text);
    } catch (err) {
      this.opts.logger.warn(`metrics scrape failed: ${(err as Error).message}`);
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export { SCRAPE_TIMEOUT_MS };
