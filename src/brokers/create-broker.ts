import type { Logger } from '../log';
import type { Broker, SetAsideListener } from './broker';

export interface BrokerSettings {
  url: string;
  inputQueue: string;
  outputQueue: string;
  logger: Logger;
  onSetAside: SetAsideListener;
  visibilityTimeoutS: number;
  leaseTtlMs: number;
  prefetch: number;
  amqpPassive: boolean;
  amqpQueueArguments: Record<string, unknown>;
  amqpOutputQueueArguments: Record<string, unknown>;
  /** Called each time a lost broker connection is made again. */
  onReconnect?: () => void;
}

/**
 * Pick the broker implementation from the URL scheme alone, as Celery does. Only the chosen one is loaded: the
 * supervisor makes a broker for its URL check and display name, and need not carry the other's client library.
 */
export async function createBroker(s: BrokerSettings): Promise<Broker> {
  const scheme = s.url.split(':', 1)[0]?.toLowerCase();
  switch (scheme) {
    case 'redis':
    case 'rediss': {
      const { RedisBroker } = await import('./redis/redis-broker');
      return new RedisBroker({
        url: s.url,
        inputQueue: s.inputQueue,
        outputQueues: [s.outputQueue],
        logger: s.logger,
        onSetAside: s.onSetAside,
        onReconnect: s.onReconnect,
        visibilityTimeoutS: s.visibilityTimeoutS,
        leaseTtlMs: s.leaseTtlMs,
      });
    }
    case 'amqp':
    case 'amqps':
    case 'pyamqp': {
      const { AmqpBroker } = await import('./amqp/amqp-broker');
      return new AmqpBroker({
        url: s.url.replace(/^pyamqp:/i, 'amqp:'),
        inputQueue: s.inputQueue,
        outputQueue: s.outputQueue,
        logger: s.logger,
        onSetAside: s.onSetAside,
        onReconnect: s.onReconnect,
        prefetch: s.prefetch,
        passive: s.amqpPassive,
        queueArguments: s.amqpQueueArguments,
        outputQueueArguments: s.amqpOutputQueueArguments,
      });
    }
    default:
      throw new Error(`unsupported broker URL scheme ${JSON.stringify(scheme)}: use redis://, rediss:// or amqp://`);
  }
}
