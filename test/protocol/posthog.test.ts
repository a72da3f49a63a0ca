import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  IngestionArgs,
  PROCESS_EVENT,
  PROCESS_EVENT_WITH_PLUGINS,
  PluginEvent,
  ingestionArgsFromTask,
  processEventTask,
  processEventWithPluginsTask,
  toPluginEvent,
  toProcessEventKwargs,
} from '../../protocol/posthog';
import { encodeTaskV2 } from '../../protocol/encode';
import { buildEnvelope } from '../../protocol/redis-envelope';
import { derivedUuid } from '../../protocol/ids';
import type { JsonObject, JsonValue, TaskMessage } from '../../protocol/types';
import { decodeOk, envelopeOk, jsonMessage } from './helpers';

const DATA: JsonObject = {
  event: '$pageview',
  properties: { $current_url: 'https://example.com/', token: 'phc_x' },
  timestamp: '2020-11-02T22:13:06.123Z',
};
const ARGS7: JsonValue[] = [
  'user-1',
  '127.0.0.1',
  'http://localhost:8000',
  DATA,
  2,
  '2020-11-02T22:13:07.000001+00:00',
  '2020-11-02T22:13:06.500Z',
];

function task(args: JsonValue[], kwargs: JsonObject = {}): TaskMessage {
  return decodeOk(jsonMessage({ task: PROCESS_EVENT_WITH_PLUGINS, id: 'in-1' }, [args, kwargs, null]));
}

function argsOk(t: TaskMessage): IngestionArgs {
  const r = ingestionArgsFromTask(t);
  if (!r.ok) assert.fail(r.reason);
  return r.args;
}

function reasonOf(t: TaskMessage): string {
  const r = ingestionArgsFromTask(t);
  if (r.ok) assert.fail('expected a failure');
  return r.reason;
}

const EXPECTED: IngestionArgs = {
  distinct_id: 'user-1',
  ip: '127.0.0.1',
  site_url: 'http://localhost:8000',
  data: DATA,
  team_id: 2,
  now: '2020-11-02T22:13:07.000001+00:00',
  sent_at: '2020-11-02T22:13:06.500Z',
};

test('task names', () => {
  assert.equal(PROCESS_EVENT_WITH_PLUGINS, 'posthog.tasks.process_event.process_event_with_plugins');
  assert.equal(PROCESS_EVENT, 'posthog.tasks.process_event.process_event');
});

test('ingestionArgsFromTask: 7 positional args as Django sends them', () => {
  assert.deepEqual(argsOk(task(ARGS7)), EXPECTED);
});

test('ingestionArgsFromTask: 6 positional args → sent_at null', () => {
  assert.deepEqual(argsOk(task(ARGS7.slice(0, 6))), { ...EXPECTED, sent_at: null });
});

test('ingestionArgsFromTask: keywords only, and mixed positional + keywords', () => {
  const names = ['distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at'];
  const kw = Object.fromEntries(names.map((n, i) => [n, ARGS7[i]]));
  assert.deepEqual(argsOk(task([], kw)), EXPECTED);
  const { data, team_id, now, sent_at } = kw;
  assert.deepEqual(argsOk(task(ARGS7.slice(0, 3), { sent_at, now, team_id, data })), EXPECTED);
});

test('ingestionArgsFromTask: binding errors like Python', () => {
  assert.equal(
    reasonOf(task([...ARGS7, 'extra'])),
    `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: takes at most 7 positional arguments but 8 were given`,
  );
  assert.equal(
    reasonOf(task(ARGS7, { colour: 'red' })),
    `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: got an unexpected keyword argument 'colour'`,
  );
  assert.equal(
    reasonOf(task(ARGS7, { ip: null })),
    `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: got multiple values for argument 'ip'`,
  );
  assert.equal(
    reasonOf(task(ARGS7.slice(0, 5))),
    `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: missing required argument 'now'`,
  );
  assert.equal(
    reasonOf(task([])),
    `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: missing required arguments 'distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now'`,
  );
});

test('ingestionArgsFromTask: type rules', () => {
  const withArg = (i: number, v: JsonValue) => {
    const a = [...ARGS7];
    a[i] = v;
    return task(a);
  };
  const prefix = `${PROCESS_EVENT_WITH_PLUGINS}[in-1]: `;
  assert.equal(argsOk(withArg(0, 12345)).distinct_id, '12345');
  assert.equal(
    reasonOf(withArg(0, 2 ** 60)),
    `${prefix}distinct_id must be a string or a safe integer, got number ${2 ** 60}`,
  );
  assert.equal(reasonOf(withArg(0, 1.5)), `${prefix}distinct_id must be a string or a safe integer, got number 1.5`);
  assert.equal(reasonOf(withArg(0, null)), `${prefix}distinct_id must be a string or a safe integer, got null`);
  assert.equal(argsOk(withArg(1, null)).ip, null);
  assert.equal(reasonOf(withArg(1, 5)), `${prefix}ip must be a string or null, got number 5`);
  assert.equal(argsOk(withArg(2, null)).site_url, '');
  assert.equal(reasonOf(withArg(2, [])), `${prefix}site_url must be a string or null, got array of 0`);
  assert.equal(reasonOf(withArg(3, [1])), `${prefix}data must be an object, got array of 1`);
  assert.equal(reasonOf(withArg(3, null)), `${prefix}data must be an object, got null`);
  assert.equal(argsOk(withArg(4, '42')).team_id, 42);
  assert.equal(reasonOf(withArg(4, 'abc')), `${prefix}team_id must be an integer, got string "abc"`);
  assert.equal(reasonOf(withArg(4, 2.5)), `${prefix}team_id must be an integer, got number 2.5`);
  assert.equal(reasonOf(withArg(4, true)), `${prefix}team_id must be an integer, got boolean true`);
  assert.equal(reasonOf(withArg(5, null)), `${prefix}now must be a string, got null`);
  assert.equal(reasonOf(withArg(6, 17)), `${prefix}sent_at must be a string or null, got number 17`);
  assert.equal(argsOk(withArg(6, null)).sent_at, null);
});

test('toPluginEvent: six fields from args first, then data; data cannot override them', () => {
  const args: IngestionArgs = {
    ...EXPECTED,
    data: { ...DATA, distinct_id: 999, team_id: 666, ip: 'spoofed', uuid: 'u-1' },
  };
  const event = toPluginEvent(args);
  assert.deepEqual(Object.keys(event), [
    'distinct_id',
    'ip',
    'site_url',
    'team_id',
    'now',
    'sent_at',
    'event',
    'properties',
    'timestamp',
    'uuid',
  ]);
  assert.deepEqual(event, {
    distinct_id: 'user-1',
    ip: '127.0.0.1',
    site_url: 'http://localhost:8000',
    team_id: 2,
    now: '2020-11-02T22:13:07.000001+00:00',
    sent_at: '2020-11-02T22:13:06.500Z',
    event: '$pageview',
    properties: DATA.properties,
    timestamp: DATA.timestamp,
    uuid: 'u-1',
  });
});

test('toProcessEventKwargs: splits the event back; team_id is always the original', () => {
  const event = toPluginEvent(EXPECTED);
  assert.deepEqual(toProcessEventKwargs(event, EXPECTED), {
    distinct_id: 'user-1',
    ip: '127.0.0.1',
    site_url: 'http://localhost:8000',
    data: DATA,
    team_id: 2,
    now: '2020-11-02T22:13:07.000001+00:00',
    sent_at: '2020-11-02T22:13:06.500Z',
  });
  const changed = {
    ...event,
    team_id: 99,
    distinct_id: 'renamed',
    ip: null,
    properties: { added: true },
  } as PluginEvent;
  const kw = toProcessEventKwargs(changed, EXPECTED);
  assert.equal(kw.team_id, 2);
  assert.equal(kw.distinct_id, 'renamed');
  assert.equal(kw.ip, null);
  assert.deepEqual(kw.data, { event: '$pageview', properties: { added: true }, timestamp: DATA.timestamp });
});

test('toProcessEventKwargs: missing optional fields become null/""; wrong types throw', () => {
  const event = toPluginEvent(EXPECTED) as Record<string, unknown>;
  delete event.ip;
  delete event.sent_at;
  delete event.site_url;
  const kw = toProcessEventKwargs(event as PluginEvent, EXPECTED);
  assert.equal(kw.ip, null);
  assert.equal(kw.sent_at, null);
  assert.equal(kw.site_url, '');
  const bad = (patch: Record<string, unknown>) => () =>
    toProcessEventKwargs({ ...toPluginEvent(EXPECTED), ...patch } as PluginEvent, EXPECTED);
  assert.throws(
    bad({ distinct_id: { a: 1 } }),
    /^Error: plugin event field distinct_id must be a string, got object \(team 2\)$/,
  );
  assert.throws(bad({ now: 5 }), /plugin event field now must be a string, got number 5/);
  assert.throws(bad({ ip: 1 }), /plugin event field ip must be a string or null, got number 1/);
  assert.throws(bad({ sent_at: [] }), /plugin event field sent_at must be a string or null/);
  assert.throws(() => toProcessEventKwargs(null as never, EXPECTED), /plugin event must be an object, got null/);
});

test('processEventTask / processEventWithPluginsTask build the OutgoingTasks', () => {
  const kwargs = toProcessEventKwargs(toPluginEvent(EXPECTED), EXPECTED);
  assert.deepEqual(processEventTask(kwargs, { id: 'out-1', origin: 'w@h', parentId: 'in-1', rootId: 'in-1' }), {
    task: PROCESS_EVENT,
    id: 'out-1',
    args: [],
    kwargs,
    origin: 'w@h',
    parentId: 'in-1',
    rootId: 'in-1',
  });
  assert.deepEqual(processEventWithPluginsTask(EXPECTED, { id: 'c-1', origin: 'w@h' }), {
    task: PROCESS_EVENT_WITH_PLUGINS,
    id: 'c-1',
    args: ARGS7,
    kwargs: {},
    origin: 'w@h',
    parentId: null,
  });
});

test('whole ingestion hop over the Redis envelope: Django-shaped input → plugin event → process_event kwargs', () => {
  // Input as Django would enqueue it (7 positional args, kwargs {}), through the kombu envelope.
  const incoming = encodeTaskV2(processEventWithPluginsTask(EXPECTED, { id: 'in-9', origin: 'gen1@web' }));
  const inEnv = envelopeOk(
    buildEnvelope(incoming, { deliveryTag: 'd-9', exchange: '', routingKey: 'posthog-plugins' }),
  );
  const inTask = decodeOk(inEnv.message);
  assert.equal(inTask.task, PROCESS_EVENT_WITH_PLUGINS);
  const args = argsOk(inTask);
  assert.deepEqual(args, EXPECTED);

  // A plugin adds a property.
  const event = toPluginEvent(args);
  (event.properties as JsonObject).plugin = 'ran';

  const outId = derivedUuid(`${inTask.id}:process_event`);
  const out = encodeTaskV2(
    processEventTask(toProcessEventKwargs(event, args), {
      id: outId,
      origin: 'w@h',
      parentId: inTask.id,
      rootId: inTask.rootId ?? inTask.id,
    }),
  );
  const outTask = decodeOk(
    envelopeOk(buildEnvelope(out, { deliveryTag: 'd-10', exchange: '', routingKey: 'celery' })).message,
  );
  assert.equal(outTask.task, PROCESS_EVENT);
  assert.equal(outTask.id, outId);
  assert.equal(outTask.parentId, 'in-9');
  assert.equal(outTask.rootId, 'in-9');
  assert.deepEqual(outTask.args, []);
  assert.deepEqual(outTask.kwargs, {
    distinct_id: 'user-1',
    ip: '127.0.0.1',
    site_url: 'http://localhost:8000',
    data: { ...DATA, properties: { ...(DATA.properties as JsonObject), plugin: 'ran' } },
    team_id: 2,
    now: '2020-11-02T22:13:07.000001+00:00',
    sent_at: '2020-11-02T22:13:06.500Z',
  });
  // And process_event's kwargs bind back to the same parameters (Python would call it by keyword).
  const back = ingestionArgsFromTask(outTask);
  assert.equal(back.ok && back.args.team_id, 2);
});
