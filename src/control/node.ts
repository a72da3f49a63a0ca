import fs from 'node:fs';
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import { expandNodeName } from '../../protocol/pidbox';
import type { JsonObject } from '../../protocol/types';
import { parseAmqpUrl } from '../brokers/amqp/url';
import { maskPassword } from '../brokers/mask-password';
import type { StartArgs } from '../start-args';
import type { Logger } from '../log';
import { Activity } from './activity';
import { AmqpControlTransport } from './amqp-transport';
import type { WorkerView } from './commands';
import { EventDispatcher } from './event-dispatcher';
import { RedisControlTransport } from './redis-transport';
import { RemoteControl } from './remote-control';
import type { ControlTransport } from './transport';

export interface CeleryNodeOptions {
  args: StartArgs;
  index: number;
  logger: Logger;
  prefetchCount: number;
  inputQueueArguments: JsonObject | null;
  /** Clean stop of this worker process, as SIGTERM. */
  shutdown: (why: string) => void;
}

const STOP_TIMEOUT_MS = 2000;

function bounded(p: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    p.catch(() => undefined).finally(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** The version `sw_ver` and `stats` report: package.json's. */
function ownVersion(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      return (JSON.parse(fs.readFileSync(path.join(__dirname, rel), 'utf8')) as { version: string }).version;
    } catch {
      // running from another layout: try the next
    }
  }
  return '0';
}

/** Celery's Connection.info() for the broker URL, without the password. */
function brokerInfo(url: string): JsonObject {
  if (/^rediss?:/i.test(url)) {
    const u = new URL(url);
    return {
      hostname: u.hostname,
      userid: u.username || null,
      virtual_host: u.pathname.replace(/^\//, '') || '0',
      port: Number(u.port || 6379),
      insist: false,
      ssl: u.protocol === 'rediss:',
      transport: 'redis',
      connect_timeout: 4,
      transport_options: {},
      login_method: null,
      uri_prefix: null,
      heartbeat: null,
      failover_strategy: 'round-robin',
      alternates: [],
    };
  }
  const a = parseAmqpUrl(url);
  return {
    hostname: a.hostname,
    userid: a.username,
    virtual_host: a.vhost,
    port: a.port,
    insist: false,
    ssl: a.tls,
    transport: 'amqp',
    connect_timeout: 4,
    transport_options: {},
    login_method: 'AMQPLAIN',
    uri_prefix: null,
    heartbeat: a.heartbeat ?? 120,
    failover_strategy: 'round-robin',
    alternates: [],
  };
}

/**
 * This worker process as Celery's tooling sees it: a node answering remote control and sending worker (and, with
 * --task-events, task) events, on a broker connection of its own. `observer` goes into the consumer loops.
 */
export class CeleryNode {
  readonly name: string;
  readonly activity: Activity;
  private readonly transport: ControlTransport;
  private readonly control: RemoteControl;
  private readonly events: EventDispatcher;

  constructor(opts: CeleryNodeOptions) {
    const { args, logger } = opts;
    this.name = expandNodeName(args.hostname, osHostname(), opts.index);
    const nodeLogger = logger.child({ node: this.name });
    this.transport = /^rediss?:/i.test(args.broker)
      ? new RedisControlTransport(args.broker, nodeLogger)
      : new AmqpControlTransport(args.broker, nodeLogger);
    let activity: Activity | null = null;
    const startedAtMs = Date.now();
    const view: WorkerView = {
      hostname: this.name,
      pid: process.pid,
      startedAtMs,
      concurrency: args.concurrency,
      prefetchCount: opts.prefetchCount,
      inputQueue: args.queue,
      inputQueueArguments: opts.inputQueueArguments,
      brokerInfo: brokerInfo(args.broker),
      processed: () => activity?.processed ?? 0,
      active: () => activity?.active() ?? [],
      conf: () => ({
        broker_url: maskPassword(args.broker, /^rediss?:/i.test(args.broker) ? '***' : '**'),
        task_default_queue: args.outputQueue,
        worker_concurrency: args.concurrency,
        worker_prefetch_multiplier: args.prefetchMultiplier,
        worker_send_task_events: args.taskEvents,
        broker_transport_options: { visibility_timeout: args.visibilityTimeout },
        task_queues: [args.queue],
        posthog_plugins_batch_size: args.batchSize,
      }),
      clock: () => this.control.clock.value,
      shutdown: (why) => opts.shutdown(`remote control: ${why}`),
    };
    this.control = new RemoteControl(this.transport, view, nodeLogger);
    this.events = new EventDispatcher({
      transport: this.transport,
      hostname: this.name,
      clock: this.control.clock,
      logger: nodeLogger,
      version: ownVersion(),
      load: () => ({ active: activity?.activeCount ?? 0, processed: activity?.processed ?? 0 }),
      taskEvents: args.taskEvents,
    });
    activity = new Activity(this.events);
    this.activity = activity;
  }

  /** Never throws: a broker that refuses remote control must not stop the events from flowing. */
  async start(logger: Logger): Promise<void> {
    try {
      await this.control.start();
      await this.events.start();
    } catch (err) {
      logger.warn(`remote control and Celery events are off for this process: ${(err as Error).message}`, {
        node: this.name,
      });
    }
  }

  /** worker-offline and close, bounded: a broker that is down must not hold up the worker's shutdown. */
  async stop(): Promise<void> {
    await bounded(this.events.stop(), STOP_TIMEOUT_MS);
    await bounded(this.transport.close(), STOP_TIMEOUT_MS);
  }
}
