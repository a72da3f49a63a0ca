import type { JsonValue } from '../../../protocol/types';

/**
 * A declaration RabbitMQ refused (406 PRECONDITION_FAILED: the queue/exchange exists with other settings;
 * 404 NOT_FOUND in passive mode; 403 ACCESS_REFUSED). Not retried by connect(): it is a configuration problem.
 */
export class AmqpTopologyError extends Error {
  override readonly name = 'AmqpTopologyError';
  constructor(
    message: string,
    /** AMQP reply code: 406, 404, 403, 405. */
    readonly code: number,
    readonly kind: 'queue' | 'exchange',
    readonly entity: string,
    /** For 406: the argument that differs ('x-max-priority', 'durable', 'type', …). */
    readonly argument?: string,
    /** For 406: RabbitMQ's wording of what we sent and what exists ("none", "'10'", "the value '10' of type 'signedint'"). */
    readonly received?: string,
    readonly current?: string,
  ) {
    super(message);
  }
}

/** The broker is (temporarily) unreachable; receive() throws it so that the caller backs off. */
export class AmqpUnavailableError extends Error {
  override readonly name = 'AmqpUnavailableError';
}

const INEQUIVALENT =
  /inequivalent arg '([^']*)' for (queue|exchange) '((?:[^']|'(?! in vhost))*)' in vhost '([^']*)': received (.*?) but current is (.*?)"?$/s;
const NOT_FOUND = /NOT_FOUND - no (queue|exchange) '((?:[^']|'(?! in vhost))*)' in vhost '([^']*)'/;

const INTEGER_TYPES = new Set([
  'signedint',
  'long',
  'short',
  'byte',
  'unsignedbyte',
  'unsignedshort',
  'unsignedint',
  'signedshort',
  'signedbyte',
]);

/** "the value '10' of type 'signedint'" → 10; "none" → undefined; "'true'" → 'true'. */
export function parseRabbitValue(text: string): { present: boolean; value?: JsonValue } {
  const t = text.trim();
  if (t === 'none') return { present: false };
  const typed = /^the value '(.*)' of type '([^']*)'$/s.exec(t);
  if (typed) {
    const [, raw, type] = typed as unknown as [string, string, string];
    if (INTEGER_TYPES.has(type) && /^-?\d+$/.test(raw)) return { present: true, value: Number(raw) };
    if (type === 'double' || type === 'float') return { present: true, value: Number(raw) };
    if (type === 'bool') return { present: true, value: raw === 'true' };
    return { present: true, value: raw };
  }
  const quoted = /^'(.*)'$/s.exec(t);
  return { present: true, value: quoted ? quoted[1]! : t };
}

export interface DescribeContext {
  /** What we were declaring when it failed (used when RabbitMQ's text cannot be parsed). */
  kind: 'queue' | 'exchange';
  name: string;
  vhost: string;
  passive: boolean;
  /** The arguments we declared this queue with, and the option that sets them (named in the advice). */
  queueArguments: Record<string, JsonValue>;
  argumentsFlag: string;
}

/**
 * Turns amqplib's channel-close error for a failed declare into an AmqpTopologyError that names the queue and the
 * differing argument and says what to do. Other errors are returned unchanged.
 */
export function describeDeclareError(err: unknown, ctx: DescribeContext): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const rawCode = (e as Error & { code?: unknown }).code;
  const code = typeof rawCode === 'number' ? rawCode : 0;
  const text = e.message;
  const m = INEQUIVALENT.exec(text);
  if (m) {
    const [, argument, kind, name, vhost, received, current] = m as unknown as [
      string,
      string,
      'queue' | 'exchange',
      string,
      string,
      string,
      string,
    ];
    const where = `${kind} '${name}' in vhost '${vhost}'`;
    let advice: string;
    if (kind === 'queue' && argument.startsWith('x-')) {
      const cur = parseRabbitValue(current);
      const suggested: Record<string, JsonValue> = { ...ctx.queueArguments };
      if (cur.present && cur.value !== undefined) suggested[argument] = cur.value;
      else delete suggested[argument];
      advice =
        `Declarations must match exactly (Python Celery workers declare the same queue at start). Either start with ` +
        `--amqp-passive (use the existing queue as it is, declare nothing) or match its arguments with ` +
        `${ctx.argumentsFlag} '${JSON.stringify(suggested)}'.`;
    } else if (kind === 'queue') {
      advice =
        `Celery declares its queues durable, not exclusive, not auto-delete; this one was created differently by something ` +
        `else. Start with --amqp-passive to use it as it is, or delete it so that it is declared again like Celery does.`;
    } else {
      advice =
        `Celery declares a durable direct exchange named like the queue; this one differs. Start with --amqp-passive ` +
        `(we publish through the default exchange and do not need it), or delete it.`;
    }
    const msg = `RabbitMQ refused to declare ${where}: argument '${argument}' differs (we sent ${received}, the existing ${kind} has ${current}). ${advice}`;
    return new AmqpTopologyError(msg, code || 406, kind, name, argument, received, current);
  }
  const nf = NOT_FOUND.exec(text);
  if (nf || code === 404) {
    const kind = (nf?.[1] as 'queue' | 'exchange' | undefined) ?? ctx.kind;
    const name = nf?.[2] ?? ctx.name;
    const vhost = nf?.[3] ?? ctx.vhost;
    const advice = ctx.passive
      ? `In passive mode nothing is declared: start a Celery worker for it first, or drop --amqp-passive.`
      : `It may have been deleted while we were declaring it.`;
    return new AmqpTopologyError(`${kind} '${name}' does not exist in vhost '${vhost}'. ${advice}`, 404, kind, name);
  }
  if (code === 403 || /ACCESS_REFUSED/.test(text)) {
    return new AmqpTopologyError(
      `RabbitMQ refused access to ${ctx.kind} '${ctx.name}' in vhost '${ctx.vhost}': ${text}. Check the user's permissions (rabbitmqctl set_permissions).`,
      403,
      ctx.kind,
      ctx.name,
    );
  }
  if (code === 405 || /RESOURCE_LOCKED/.test(text)) {
    return new AmqpTopologyError(
      `${ctx.kind} '${ctx.name}' in vhost '${ctx.vhost}' is locked (exclusive queue of another connection): ${text}`,
      405,
      ctx.kind,
      ctx.name,
    );
  }
  return e;
}

/** The message of anything thrown, for log lines and error texts. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
