/**
 * A seeded corpus of malformed (and some odd but valid) Celery messages, the same for a given seed: deep nesting in
 * body, headers and event; a 20 MB entry; bad UTF-8 and lone surrogates; bogus compression and a zlib bomb;
 * pickle, YAML and msgpack content types; wrong arities and types; bad eta/expires/retries; unknown tasks; broken
 * Redis envelopes. Every message carries a unique marker (`fz<seed>x<n>`) in its Redis delivery tag, its AMQP
 * correlation id and, when it is a valid task, in its event's properties (`fuzz`), so that wherever it ends up (set
 * aside, published to Python, expired) it can be found again. Each message says what must become of it.
 *
 * Broker-neutral: `message` is rendered by redisEnvelope() or amqpPublish(); `redisRaw` entries exist only on Redis
 * (an envelope that is itself broken), `amqpOnly` ones only on RabbitMQ.
 *
 * Over 500 lines because it is the corpus: one entry per shape, in one file so that a seed names the whole set.
 */
import { deflateSync } from 'node:zlib';
import { prng } from './prng';

export const PLUGINS_TASK = 'posthog.tasks.process_event.process_event_with_plugins';

export type Expectation = 'set-aside' | 'published' | 'expired';

export interface FuzzMessage {
  marker: string;
  shape: string;
  expect: Expectation;
  /** For set-aside messages whose reason is known exactly enough to check. */
  reason?: RegExp;
  /** For expired messages: the task id the worker's log names. */
  taskId?: string;
  /** A Celery message: headers as JSON text (any depth), body bytes, content type and encoding. */
  message?: { headersJson: string; body: Buffer; contentType: string | null; contentEncoding: string | null };
  /** A whole Redis list item, written as it is (Redis only). */
  redisRaw?: string | Buffer;
  redisOnly?: boolean;
  amqpOnly?: boolean;
}

export interface CorpusOptions {
  seed: number;
  /** Messages besides the one-off large ones (every shape appears at least once when count ≥ the shape count). */
  count: number;
  /** Team of the valid tasks (its plugins run on them). */
  teamId: number;
  /** The instant etas are relative to (ms since the epoch): the corpus is a function of seed and this. */
  nowMs: number;
}

interface Ctx {
  rnd: () => number;
  marker: string;
  id: string;
  teamId: number;
  nowMs: number;
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  /** Valid positional args of process_event_with_plugins (the event carries the marker). */
  args(extraProperties?: string): string;
  /** A valid v2 body `[args, kwargs, embed]` as JSON text. */
  body(args?: string): string;
  /** Minimal valid v2 headers as JSON text, with overrides (JSON text values). */
  headers(over?: Record<string, string>): string;
}

type Shape = { name: string; once?: boolean; make: (c: Ctx) => Omit<FuzzMessage, 'marker' | 'shape'> };

const json = (v: unknown): string => JSON.stringify(v);
const nest = (depth: number, inner: string, open = '[', close = ']'): string =>
  open.repeat(depth) + inner + close.repeat(depth);
/** `{"d": {"d": … inner … }}` as text: any depth without recursion. */
const nestObjects = (depth: number, inner: string): string => '{"d": '.repeat(depth) + inner + '}'.repeat(depth);

type ContentType = { contentType: string | null; contentEncoding: string | null };
const AMQP_JSON: ContentType = { contentType: 'application/json', contentEncoding: 'utf-8' };

function task(c: Ctx, body: string, headers = c.headers(), type = AMQP_JSON): NonNullable<FuzzMessage['message']> {
  return {
    headersJson: headers,
    body: Buffer.from(body),
    contentType: type.contentType,
    contentEncoding: type.contentEncoding,
  };
}

function bytesTask(c: Ctx, body: Buffer, headers = c.headers(), type = AMQP_JSON): NonNullable<FuzzMessage['message']> {
  return { headersJson: headers, body, contentType: type.contentType, contentEncoding: type.contentEncoding };
}

const setAside = (message: FuzzMessage['message'], reason?: RegExp): Omit<FuzzMessage, 'marker' | 'shape'> => ({
  expect: 'set-aside',
  message,
  reason,
});
const published = (message: FuzzMessage['message']): Omit<FuzzMessage, 'marker' | 'shape'> => ({
  expect: 'published',
  message,
});
const DEEP = /too deeply nested/;

/** Random text with characters from every plane, quotes and backslashes (valid UTF-16: no lone surrogates). */
function oddText(c: Ctx, n: number): string {
  const pool = [
    'a',
    'Z',
    ' ',
    '"',
    '\\',
    '\n',
    '\t',
    '\u0000',
    '\u001b',
    'é',
    '€',
    '\u2028',
    '\ufeff',
    '😀',
    '中',
    '\u0085',
    '{',
    ']',
  ];
  let s = '';
  for (let i = 0; i < n; i++) s += c.pick(pool);
  return s;
}

const SHAPES: Shape[] = [
  // --- valid tasks, odd but acceptable: they must come out to Python -----------------------------------------
  { name: 'valid v2', make: (c) => published(task(c, c.body())) },
  { name: 'valid with odd text', make: (c) => published(task(c, c.body(c.args(`, "odd": ${json(oddText(c, 40))}`)))) },
  {
    name: 'valid with lone surrogates (JSON escapes)',
    make: (c) => published(task(c, c.body(c.args(', "lone": "\\ud800 and \\udfff"')))),
  },
  { name: 'valid nested to the limit', make: (c) => published(task(c, c.body(c.args(`, "deep": ${nest(120, '1')}`)))) },
  {
    name: 'valid zlib',
    make: (c) =>
      published(bytesTask(c, deflateSync(Buffer.from(c.body())), c.headers({ compression: '"application/x-gzip"' }))),
  },
  {
    name: 'valid kwargs form',
    make: (c) => {
      const a = JSON.parse(`[${c.args()}]`) as unknown[];
      const kwargs = Object.fromEntries(
        ['distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at'].map((k, i) => [k, a[i]]),
      );
      return published(task(c, `[[], ${json(kwargs)}, null]`));
    },
  },
  {
    name: 'valid v1',
    make: (c) =>
      published(task(c, json({ task: PLUGINS_TASK, id: c.id, args: JSON.parse(`[${c.args()}]`), kwargs: {} }), '{}')),
  },
  {
    name: 'valid eta a second ahead',
    make: (c) => published(task(c, c.body(), c.headers({ eta: json(new Date(c.nowMs + 1500).toISOString()) }))),
  },
  {
    name: 'expired',
    make: (c) => ({
      expect: 'expired',
      taskId: c.id,
      message: task(c, c.body(), c.headers({ expires: '"2001-01-01T00:00:00+00:00"' })),
    }),
  },
  {
    name: 'valid with __proto__ and constructor keys',
    make: (c) =>
      published(
        task(
          c,
          c.body(c.args(', "__proto__": {"polluted": true}, "constructor": {"prototype": {"x": 1}}')),
          c.headers({ __proto__: '{"polluted": true}' }),
        ),
      ),
  },
  { name: 'valid with duplicate keys', make: (c) => published(task(c, c.body(c.args(', "dup": 1, "dup": 2')))) },
  {
    name: 'valid with a kombu tagged datetime',
    make: (c) =>
      published(
        task(c, c.body(c.args(', "at": {"__type__": "datetime", "__value__": "2020-11-02T22:13:05.987000+00:00"}'))),
      ),
  },
  {
    name: 'valid with 20,000 properties',
    make: (c) =>
      published(task(c, c.body(c.args(Array.from({ length: 20_000 }, (_, i) => `, "p${i}": ${i}`).join(''))))),
  },
  {
    name: 'valid v1 with the arguments as kwargs',
    make: (c) => {
      const a = JSON.parse(`[${c.args()}]`) as unknown[];
      const kwargs = Object.fromEntries(
        ['distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at'].map((k, i) => [k, a[i]]),
      );
      return published(task(c, json({ task: PLUGINS_TASK, id: c.id, args: [], kwargs, utc: true }), '{}'));
    },
  },
  {
    name: 'valid large event (2 MB)',
    once: true,
    make: (c) => published(task(c, c.body(c.args(`, "big": ${json('b'.repeat(2 * 1024 * 1024))}`)))),
  },
  // --- nesting ----------------------------------------------------------------------------------------------
  {
    name: 'event nested 5,000 deep',
    make: (c) => setAside(task(c, c.body(c.args(`, "deep": ${nestObjects(5_000, '1')}`))), DEEP),
  },
  {
    name: 'event nested 200,000 deep',
    once: true,
    make: (c) => setAside(task(c, c.body(c.args(`, "deep": ${nest(200_000, '')}`))), DEEP),
  },
  {
    name: 'event nested just past the limit',
    make: (c) => setAside(task(c, c.body(c.args(`, "deep": ${nest(130, '1')}`))), DEEP),
  },
  { name: 'body nothing but 50,000 brackets', make: (c) => setAside(task(c, nest(50_000, '')), DEEP) },
  {
    name: 'headers nested 300 deep',
    make: (c) => setAside(task(c, c.body(), c.headers({ x: nestObjects(300, '1') })), DEEP),
  },
  {
    name: 'headers nested 5,000 deep (Redis envelope)',
    make: (c) => ({ ...setAside(task(c, c.body(), c.headers({ x: nest(5_000, '1') })), DEEP), redisOnly: true }),
  },
  // Around the depth where amqplib still decodes a table that JSON.stringify (the set-aside record) cannot write.
  ...[3_600, 4_000, 4_400, 4_800].map((depth): Shape => ({
    name: `headers nested ${depth} deep (AMQP table)`,
    make: (c) => ({
      ...setAside(
        task(c, c.body(), c.headers({ x: nestObjects(depth, '1') })),
        /message headers too deeply nested|AMQP headers table cannot be decoded/,
      ),
      amqpOnly: true,
    }),
  })),
  {
    name: 'headers nested 1,500 deep (AMQP table)',
    make: (c) => ({ ...setAside(task(c, c.body(), c.headers({ x: nestObjects(1_500, '1') })), DEEP), amqpOnly: true }),
  },
  // --- size -------------------------------------------------------------------------------------------------
  {
    name: '20 MB entry',
    once: true,
    make: (c) =>
      setAside(
        task(c, c.body(c.args(`, "huge": ${json('h'.repeat(20 * 1024 * 1024))}`))),
        /(bytes|characters), more than the limit/,
      ),
  },
  {
    name: 'zlib bomb',
    once: true,
    make: (c) =>
      setAside(
        bytesTask(
          c,
          deflateSync(Buffer.alloc(200 * 1024 * 1024, 0x20), { level: 9 }),
          c.headers({ compression: '"zlib"' }),
        ),
        /output exceeds/,
      ),
  },
  // --- encoding -----------------------------------------------------------------------------------------------
  {
    name: 'bad UTF-8 in body',
    make: (c) =>
      setAside(
        bytesTask(
          c,
          Buffer.concat([Buffer.from(c.body().slice(0, 20)), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('"]')]),
        ),
        /not valid UTF-8/,
      ),
  },
  {
    name: 'lone surrogate as UTF-8 bytes',
    make: (c) =>
      setAside(
        bytesTask(
          c,
          Buffer.concat([Buffer.from('[["'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"], {}, null]')]),
        ),
        /not valid UTF-8/,
      ),
  },
  { name: 'single quotes in body', make: (c) => setAside(task(c, c.body(c.args(", 'q': 1"))), /not valid JSON/) },
  {
    name: 'trailing comma in body',
    make: (c) => setAside(task(c, c.body(c.args(', "t": [1, 2,]'))), /not valid JSON/),
  },
  { name: 'truncated body', make: (c) => setAside(task(c, c.body().slice(0, 10 + c.int(40))), /not valid JSON/) },
  {
    name: 'random bytes',
    make: (c) => setAside(bytesTask(c, Buffer.from(Array.from({ length: 1 + c.int(300) }, () => c.int(256))))),
  },
  // --- compression ------------------------------------------------------------------------------------------
  {
    name: 'zlib header, plain body',
    make: (c) => setAside(task(c, c.body(), c.headers({ compression: '"application/x-gzip"' })), /cannot decompress/),
  },
  {
    name: 'bz2 compression',
    make: (c) =>
      setAside(task(c, c.body(), c.headers({ compression: '"application/x-bz2"' })), /unsupported compression/),
  },
  {
    name: 'unknown compression',
    make: (c) =>
      setAside(
        task(c, c.body(), c.headers({ compression: json(c.pick(['lzw', 'snappy', 'x'.repeat(500)])) })),
        /unknown compression/,
      ),
  },
  {
    name: 'compression not a string',
    make: (c) => setAside(task(c, c.body(), c.headers({ compression: '7' })), /compression header must be a string/),
  },
  {
    name: 'truncated zlib',
    make: (c) =>
      setAside(
        bytesTask(c, deflateSync(Buffer.from(c.body())).subarray(0, 12), c.headers({ compression: '"zlib"' })),
        /cannot decompress/,
      ),
  },
  // --- serializers ------------------------------------------------------------------------------------------
  {
    name: 'pickle',
    make: (c) =>
      setAside(
        bytesTask(c, Buffer.from('80049505000000000000008c01789400', 'hex'), c.headers(), {
          contentType: 'application/x-python-serialize',
          contentEncoding: 'binary',
        }),
        /pickle/,
      ),
  },
  {
    name: 'yaml',
    make: (c) =>
      setAside(
        task(c, '- [a, b]\n- {}\n', c.headers(), { contentType: 'application/x-yaml', contentEncoding: 'utf-8' }),
        /yaml/,
      ),
  },
  {
    name: 'msgpack',
    make: (c) =>
      setAside(
        bytesTask(c, Buffer.from('93909080', 'hex'), c.headers(), {
          contentType: 'application/x-msgpack',
          contentEncoding: 'binary',
        }),
        /msgpack/,
      ),
  },
  {
    name: 'no content type',
    make: (c) => setAside(task(c, c.body(), c.headers(), { contentType: null, contentEncoding: null }), /content type/),
  },
  {
    name: 'latin-1 encoding',
    make: (c) =>
      setAside(
        task(c, c.body(), c.headers(), { contentType: 'application/json', contentEncoding: 'latin-1' }),
        /content encoding/,
      ),
  },
  {
    name: 'content type with a line break',
    make: (c) =>
      setAside(
        task(c, c.body(), c.headers(), { contentType: 'text/evil\n2026 info forged line', contentEncoding: 'utf-8' }),
        /refusing to deserialize/,
      ),
  },
  // --- body shape -------------------------------------------------------------------------------------------
  { name: 'two-element body', make: (c) => setAside(task(c, `[[${c.args()}], {}]`), /2 elements/) },
  { name: 'four-element body', make: (c) => setAside(task(c, `[[${c.args()}], {}, null, 1]`), /4 elements/) },
  { name: 'args not an array', make: (c) => setAside(task(c, '[{"a": 1}, {}, null]'), /args must be an array/) },
  { name: 'kwargs an array', make: (c) => setAside(task(c, `[[${c.args()}], [], null]`), /kwargs must be an object/) },
  { name: 'embed a string', make: (c) => setAside(task(c, `[[${c.args()}], {}, "embed"]`), /embed must be an object/) },
  { name: 'body a number', make: (c) => setAside(task(c, String(c.int(1000))), /v2 body/) },
  // --- arity and types of process_event_with_plugins ----------------------------------------------------------
  {
    name: 'eight positional args',
    make: (c) => setAside(task(c, `[[${c.args()}, "extra"], {}, null]`), /at most 7 positional/),
  },
  {
    name: 'five positional args',
    make: (c) =>
      setAside(
        task(c, `[${JSON.stringify((JSON.parse(`[${c.args()}]`) as unknown[]).slice(0, 5))}, {}, null]`),
        /missing required argument/,
      ),
  },
  {
    name: 'unexpected kwarg',
    make: (c) => setAside(task(c, `[[${c.args()}], {"evil": 1}, null]`), /unexpected keyword argument/),
  },
  {
    name: 'argument twice',
    make: (c) => setAside(task(c, `[[${c.args()}], {"ip": "1.2.3.4"}, null]`), /multiple values/),
  },
  {
    name: '100,000 args',
    once: true,
    make: (c) => setAside(task(c, `[[${'0,'.repeat(99_999)}0], {}, null]`), /positional arguments/),
  },
  {
    name: 'distinct_id an object',
    make: (c) =>
      setAside(
        task(c, `[[{"x": 1}, "1.1.1.1", "", {"event": "e"}, ${c.teamId}, "2020-01-01T00:00:00Z", null], {}, null]`),
        /distinct_id must be/,
      ),
  },
  {
    name: 'team_id not an integer',
    make: (c) =>
      setAside(
        task(
          c,
          `[["d", "1.1.1.1", "", {"event": "e"}, ${c.pick(['"abc"', '1.5', 'null', '[2]', '1e400'])}, "2020-01-01T00:00:00Z", null], {}, null]`,
        ),
        /team_id must be an integer/,
      ),
  },
  {
    name: 'data an array',
    make: (c) =>
      setAside(
        task(c, `[["d", "1.1.1.1", "", [1, 2], ${c.teamId}, "2020-01-01T00:00:00Z", null], {}, null]`),
        /data must be an object/,
      ),
  },
  {
    name: 'now a number',
    make: (c) =>
      setAside(
        task(c, `[["d", "1.1.1.1", "", {"event": "e"}, ${c.teamId}, 1607300000, null], {}, null]`),
        /now must be a string/,
      ),
  },
  {
    name: 'ip a number',
    make: (c) =>
      setAside(
        task(c, `[["d", 127001, "", {"event": "e"}, ${c.teamId}, "2020-01-01T00:00:00Z", null], {}, null]`),
        /ip must be a string/,
      ),
  },
  {
    name: 'v1 args not an array',
    make: (c) =>
      setAside(
        task(c, json({ task: PLUGINS_TASK, id: c.id, args: 'x', kwargs: {} }), '{}'),
        /v1 args must be an array/,
      ),
  },
  {
    name: 'v1 without kwargs',
    make: (c) => setAside(task(c, json({ task: PLUGINS_TASK, id: c.id }), '{}'), /does not have args\/kwargs/),
  },
  {
    name: 'bad kombu tag',
    make: (c) => setAside(task(c, c.body(c.args(', "t": {"__type__": "pickle", "__value__": "x"}'))), /tagged value/),
  },
  // --- headers --------------------------------------------------------------------------------------------------
  {
    name: 'unknown task',
    make: (c) =>
      setAside(task(c, c.body(), c.headers({ task: json(`posthog.tasks.${oddText(c, 12)}`) })), /unknown task/),
  },
  {
    name: 'task name a number',
    make: (c) => setAside(task(c, c.body(), c.headers({ task: '42' })), /task name must be/),
  },
  { name: 'no task id', make: (c) => setAside(task(c, c.body(), c.headers({ id: 'null' })), /task id must be/) },
  {
    name: 'eta not a date',
    make: (c) =>
      setAside(
        task(
          c,
          c.body(),
          c.headers({ eta: json(c.pick(['tomorrow', '2020-13-45T00:00:00', '', '2020-01-01T25:00:00Z'])) }),
        ),
        /invalid eta/,
      ),
  },
  {
    name: 'eta a number',
    make: (c) => setAside(task(c, c.body(), c.headers({ eta: String(c.int(1e9)) })), /invalid eta/),
  },
  {
    name: 'expires garbage',
    make: (c) => setAside(task(c, c.body(), c.headers({ expires: json(oddText(c, 10)) })), /invalid expires/),
  },
  {
    name: 'retries negative',
    make: (c) => setAside(task(c, c.body(), c.headers({ retries: c.pick(['-1', '1.5', '"3"']) })), /retries must be/),
  },
  // --- broken Redis envelopes (Redis only) --------------------------------------------------------------------
  {
    name: 'envelope not JSON',
    make: (c) => ({ expect: 'set-aside', redisRaw: `not an envelope ${c.marker} ${oddText(c, 20)}`, redisOnly: true }),
  },
  {
    name: 'envelope a JSON array',
    make: (c) => ({ expect: 'set-aside', redisRaw: json([c.marker, 1, 2]), redisOnly: true }),
  },
  {
    name: 'envelope without delivery tag',
    make: (c) => ({
      expect: 'set-aside',
      redisRaw: json({ body: '', headers: {}, properties: { correlation_id: c.marker } }),
      redisOnly: true,
    }),
  },
  {
    name: 'envelope with bad base64',
    make: (c) => ({
      expect: 'set-aside',
      reason: /base64/,
      redisRaw: json({
        body: '!!!not base64!!!',
        'content-type': 'application/json',
        'content-encoding': 'utf-8',
        headers: {},
        properties: {
          delivery_tag: c.marker,
          delivery_info: { exchange: '', routing_key: 'posthog-plugins' },
          body_encoding: 'base64',
        },
      }),
      redisOnly: true,
    }),
  },
  {
    name: 'envelope with bad UTF-8 bytes',
    make: (c) => ({
      expect: 'set-aside',
      redisRaw: Buffer.concat([
        Buffer.from(`{"body": "x", "properties": {"delivery_tag": "${c.marker}", "x": "`),
        Buffer.from([0xff, 0xc0]),
        Buffer.from('"}'),
      ]),
      redisOnly: true,
    }),
  },
  {
    name: 'envelope nested 100,000 deep',
    once: true,
    make: (c) => ({
      expect: 'set-aside',
      redisRaw: `{"properties": {"delivery_tag": "${c.marker}"}, "headers": ${nest(100_000, '')}}`,
      redisOnly: true,
    }),
  },
];

function uuidFor(seed: number, n: number): string {
  const hex = (seed.toString(16).padStart(8, '0') + n.toString(16).padStart(24, '0')).slice(-32);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20)}`;
}

/** The corpus for a seed: every shape at least once (one-offs exactly once), then random shapes, shuffled. */
export function fuzzCorpus(opts: CorpusOptions): FuzzMessage[] {
  const rnd = prng(opts.seed);
  const repeatable = SHAPES.filter((s) => !s.once);
  const chosen: Shape[] = [...SHAPES];
  while (chosen.length < opts.count + SHAPES.filter((s) => s.once).length)
    chosen.push(repeatable[Math.floor(rnd() * repeatable.length)] as Shape);
  for (let i = chosen.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [chosen[i], chosen[j]] = [chosen[j] as Shape, chosen[i] as Shape];
  }
  return chosen.map((shape, n) => {
    const marker = `fz${opts.seed}x${String(n).padStart(6, '0')}`;
    const id = uuidFor(opts.seed, n);
    const c: Ctx = {
      rnd,
      marker,
      id,
      teamId: opts.teamId,
      nowMs: opts.nowMs,
      int: (k) => Math.floor(rnd() * k),
      pick: (items) => items[Math.floor(rnd() * items.length)] as (typeof items)[number],
      args: (extra = '') =>
        `${json(`fuzz-user-${n}`)}, "127.0.0.1", "http://localhost:8000", {"event": "$fuzz", "uuid": ${json(id)}, "properties": {"fuzz": ${json(marker)}${extra}}}, ${opts.teamId}, "2020-11-02T22:13:06.011084+00:00", "2020-11-02T22:13:05.987000Z"`,
      body: (args) =>
        `[[${args ?? c.args()}], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`,
      headers: (over = {}) => {
        const base: Record<string, string> = {
          lang: '"py"',
          task: json(PLUGINS_TASK),
          id: json(id),
          retries: '0',
          root_id: json(id),
          origin: '"gen@fuzz"',
          fuzz: json(marker),
        };
        return `{${Object.entries({ ...base, ...over })
          .map(([k, v]) => `${json(k)}: ${v}`)
          .join(', ')}}`;
      },
    };
    return { marker, shape: shape.name, ...shape.make(c) };
  });
}

/** The Redis list item for a corpus message: its raw envelope, or kombu's envelope around its message. */
export function redisEnvelope(m: FuzzMessage, queue: string): string | Buffer {
  if (m.redisRaw !== undefined) return m.redisRaw;
  const msg = m.message as NonNullable<FuzzMessage['message']>;
  const content =
    (m.message?.contentType === null ? '' : `"content-type": ${json(msg.contentType)}, `) +
    (msg.contentEncoding === null ? '' : `"content-encoding": ${json(msg.contentEncoding)}, `);
  const properties = json({
    correlation_id: m.marker,
    reply_to: '',
    delivery_mode: 2,
    delivery_info: { exchange: '', routing_key: queue },
    priority: 0,
    body_encoding: 'base64',
    delivery_tag: m.marker,
  });
  // Written as text: headers may be nested deeper than JSON.stringify can go.
  return `{"body": "${msg.body.toString('base64')}", ${content}"headers": ${msg.headersJson}, "properties": ${properties}}`;
}
