import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { MAX_LOG_MESSAGE_CHARS, cutText, escapeText } from '../../src/log';

/**
 * Log lines are safe: whatever text a record carries (message bodies, set-aside reasons, plugin console lines,
 * error messages and stacks, metadata), the logger writes exactly one line per record, of bounded length, with
 * no control characters, in both formats. Checked on the real logger's stderr, in a child process.
 */
const LOG_MODULE = path.resolve(__dirname, '../../src/log.js');

/** Hostile texts: line breaks of every kind, terminal escapes, lone surrogates, NUL, and very long text. */
const HOSTILE: string[] = [
  'forged\n2026-12-07 info consumer loop ok',
  'crlf\r\nnext',
  'cr only\rover',
  '\u001b[2J\u001b[31mred\u001b[0m',
  'unicode line\u2028separator\u2029paragraph',
  'nel\u0085and c1 \u009b31m',
  'lone \ud800 high and \udc00 low, pair \ud83d\ude00 kept',
  'nul\u0000byte and del\u007f',
  'tab\there and vertical\u000btab, form\u000cfeed, \u001c\u001d\u001e',
  'x'.repeat(100_000) + '\nafter a long line',
];

/** Records the child writes per hostile text, plus one at the end. */
const RECORDS_PER_TEXT = 4;

const CHILD = `
  const { createLogger } = require(process.argv[1]);
  const texts = JSON.parse(process.argv[3]);
  const logger = createLogger('debug', process.argv[2]);
  let deep = {}; const root = deep; for (let i = 0; i < 20000; i++) { deep.d = {}; deep = deep.d; }
  const cycle = { name: 'cycle' }; cycle.self = cycle;
  const throwing = {}; Object.defineProperty(throwing, 'x', { enumerable: true, get() { throw new Error('getter\\nthrows'); } });
  for (const t of texts) {
    logger.warn(t);
    logger.info('as metadata', { text: t, nested: { a: [t, { b: t }] }, ['key ' + t.slice(0, 40)]: 1 });
    const err = new Error(t); err.stack = 'Error: ' + t + '\\n    at plugin.js:1:1\\n    at more';
    logger.error(err);
    logger.error('failed: ' + t, { error: err });
  }
  logger.warn('deep, cyclic, throwing and odd metadata', { deep: root, cycle, throwing, buf: Buffer.from('\\n'), big: 10n, fn() {} });
  logger.on('finish', () => setTimeout(() => process.exit(0), 50));
  logger.end();
`;

/** The child's stderr lines (the text after the last newline must be empty: every record ends its line). */
function logLines(format: 'pretty' | 'json'): string[] {
  // The texts travel as JSON in argv: lone surrogates survive as escapes.
  const child = spawnSync(process.execPath, ['-e', CHILD, LOG_MODULE, format, JSON.stringify(HOSTILE)], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(child.status, 0, `child failed: ${child.stderr.slice(-2000)}`);
  const lines = child.stderr.split('\n');
  assert.equal(lines.pop(), '', 'the output ends with a complete line');
  return lines;
}

/** No C0/C1 control, DEL, Unicode line/paragraph separator or lone surrogate left on a line. */
const UNSAFE =
  /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

for (const format of ['pretty', 'json'] as const) {
  describe(`log format ${format}`, () => {
    test('one line per record, bounded, nothing that breaks a line or drives a terminal', () => {
      const lines = logLines(format);
      assert.equal(lines.length, HOSTILE.length * RECORDS_PER_TEXT + 1);
      for (const line of lines) {
        assert.doesNotMatch(line, UNSAFE, line.slice(0, 200));
        // Message, metadata strings and stack are cut: far below the 100,000-character text.
        assert.ok(line.length < 4 * MAX_LOG_MESSAGE_CHARS, `a line of ${line.length} characters`);
      }
      if (format === 'json') {
        const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
        // Short texts come through the JSON encoding unchanged: escaping is only how they are written.
        for (let i = 0; i < HOSTILE.length - 1; i++) {
          const text = HOSTILE[i]!;
          assert.equal(records[i * RECORDS_PER_TEXT]!['message'], text);
          assert.equal(records[i * RECORDS_PER_TEXT + 1]!['text'], text);
        }
        const last = records[records.length - 1]!;
        assert.equal(last['big'], '10');
        assert.equal(last['buf'], '<1 bytes>');
        assert.equal(last['throwing'], '[unreadable: getter\nthrows]');
      } else {
        assert.match(lines[0]!, / warn forged\\n2026-12-07 info consumer loop ok$/);
        assert.match(lines[3 * RECORDS_PER_TEXT]!, / warn \\x1b\[2J\\x1b\[31mred\\x1b\[0m$/);
      }
    });
  });
}

describe('escapeText and cutText', () => {
  test('escapes every line break and control, keeps surrogate pairs, cuts without splitting a pair', () => {
    assert.equal(
      escapeText('a\nb\r\u2028\u0085\u001b\ud800x\ud83d\ude00'),
      'a\\nb\\r\\u2028\\x85\\x1b\\ud800x\ud83d\ude00',
    );
    assert.equal(cutText('ab\ud83d\ude00cd', 3), 'ab…(4 more characters)');
    assert.equal(cutText('short', 10), 'short');
  });
});
