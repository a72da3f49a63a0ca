import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LamportClock,
  NODE_QUEUE_ARGUMENTS,
  activeQueueInfo,
  controlReply,
  expandNodeName,
  isForNode,
  nodeNameTemplate,
  nodeQueueName,
  parseControlRequest,
  redisFanoutChannel,
  unknownCommandReply,
  type ControlRequest,
} from '../../protocol/pidbox';
import {
  celeryEvent,
  eventRoutingKey,
  multiRoutingKey,
  platformSystem,
  taskReceivedFields,
  utcOffsetHours,
  workerEventFields,
} from '../../protocol/celery-events';

// What kombu 5.2's Mailbox._publish sends for `app.control.inspect().ping()`.
const PING = {
  method: 'ping',
  arguments: {},
  destination: null,
  pattern: null,
  matcher: null,
  ticket: '6c1bdc3e-2f5e-4d8e-9d5e-1f0e3f1c2a11',
  reply_to: { exchange: 'reply.celery.pidbox', routing_key: 'b3c9a1f0-8d27-3a55-bd2e-0d3c1e8f4a77' },
};

function request(over: Partial<ControlRequest>): ControlRequest {
  const parsed = parseControlRequest(PING);
  assert.ok(parsed.ok);
  return { ...parsed.request, ...over };
}

test('parseControlRequest reads kombu broadcast bodies, with and without reply_to', () => {
  const r = parseControlRequest(PING);
  assert.deepEqual(r, {
    ok: true,
    request: {
      method: 'ping',
      arguments: {},
      destination: null,
      pattern: null,
      matcher: null,
      replyTo: { exchange: 'reply.celery.pidbox', routingKey: 'b3c9a1f0-8d27-3a55-bd2e-0d3c1e8f4a77' },
      ticket: '6c1bdc3e-2f5e-4d8e-9d5e-1f0e3f1c2a11',
    },
  });
  const cast = parseControlRequest({
    method: 'shutdown',
    arguments: { msg: 'bye' },
    destination: ['a@h'],
    pattern: null,
    matcher: null,
  });
  assert.ok(cast.ok);
  assert.equal(cast.request.replyTo, null);
  assert.deepEqual(cast.request.arguments, { msg: 'bye' });
  assert.deepEqual(parseControlRequest([1]), { ok: false, reason: 'control message body is not an object' });
  assert.equal(parseControlRequest({ arguments: {} }).ok, false);
  assert.equal(parseControlRequest({ method: 'ping', destination: 'a@h' }).ok, false);
  assert.equal(parseControlRequest({ method: 'ping', reply_to: { exchange: 'x' } }).ok, false);
});

test('isForNode: destination list, else glob/pcre pattern (as Python fnmatch / re.match), else everyone', () => {
  assert.equal(isForNode(request({}), 'posthog-plugins@h'), true);
  assert.equal(isForNode(request({ destination: ['celery@h'] }), 'posthog-plugins@h'), false);
  assert.equal(isForNode(request({ destination: ['celery@h', 'posthog-plugins@h'] }), 'posthog-plugins@h'), true);
  // Python: fnmatch('posthog-plugins-1@h', 'posthog-plugins-*@h') True; fnmatch('celery@h', 'posthog*') False;
  // fnmatch('a.b@h', 'a?b@h') True; fnmatch('x@h', '[!a]@h') True; re.match('posthog', …) True; re.match('plugins', …) False
  assert.equal(isForNode(request({ pattern: 'posthog-plugins-*@h', matcher: 'glob' }), 'posthog-plugins-1@h'), true);
  assert.equal(isForNode(request({ pattern: 'posthog*', matcher: 'glob' }), 'celery@h'), false);
  assert.equal(isForNode(request({ pattern: 'a?b@h', matcher: 'glob' }), 'a.b@h'), true);
  assert.equal(isForNode(request({ pattern: '[!a]@h', matcher: 'glob' }), 'x@h'), true);
  assert.equal(isForNode(request({ pattern: 'posthog', matcher: 'pcre' }), 'posthog-plugins@h'), true);
  assert.equal(isForNode(request({ pattern: 'plugins', matcher: 'pcre' }), 'posthog-plugins@h'), false);
  assert.equal(isForNode(request({ pattern: 'x', matcher: 'nope' }), 'x'), false);
});

test("replies: {node: result} with the ticket header; unknown commands get Celery's KeyError reply", () => {
  assert.deepEqual(controlReply('n@h', { ok: 'pong' }, 't-1', 7), {
    body: { 'n@h': { ok: 'pong' } },
    headers: { ticket: 't-1', clock: 7 },
  });
  // Python: repr(KeyError('foo')) == "KeyError('foo')"; repr(KeyError("it's")) == 'KeyError("it\'s")'
  assert.deepEqual(unknownCommandReply('foo'), { error: "KeyError('foo')" });
  assert.deepEqual(unknownCommandReply("it's"), { error: 'KeyError("it\'s")' });
});

test('names: mailbox queue, Redis fanout channels, queue arguments as Celery 5.2 declares them', () => {
  assert.equal(nodeQueueName('posthog-plugins@h'), 'posthog-plugins@h.celery.pidbox');
  assert.equal(redisFanoutChannel(3, 'celery.pidbox'), '/3.celery.pidbox');
  assert.equal(redisFanoutChannel(0, 'celeryev', 'worker.heartbeat'), '/0.celeryev/worker.heartbeat');
  assert.deepEqual(NODE_QUEUE_ARGUMENTS, { 'x-expires': 10000, 'x-message-ttl': 300000 });
  // python3 -c "from kombu import Queue, Exchange; print(Queue('q', Exchange('q'), routing_key='q').as_dict(recurse=True))"
  const info = activeQueueInfo('q', null);
  assert.equal(info.name, 'q');
  assert.deepEqual(info.exchange, {
    name: 'q',
    type: 'direct',
    arguments: null,
    durable: true,
    passive: false,
    auto_delete: false,
    delivery_mode: null,
    no_declare: false,
  });
  assert.equal(activeQueueInfo('q', { 'x-max-priority': 10 }).max_priority, 10);
});

test('node names: Celery -n templates, one distinct name per worker process', () => {
  assert.equal(nodeNameTemplate('posthog-plugins@%h', 1), 'posthog-plugins@%h');
  assert.equal(nodeNameTemplate('posthog-plugins@%h', 4), 'posthog-plugins-%i@%h');
  assert.equal(nodeNameTemplate('w%i@%h', 4), 'w%i@%h');
  assert.equal(nodeNameTemplate('box1', 1), 'posthog-plugins@box1');
  assert.equal(expandNodeName('posthog-plugins-%i@%h', 'web1.example.com', 2), 'posthog-plugins-2@web1.example.com');
  assert.equal(expandNodeName('%n.%d@%h%%', 'web1.example.com', 0), 'web1.example.com@web1.example.com%');
});

test('LamportClock: adjust takes max+1, forward increments', () => {
  const c = new LamportClock();
  assert.equal(c.forward(), 1);
  assert.equal(c.adjust(10), 11);
  assert.equal(c.adjust(3), 12);
  assert.equal(c.adjust('x'), 13);
  assert.equal(c.forward(), 14);
});

test('celery events: fields of Celery 5.2 dispatcher and heartbeat', () => {
  assert.equal(eventRoutingKey('worker-heartbeat'), 'worker.heartbeat');
  assert.equal(eventRoutingKey('task-succeeded'), 'task.succeeded');
  assert.equal(multiRoutingKey('task'), 'task.multi');
  // Python's time.timezone is seconds west of UTC; utcoffset() floor-divides by 3600.
  assert.equal(utcOffsetHours(0), 0);
  assert.equal(utcOffsetHours(-60), -1); // UTC+1
  assert.equal(utcOffsetHours(300), 5); // UTC-5
  assert.equal(utcOffsetHours(-330), -6); // UTC+5:30: -19800 // 3600 == -6
  assert.equal(platformSystem('Linux'), 'Linux');
  assert.equal(platformSystem('Windows_NT'), 'Windows');
  const e = celeryEvent(
    'worker-heartbeat',
    { hostname: 'n@h', pid: 42 },
    5,
    1_700_000_000_500,
    0,
    workerEventFields({ active: 1, processed: 9, loadavg: [0.123, 1, 2.555], system: 'Linux', version: '0.1.0' }),
  );
  assert.deepEqual(e, {
    hostname: 'n@h',
    utcoffset: 0,
    pid: 42,
    clock: 5,
    freq: 2,
    active: 1,
    processed: 9,
    loadavg: [0.12, 1, 2.56],
    sw_ident: 'posthog-plugins',
    sw_ver: '0.1.0',
    sw_sys: 'Linux',
    timestamp: 1_700_000_000.5,
    type: 'worker-heartbeat',
  });
  assert.deepEqual(
    taskReceivedFields({
      id: 'i',
      name: 'n',
      argsrepr: '()',
      kwargsrepr: '{}',
      rootId: 'i',
      parentId: null,
      retries: 0,
      eta: null,
      expires: null,
    }),
    {
      uuid: 'i',
      name: 'n',
      args: '()',
      kwargs: '{}',
      root_id: 'i',
      parent_id: null,
      retries: 0,
      eta: null,
      expires: null,
    },
  );
});
