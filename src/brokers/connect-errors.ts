import { AmqpTopologyError } from './amqp/errors';

/**
 * Whether a failure to connect to the broker (or PostHog's Redis) can fix itself. Permanent: the broker answered
 * and said no (wrong credentials, no such vhost or db, access refused, a queue declared otherwise (406), a server
 * too old, a URL we cannot use); retrying only repeats the answer, so `start` stops with the reason. Everything
 * else (refused or reset connections, timeouts, DNS, a Redis still loading) is transient and retried with backoff.
 * Both brokers' connect paths ask this one function.
 */
export function isPermanentConnectError(err: unknown): boolean {
  if (err instanceof AmqpTopologyError) return true;
  const text = err instanceof Error ? err.message : String(err);
  return PERMANENT.some((re) => re.test(text));
}

const PERMANENT: readonly RegExp[] = [
  // RabbitMQ: login refused (403), vhost missing or not permitted (connection.open answered with close, 530).
  /ACCESS[_-]REFUSED/i,
  /NOT_ALLOWED/,
  /Expected ConnectionOpenOk; got <ConnectionClose/,
  /PRECONDITION_FAILED/,
  // Redis: wrong password or user, a password the server does not need, no password where it does, a bad db.
  /WRONGPASS|NOAUTH|invalid (username-)?password|AUTH <password> called without any password configured|without any password configured/i,
  /invalid DB index|DB index is out of range/i,
  /is too old: posthog-plugins needs Redis/,
  /unsupported broker URL scheme|Invalid (broker|AMQP|Redis) URL/i,
];

/** The delay before retry `attempt` (1, 2, …): 0.5 s doubling to 10 s. */
export function connectBackoffMs(attempt: number): number {
  return Math.min(10_000, 500 * 2 ** Math.max(0, attempt - 1));
}

/** ioredis reconnect delays on the same backoff (instead of its default 50 ms steps). */
export const redisBackoff = { retryStrategy: (times: number): number => connectBackoffMs(times) };

/**
 * Report a Redis client's outages as one warning per reconnect attempt, with its count and the last error,
 * and one line when it is back (instead of a line per 'error' event, several a second).
 */
export function reportRedisOutages(
  client: { on(event: string, listener: (...args: never[]) => void): unknown },
  what: string,
  logger: { warn(m: string): void; info(m: string): void },
): void {
  let attempts = 0;
  let last = '';
  client.on('error', (err: Error) => (last = err.message));
  client.on('reconnecting', (delayMs: number) => {
    attempts++;
    logger.warn(
      `${what}: ${last || 'connection lost'} (attempt ${attempts}); retrying in ${(delayMs / 1000).toFixed(1)} s`,
    );
  });
  client.on('ready', () => {
    if (attempts > 0) logger.info(`${what}: connected again after ${attempts} attempt(s)`);
    attempts = 0;
    last = '';
  });
}
