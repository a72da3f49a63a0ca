import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ErrorReport, RunSummary } from '../../../../src/plugins/vm/contract';
import { createConsole, fmt } from '../../../../src/plugins/vm/guest/console';
import {
  describe as describeError,
  eventJson,
  intJson,
  jsonNumber,
  q,
  summaryJson,
} from '../../../../src/plugins/vm/guest/json';
import { createModuleSystem } from '../../../../src/plugins/vm/guest/modules';
import { cut, put } from '../../../../src/plugins/vm/guest/primordials';

/** Guest modules that need no isolate: JSON assembly, console formatting and limits, require. */

describe('guest JSON assembly', () => {
  test('q, intJson and jsonNumber give JSON text', () => {
    assert.equal(q('a"b\n'), '"a\\"b\\n"');
    assert.equal(q(12), '"12"');
    assert.equal(intJson(3, 'n'), '3');
    assert.equal(intJson('-4', 'n'), '-4');
    assert.throws(() => intJson(1.5, 'count'), { name: 'TypeError', message: 'count must be an integer, got 1.5' });
    assert.equal(jsonNumber(12.9), '12');
    assert.equal(jsonNumber(-1), 'null');
    assert.equal(jsonNumber(NaN), 'null');
    assert.equal(jsonNumber('5'), 'null');
  });

  test('an error report is valid JSON with every field cut, whatever was thrown', () => {
    const e = new RangeError('bad');
    const r = JSON.parse(describeError(3, e).json) as ErrorReport;
    assert.equal(r.i, 3);
    assert.equal(r.name, 'RangeError');
    assert.equal(r.message, 'bad');
    assert.match(r.stack!, /^RangeError: bad/);
    assert.equal(r.thrownString, undefined);

    assert.deepEqual(JSON.parse(describeError(0, 'plain').json), {
      i: 0,
      name: 'Error',
      message: 'plain',
      thrownString: true,
    });
    assert.deepEqual(JSON.parse(describeError(0, 42).json), { i: 0, name: 'Error', message: '42' });
    const long = JSON.parse(
      describeError(0, { name: 'N'.repeat(500), message: 'm'.repeat(5000), stack: 's'.repeat(20000) }).json,
    ) as ErrorReport;
    assert.equal(long.name, 'N'.repeat(200) + '…[truncated 300 chars]');
    assert.equal(long.message, 'm'.repeat(4096) + '…[truncated 904 chars]');
    assert.equal(long.stack, 's'.repeat(16384) + '…[truncated 3616 chars]');
    const hostile = {
      get name(): string {
        throw new Error('no');
      },
    };
    assert.deepEqual(JSON.parse(describeError(1, hostile).json), { i: 1, name: 'Error', message: 'unprintable error' });
    const d = describeError(0, new Error('x'));
    assert.equal(d.size, d.json.length);
  });

  test('an event must serialize to a JSON object', () => {
    assert.equal(eventJson({ event: 'e' }, 'processEvent'), '{"event":"e"}');
    assert.throws(() => eventJson([], 'processEvent'), /processEvent must return an event object .*got an array/);
    assert.throws(
      () => eventJson('x', 'processEventBatch'),
      /processEventBatch must return an event object .*got string/,
    );
    assert.throws(
      () => eventJson({ toJSON: () => 1 }, 'processEvent'),
      /the event returned by processEvent does not serialize to a JSON object/,
    );
  });

  test('the run summary is a RunSummary', () => {
    const errors = describeError(0, new Error('a')).json + ',' + describeError(2, 'b').json;
    const s = JSON.parse(summaryJson(10, errors)) as RunSummary;
    assert.equal(s.bytes, 10);
    assert.deepEqual(
      s.errors.map((e) => [e.i, e.message]),
      [
        [0, 'a'],
        [2, 'b'],
      ],
    );
    assert.deepEqual(JSON.parse(summaryJson(0, '')), { bytes: 0, errors: [] });
  });

  test('cut and put', () => {
    assert.equal(cut('abcdef', 6), 'abcdef');
    assert.equal(cut('abcdef', 2), 'ab…[truncated 4 chars]');
    const a: number[] = [];
    put(a, 0, 7);
    put(a, 1, 8);
    assert.deepEqual(a, [7, 8]);
  });
});

describe('guest console', () => {
  test('fmt: strings as is, errors as their stack, objects as JSON, the rest as String()', () => {
    assert.equal(fmt('s'), 's');
    assert.equal(fmt(undefined), 'undefined');
    assert.equal(fmt(null), 'null');
    assert.equal(fmt(1.5), '1.5');
    assert.equal(fmt({ a: [1] }), '{"a":[1]}');
    assert.equal(
      fmt(function named() {}),
      '[Function named]',
    );
    assert.equal(fmt(Object.defineProperty(() => 1, 'name', { value: '' })), '[Function anonymous]');
    assert.equal(fmt(Symbol('s')), 'Symbol(s)');
    assert.equal(fmt(10n), '10');
    const e = new TypeError('t');
    assert.equal(fmt(e), e.stack);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.equal(fmt(cyclic), '[unserializable object]');
  });

  test('one line per call, cut to maxLine; lines over the rate are counted and reported as dropped', () => {
    const lines: Array<[string, string]> = [];
    let now = 5000;
    const c = createConsole(
      (level, line) => void lines.push([level, line]),
      11,
      2,
      () => now,
    );
    c.console.log('a', 1, { b: 2 });
    c.console.warn('0123456789abcd');
    c.console.error('over the rate');
    c.console.info('also over');
    assert.deepEqual(lines, [
      ['log', 'a 1 {"b":2}'],
      ['warn', '0123456789a…[truncated 3 chars]'],
    ]);
    c.flushDropped();
    assert.deepEqual(lines[2], ['dropped', '2']);
    c.flushDropped();
    assert.equal(lines.length, 3, 'nothing more to report');
    c.console.debug('still over');
    now += 1000;
    c.console.debug('next second');
    assert.deepEqual(lines.slice(3), [
      ['dropped', '1'],
      ['debug', 'next second'],
    ]);
  });

  test('a throwing argument or host callback never reaches the plugin', () => {
    const lines: string[] = [];
    const c = createConsole((_, line) => void lines.push(line), 100, 100);
    const bad = {
      toJSON(): never {
        throw new Error('no');
      },
    };
    c.console.log(bad);
    const throwing = Object.defineProperty(() => 1, 'name', {
      get(): never {
        throw new Error('no');
      },
    });
    c.console.log('x', throwing);
    assert.deepEqual(lines, ['[unserializable object]', '[unprintable console arguments]']);
    const broken = createConsole(
      () => {
        throw new Error('host gone');
      },
      100,
      100,
    );
    assert.doesNotThrow(() => broken.console.log('x'));
  });
});

describe('guest require', () => {
  test('only the host modules resolve; any other name throws the host message', () => {
    const m = createModuleSystem('Cannot import "%s": not available here');
    m.hostModules['node-fetch'] = 'fetch!';
    assert.equal(m.require('node-fetch'), 'fetch!');
    assert.throws(() => m.require('fs'), { name: 'Error', message: 'Cannot import "fs": not available here' });
    assert.throws(() => m.require('toString'), /Cannot import "toString"/, 'no inherited properties');
    assert.equal(m.require.name, 'require');
    assert.deepEqual(m.module, { exports: {} });
  });
});
