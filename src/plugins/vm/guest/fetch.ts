/**
 * `fetch` (and require('node-fetch')): node-fetch v2's surface, bodies as text. The request goes to the host's
 * fetch op as a FetchRequest JSON (checked again there); the response comes back whole, body included.
 */
import type { FetchResponseData } from '../../api/fetch';
import type { BridgeClient } from './bridge-client';
import { FetchError, fetchFail } from './errors';
import { appendHeader, forEachPair, headerList, Headers } from './headers';
import { jsonNumber } from './json';
import {
  fromCharCode,
  isView,
  ObjectCreate,
  objectToString,
  own,
  parse,
  PromiseCtor,
  put,
  ReflectApply,
  rejected,
  stringify,
  StringFn,
  TypeErrorCtor,
  typedSubarray,
  Uint8ArrayCtor,
} from './primordials';

/** Only fetch() makes responses: `new Response()` from plugin code (through response.constructor) throws. */
const RESPONSE_TOKEN = ObjectCreate(null);

function bodyUnsupported(what: string): Promise<never> {
  return new PromiseCtor(function (_, reject) {
    reject(
      new TypeErrorCtor(
        'response.' + what + '() is not available in posthog-plugins: read bodies with text() or json()',
      ),
    );
  });
}

export class Response {
  #body: string;
  #used = false;
  declare readonly url: string;
  declare readonly status: number;
  declare readonly statusText: string;
  declare readonly ok: boolean;
  declare readonly redirected: boolean;
  declare readonly headers: Headers;
  constructor(token: unknown, data: FetchResponseData) {
    if (token !== RESPONSE_TOKEN) throw new TypeErrorCtor('Illegal constructor: responses come from fetch()');
    this.#body = data.body;
    const headers = new Headers();
    const l = headerList(headers)!;
    const pairs = data.headers;
    for (let i = 0; i < pairs.length; i++) appendHeader(l, pairs[i][0], pairs[i][1]);
    own(this, 'url', data.url, true);
    own(this, 'status', data.status, true);
    own(this, 'statusText', data.statusText, true);
    own(this, 'ok', data.status >= 200 && data.status < 300, true);
    own(this, 'redirected', data.redirected, true);
    own(this, 'headers', headers, true);
  }
  get bodyUsed(): boolean {
    return this.#used;
  }
  async text(): Promise<string> {
    if (this.#used) throw new TypeErrorCtor('body used already for: ' + this.url);
    this.#used = true;
    return this.#body;
  }
  async json(): Promise<unknown> {
    if (this.#used) throw new TypeErrorCtor('body used already for: ' + this.url);
    this.#used = true;
    try {
      return parse(this.#body);
    } catch (e) {
      throw new FetchError(
        'invalid json response body at ' + this.url + ' reason: ' + (e as Error).message,
        'invalid-json',
      );
    }
  }
  clone(): Response {
    if (this.#used) throw new TypeErrorCtor('cannot clone body after it is used');
    const pairs: Array<[string, string]> = [];
    forEachPair(this.headers, (k, v) => put(pairs, pairs.length, [k, v]));
    return toResponse({
      url: this.url,
      status: this.status,
      statusText: this.statusText,
      redirected: this.redirected,
      headers: pairs,
      body: this.#body,
    });
  }
  arrayBuffer(): Promise<never> {
    return bodyUnsupported('arrayBuffer');
  }
  buffer(): Promise<never> {
    return bodyUnsupported('buffer');
  }
  blob(): Promise<never> {
    return bodyUnsupported('blob');
  }
}

function toResponse(data: unknown): Response {
  return new Response(RESPONSE_TOKEN, data as FetchResponseData);
}

/** Bytes (ArrayBuffer or a view) as a string of one char per byte. */
function latin1(body: ArrayBufferView | ArrayBuffer): string {
  const u8 = isView(body)
    ? new Uint8ArrayCtor(body.buffer, body.byteOffset, body.byteLength)
    : new Uint8ArrayCtor(body);
  let s = '';
  for (let i = 0; i < u8.length; i += 8192) s += ReflectApply(fromCharCode, null, typedSubarray(u8, i, i + 8192));
  return s;
}

interface FetchOptions {
  method?: unknown;
  headers?: unknown;
  body?: unknown;
  redirect?: unknown;
  timeout?: unknown;
  follow?: unknown;
  compress?: unknown;
}

/** The FetchRequest JSON of fetch(input, options), or throws a TypeError for options it cannot send. */
export function fetchRequestJson(input: unknown, options: unknown): string {
  let url: string;
  const target = input as { url?: unknown; href?: unknown } | null;
  if (typeof input === 'string') url = input;
  else if (target !== null && typeof target === 'object' && typeof target.url === 'string') url = target.url;
  else if (target !== null && typeof target === 'object' && typeof target.href === 'string') url = target.href;
  else url = StringFn(input);
  const o = (options === undefined || options === null ? ObjectCreate(null) : options) as FetchOptions;
  if (typeof o !== 'object') throw new TypeErrorCtor('fetch: the second argument must be an options object');
  const method = o.method === undefined || o.method === null ? 'GET' : StringFn(o.method);
  let headers = '';
  if (o.headers !== undefined && o.headers !== null) {
    forEachPair(o.headers, (k, v) => {
      headers += (headers === '' ? '[[' : ',[') + stringify(StringFn(k)) + ',' + stringify(StringFn(v)) + ']';
    });
  }
  let body: string | null = null;
  let encoding = 'utf8';
  const b = o.body;
  if (b !== undefined && b !== null) {
    if (typeof b === 'string') body = b;
    else if (isView(b) || (typeof b === 'object' && objectToString(b) === '[object ArrayBuffer]')) {
      body = latin1(b as ArrayBufferView | ArrayBuffer);
      encoding = 'latin1';
    } else body = StringFn(b);
  }
  const redirect = o.redirect === undefined ? 'follow' : StringFn(o.redirect);
  if (redirect !== 'follow' && redirect !== 'manual' && redirect !== 'error')
    throw new TypeErrorCtor('fetch: redirect must be "follow", "manual" or "error"');
  return (
    '{"url":' +
    stringify(url) +
    ',"method":' +
    stringify(method) +
    ',"headers":' +
    (headers === '' ? '[]' : headers + ']') +
    ',"body":' +
    (body === null ? 'null' : stringify(body)) +
    ',"bodyEncoding":"' +
    encoding +
    '"' +
    ',"redirect":"' +
    redirect +
    '"' +
    ',"timeout":' +
    jsonNumber(o.timeout) +
    ',"follow":' +
    jsonNumber(o.follow) +
    ',"compress":' +
    (o.compress === false ? 'false' : 'true') +
    '}'
  );
}

/** The plugin's fetch over the bridge's fetch op. */
export function createFetch(bridge: BridgeClient): (input: unknown, options?: unknown) => Promise<unknown> {
  return function fetch(url, options) {
    let json: string;
    try {
      json = fetchRequestJson(url, options);
    } catch (e) {
      return rejected(e);
    }
    return bridge.hostCall('fetch', json, toResponse, fetchFail);
  };
}
