import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeTaskV2 } from '../../protocol/encode';
import type { OutgoingTask } from '../../protocol/types';
import { V2_PLAIN, V2_PRIORITY5_ETA } from './captures';
import { decodeOk, envelopeOk } from './helpers';

const BASE: OutgoingTask = {
  task: 'research.tasks.add',
  id: '11111111-1111-4111-8111-111111111111',
  args: [2, 2],
  kwargs: { z: 3 },
  origin: 'posthog-plugins-1@host',
};

test('encodeTaskV2: full v2 header set, properties and body exactly', () => {
  const msg = encodeTaskV2(BASE);
  assert.deepEqual(msg.headers, {
    lang: 'js',
    task: 'research.tasks.add',
    id: '11111111-1111-4111-8111-111111111111',
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: '11111111-1111-4111-8111-111111111111',
    parent_id: null,
    argsrepr: '[2, 2]',
    kwargsrepr: "{'z': 3}",
    origin: 'posthog-plugins-1@host',
    ignore_result: false,
  });
  assert.deepEqual(msg.properties, {
    correlation_id: '11111111-1111-4111-8111-111111111111',
    reply_to: '',
    delivery_mode: 2,
    priority: 0,
  });
  assert.equal(msg.contentType, 'application/json');
  assert.equal(msg.contentEncoding, 'utf-8');
  assert.equal(
    msg.body.toString('utf8'),
    '[[2,2],{"z":3},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]',
  );
});

test('encodeTaskV2: same header keys, in the same order, as Python 5.2.6 (capture A.1)', () => {
  const python = envelopeOk(V2_PLAIN).message.headers;
  assert.deepEqual(Object.keys(encodeTaskV2(BASE).headers), Object.keys(python));
  // The body JSON means the same as Python's.
  const ours = JSON.parse(encodeTaskV2(BASE).body.toString());
  assert.deepEqual(ours, JSON.parse(envelopeOk(V2_PLAIN).message.body.toString()));
});

test('encodeTaskV2: eta / expires in Python isoformat with +00:00; priority, root and parent ids', () => {
  const msg = encodeTaskV2({
    ...BASE,
    id: '22222222-2222-4222-8222-222222222222',
    args: [1],
    kwargs: {},
    eta: new Date('2026-11-25T11:38:10.197Z'),
    expires: new Date('2026-11-25T11:42:10Z'),
    priority: 5,
    rootId: 'root-1',
    parentId: 'parent-1',
  });
  assert.equal(msg.headers.eta, '2026-11-25T11:38:10.197000+00:00');
  assert.equal(msg.headers.expires, '2026-11-25T11:42:10+00:00');
  assert.equal(msg.headers.root_id, 'root-1');
  assert.equal(msg.headers.parent_id, 'parent-1');
  assert.equal(msg.properties.priority, 5);
  // Python's own parser-facing values round-trip through our decoder to the same instants as the capture.
  const cap = decodeOk(envelopeOk(V2_PRIORITY5_ETA).message);
  const ours = decodeOk(msg);
  assert.equal(ours.eta?.getTime(), cap.eta?.getTime());
  assert.equal(ours.rootId, 'root-1');
  assert.equal(ours.parentId, 'parent-1');
});

test('encodeTaskV2: argsrepr is Python-like and truncated to 1024 chars', () => {
  const msg = encodeTaskV2({ ...BASE, args: ['x'.repeat(5000)], kwargs: { a: [null, true, 1.5] } });
  const argsrepr = msg.headers.argsrepr as string;
  assert.equal(argsrepr.length, 1024);
  assert.equal(argsrepr.slice(0, 4), "['xx");
  assert.equal(argsrepr.slice(-4), 'x...');
  assert.equal(msg.headers.kwargsrepr, "{'a': [None, True, 1.5]}");
});

test('encodeTaskV2: non-ASCII text is carried as UTF-8', () => {
  const msg = encodeTaskV2({ ...BASE, args: ['é😀'], kwargs: {} });
  assert.deepEqual(JSON.parse(msg.body.toString('utf8'))[0], ['é😀']);
  assert.equal(msg.headers.argsrepr, "['é😀']");
});

test('encodeTaskV2: refuses anything that would crash or confuse a Python worker', () => {
  const bad = (t: Partial<OutgoingTask> & Record<string, unknown>) => () =>
    encodeTaskV2({ ...BASE, ...t } as OutgoingTask);
  assert.throws(
    bad({ id: '' }),
    /^Error: cannot encode task "research.tasks.add" id "": id must be a non-empty string, got string ""$/,
  );
  assert.throws(bad({ id: undefined }), /id must be a non-empty string, got null/);
  assert.throws(bad({ task: '' }), /task name must be a non-empty string/);
  assert.throws(
    bad({ task: undefined }),
    /cannot encode task \? id "1111.*task name must be a non-empty string, got null/,
  );
  assert.throws(bad({ args: {} as never }), /args must be an array, got object/);
  assert.throws(bad({ args: null as never }), /args must be an array, got null/);
  assert.throws(bad({ kwargs: [] as never }), /kwargs must be an object, got array of 0/);
  assert.throws(bad({ kwargs: null as never }), /kwargs must be an object, got null/);
  assert.throws(bad({ args: [NaN] }), /args: .*non-finite number NaN/);
  assert.throws(bad({ args: [undefined as never] }), /args: .*undefined as an array item/);
  assert.throws(
    bad({ kwargs: { x: { __type__: 'uuid', __value__: 'y' } } }),
    /kwargs: .*__type__ and __value__ \(at key "x"\)/,
  );
  assert.throws(bad({ priority: 2.5 }), /priority must be an integer 0..255, got 2.5/);
  assert.throws(bad({ priority: -1 }), /priority must be an integer 0..255/);
  assert.throws(bad({ eta: new Date('nope') }), /eta must be a valid Date or null/);
  assert.throws(
    bad({ expires: new Date('+010000-01-01T00:00:00Z') }),
    /expires: year 10000 is outside Python's datetime range/,
  );
  assert.throws(bad({ origin: undefined }), /origin must be a string/);
  assert.throws(bad({ parentId: 5 as never }), /parentId must be a string or null/);
});
