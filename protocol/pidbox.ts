/**
 * Celery remote control ("pidbox", kombu/pidbox.py) as data: names of the exchanges and queues, the request a
 * client broadcasts, whether it is meant for a node, and the reply a node sends back. Pure; the transports
 * (Redis PUBLISH/LPUSH, AMQP exchanges) are in src/control/. See docs/celery-remote-control.md.
 */
import { isJsonObject } from './json';
import { pythonStrRepr } from './repr';
import type { JsonObject, JsonValue } from './types';

/** Celery's `control_exchange` default: the mailbox namespace. */
export const CONTROL_NAMESPACE = 'celery';
/** Fanout exchange every node's mailbox queue is bound to. */
export const PIDBOX_EXCHANGE = `${CONTROL_NAMESPACE}.pidbox`;
/** Direct exchange replies go to (routing key: the client's reply routing key). */
export const REPLY_EXCHANGE = `reply.${CONTROL_NAMESPACE}.pidbox`;
/** Celery's `control_queue_ttl` (300 s) and `control_queue_expires` (10 s), as RabbitMQ arguments in ms. */
export const NODE_QUEUE_ARGUMENTS: Readonly<Record<string, number>> = { 'x-expires': 10_000, 'x-message-ttl': 300_000 };

/** A node's own mailbox queue: `<hostname>.celery.pidbox`. */
export function nodeQueueName(hostname: string): string {
  return `${hostname}.${CONTROL_NAMESPACE}.pidbox`;
}

/**
 * kombu's Redis transport delivers a fanout exchange by PUBLISH on a channel named `/{db}.<exchange>` (with
 * `fanout_prefix`, on by default) followed by `/<routing key>` when there is one (`fanout_patterns`, on too).
 */
export function redisFanoutChannel(db: number, exchange: string, routingKey = ''): string {
  return routingKey ? `/${db}.${exchange}/${routingKey}` : `/${db}.${exchange}`;
}

export interface ControlRequest {
  method: string;
  arguments: JsonObject;
  /** Node names the request is for; null: every node. */
  destination: string[] | null;
  pattern: string | null;
  matcher: string | null;
  /** Present when a reply is expected. */
  replyTo: { exchange: string; routingKey: string } | null;
  ticket: string | null;
}

export type ControlRequestResult = { ok: true; request: ControlRequest } | { ok: false; reason: string };

/** The body `Mailbox._publish` sends: {method, arguments, destination, pattern, matcher[, ticket, reply_to]}. */
export function parseControlRequest(body: JsonValue): ControlRequestResult {
  if (!isJsonObject(body)) return { ok: false, reason: 'control message body is not an object' };
  const { method, arguments: args, destination, pattern, matcher, ticket, reply_to: replyTo } = body;
  if (typeof method !== 'string' || method === '') return { ok: false, reason: 'control message has no method' };
  if (args !== undefined && args !== null && !isJsonObject(args))
    return { ok: false, reason: `control message ${method}: arguments is not an object` };
  if (
    destination !== undefined &&
    destination !== null &&
    !(Array.isArray(destination) && destination.every((d) => typeof d === 'string'))
  ) {
    return { ok: false, reason: `control message ${method}: destination is not a list of names` };
  }
  let reply: ControlRequest['replyTo'] = null;
  if (replyTo !== undefined && replyTo !== null) {
    if (!isJsonObject(replyTo) || typeof replyTo.exchange !== 'string' || typeof replyTo.routing_key !== 'string') {
      return { ok: false, reason: `control message ${method}: reply_to is not {exchange, routing_key}` };
    }
    reply = { exchange: replyTo.exchange, routingKey: replyTo.routing_key };
  }
  return {
    ok: true,
    request: {
      method,
      arguments: isJsonObject(args) ? args : {},
      destination: Array.isArray(destination) ? (destination as string[]) : null,
      pattern: typeof pattern === 'string' ? pattern : null,
      matcher: typeof matcher === 'string' ? matcher : null,
      replyTo: reply,
      ticket: typeof ticket === 'string' ? ticket : null,
    },
  };
}

/** fnmatch's translation of a shell pattern (`*`, `?`, `[seq]`, `[!seq]`) to a whole-string RegExp. */
function globToRegExp(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) out += '\\[';
      else {
        let set = pattern.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (set.startsWith('!')) set = `^${set.slice(1)}`;
        out += `[${set}]`;
        i = end;
      }
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^(?:${out})$`, 's');
}

/** Node.handle_message: a destination list wins; else a pattern with its matcher (glob, pcre); else all. */
export function isForNode(request: ControlRequest, hostname: string): boolean {
  if (request.destination && request.destination.length > 0) return request.destination.includes(hostname);
  if (request.pattern && request.matcher) {
    if (request.matcher === 'glob') return globToRegExp(request.pattern).test(hostname);
    if (request.matcher === 'pcre') {
      try {
        return new RegExp(`^(?:${request.pattern})`).test(hostname); // re.match: anchored at the start only
      } catch {
        return false;
      }
    }
    return false; // kombu raises on an unknown matcher: the node does not run the command
  }
  return true;
}

/** What a handler that raised replies (Node.dispatch): `{'error': repr(exc)}`. */
export function errorReply(exceptionName: string, message: string): JsonObject {
  return { error: `${exceptionName}(${pythonStrRepr(message)})` };
}

/** Celery's reply for a method no handler exists for: the handler table raised KeyError(method). */
export function unknownCommandReply(method: string): JsonObject {
  return errorReply('KeyError', method);
}

/** The reply body: `{<hostname>: <result>}`, with the ticket (and clock) headers the collector filters on. */
export function controlReply(
  hostname: string,
  result: JsonValue,
  ticket: string | null,
  clock: number,
): { body: JsonObject; headers: JsonObject } {
  return { body: { [hostname]: result }, headers: { ticket, clock } };
}

/** kombu's LamportClock: adjust on every message received, forward on every message sent. */
export class LamportClock {
  value = 0;

  adjust(other: unknown): number {
    const n = typeof other === 'number' && Number.isFinite(other) ? Math.trunc(other) : 0;
    this.value = Math.max(this.value, n) + 1;
    return this.value;
  }

  forward(): number {
    return ++this.value;
  }
}

/**
 * The node name template of one `start`: Celery's `-n/--hostname` (`%h` the host name, `%n` its first label, `%d`
 * the rest, `%i` the worker process index, `%%` a percent sign). Without `@` the template is the host part of
 * `posthog-plugins@…` (Celery's default_nodename). Worker processes need distinct names, so with more than one a
 * template without `%i` gets `-%i` at the end of its name part.
 */
export function nodeNameTemplate(template: string, workers: number): string {
  const t = template.includes('@') ? template : `posthog-plugins@${template}`;
  if (workers <= 1 || t.includes('%i')) return t;
  const at = t.indexOf('@');
  return `${t.slice(0, at)}-%i${t.slice(at)}`;
}

/** A template from nodeNameTemplate made concrete for one process. */
export function expandNodeName(template: string, host: string, index: number): string {
  const dot = host.indexOf('.');
  const name = dot < 0 ? host : host.slice(0, dot);
  const domain = dot < 0 ? '' : host.slice(dot + 1);
  return template.replace(
    /%([hndi%])/g,
    (_m, c: string) => ({ h: host, n: name, d: domain, i: String(index), '%': '%' })[c] as string,
  );
}

/** One entry of `active_queues`: kombu's Queue.as_dict(recurse=True) for a queue Celery declares by name. */
export function activeQueueInfo(queue: string, queueArguments: JsonObject | null): JsonObject {
  return {
    name: queue,
    exchange: {
      name: queue,
      type: 'direct',
      arguments: null,
      durable: true,
      passive: false,
      auto_delete: false,
      delivery_mode: null,
      no_declare: false,
    },
    routing_key: queue,
    queue_arguments: queueArguments,
    binding_arguments: null,
    consumer_arguments: null,
    durable: true,
    exclusive: false,
    auto_delete: false,
    no_ack: false,
    alias: null,
    bindings: [],
    no_declare: null,
    expires: null,
    message_ttl: null,
    max_length: null,
    max_length_bytes: null,
    max_priority: typeof queueArguments?.['x-max-priority'] === 'number' ? queueArguments['x-max-priority'] : null,
  };
}

/** One entry of `active` (Request.info): what a worker is running now. */
export interface ActiveRequest {
  id: string;
  name: string;
  argsrepr: string;
  kwargsrepr: string;
  /** Unix seconds. */
  timeStart: number;
  exchange: string;
  routingKey: string;
  priority: number;
  redelivered: boolean;
}

export function activeRequestInfo(r: ActiveRequest, hostname: string, pid: number): JsonObject {
  return {
    id: r.id,
    name: r.name,
    args: r.argsrepr,
    kwargs: r.kwargsrepr,
    type: r.name,
    hostname,
    time_start: r.timeStart,
    acknowledged: false, // acked only once the output is published (Celery's acks_late)
    delivery_info: {
      exchange: r.exchange,
      routing_key: r.routingKey,
      priority: r.priority,
      redelivered: r.redelivered,
    },
    worker_pid: pid,
  };
}
