import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { pipeline, Readable, Transform } from 'node:stream';
import zlib from 'node:zlib';
import { HostOp, PluginFacingError } from '../vm/bridge';
import { FetchRefusedError, NetGuard, parseIp, ResolvedTarget } from './net-guard';
import { DEFAULT_FETCH_OPTIONS, FetchOptions } from '../types';

/**
 * `fetch` for plugins, done by the host: node-fetch v2 semantics where they matter (method, headers, string
 * bodies, redirects, `ok`/`status`/`statusText`/`url`/`headers`, gzip/deflate/br), with the limits of an untrusted
 * caller: http(s) only; every host resolved here and checked by NetGuard, and the connection made to that checked
 * address; redirects followed by hand with the same checks; caps on time, body size, redirects and concurrency.
 */

export interface FetchRequest {
  url: string;
  method: string;
  headers: Array<[string, string]>;
  body: string | null;
  /** 'latin1' when the plugin sent bytes (ArrayBuffer / typed array), one char per byte. */
  bodyEncoding: 'utf8' | 'latin1';
  redirect: 'follow' | 'manual' | 'error';
  /** node-fetch's per-request `timeout` (ms), capped by the operator's. */
  timeout: number | null;
  /** node-fetch's `follow` (max redirects), capped by the operator's. */
  follow: number | null;
  compress: boolean;
}

export interface FetchResponseData {
  url: string;
  status: number;
  statusText: string;
  redirected: boolean;
  /** Lower-case names, in arrival order, repeated names kept. */
  headers: Array<[string, string]>;
  /** UTF-8 decoded body. */
  body: string;
}

export interface ResolvedFetchOptions {
  enabled: boolean;
  timeoutMs: number;
  maxBytes: number;
  concurrency: number;
  maxQueued: number;
  maxRedirects: number;
  guard: NetGuard;
}

export function resolveFetchOptions(o: FetchOptions | undefined): ResolvedFetchOptions {
  const d = DEFAULT_FETCH_OPTIONS;
  const int = (v: number | undefined, def: number, min: number, max: number): number => {
    const n = v === undefined || !Number.isFinite(v) ? def : Math.floor(v);
    return Math.min(max, Math.max(min, n));
  };
  return {
    enabled: o?.enabled ?? true,
    timeoutMs: int(o?.timeoutMs, d.timeoutMs, 1, 2 ** 31 - 1),
    maxBytes: int(o?.maxBytes, d.maxBytes, 0, 1024 * 1024 * 1024),
    concurrency: int(o?.concurrency, d.concurrency, 1, 10_000),
    maxQueued: int(o?.maxQueued, d.maxQueued, 0, 100_000),
    maxRedirects: int(o?.maxRedirects, d.maxRedirects, 0, 20),
    guard: new NetGuard(o?.allow, o?.lookup),
  };
}

/** node-fetch's error: `name` 'FetchError', `type` ('system', 'request-timeout', 'max-size', …), `code` for system errors. */
export class FetchError extends PluginFacingError {
  constructor(message: string, type: string, code?: string) {
    super('FetchError', message, type, code);
  }
}

// ------------------------------------------------------------------------------------------------ request validation

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Hop-by-hop and framing headers the host sets itself; a plugin's values are dropped. */
const DROPPED_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
  'proxy-authorization',
  'expect',
]);
/** Not sent to another host after a redirect (node-fetch ≥2.6.7 does the same). */
const CREDENTIAL_HEADERS = new Set(['authorization', 'www-authenticate', 'cookie', 'cookie2']);
const MAX_HEADERS = 100;

function invalid(message: string): never {
  throw new PluginFacingError('TypeError', message);
}

/** The request as the guest (vm/guest/fetch.ts) sent it, checked field by field (it comes from the isolate). */
export function parseFetchRequest(args: unknown): FetchRequest {
  const a = (args ?? {}) as Record<string, unknown>;
  if (typeof a !== 'object' || Array.isArray(a)) invalid('fetch: malformed request');
  if (typeof a.url !== 'string' || a.url.length > 65536)
    invalid('fetch: the URL must be a string of at most 65536 characters');
  const method = typeof a.method === 'string' && a.method !== '' ? a.method : 'GET';
  if (!TOKEN.test(method) || method.length > 32)
    invalid(`fetch: invalid method ${JSON.stringify(method.slice(0, 40))}`);
  const upper = method.toUpperCase();
  if (upper === 'CONNECT' || upper === 'TRACE' || upper === 'TRACK') invalid(`fetch: method ${upper} is not allowed`);
  const headers: Array<[string, string]> = [];
  if (a.headers !== undefined && a.headers !== null) {
    if (!Array.isArray(a.headers) || a.headers.length > MAX_HEADERS) invalid(`fetch: at most ${MAX_HEADERS} headers`);
    for (const pair of a.headers as unknown[]) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string')
        invalid('fetch: malformed headers');
      const [name, value] = pair as [string, string];
      if (!TOKEN.test(name)) invalid(`fetch: invalid header name ${JSON.stringify(name.slice(0, 60))}`);
      if (/[\r\n\0]/.test(value)) invalid(`fetch: invalid value for header ${name}`);
      headers.push([name.toLowerCase(), value]);
    }
  }
  const body = a.body === undefined || a.body === null ? null : a.body;
  if (body !== null && typeof body !== 'string') invalid('fetch: malformed body');
  if (body !== null && (upper === 'GET' || upper === 'HEAD')) invalid('fetch: a GET/HEAD request cannot have a body');
  const redirect = a.redirect === 'manual' || a.redirect === 'error' ? a.redirect : 'follow';
  const num = (v: unknown): number | null =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null;
  return {
    url: a.url,
    method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'].includes(upper) ? upper : method,
    headers,
    body,
    bodyEncoding: a.bodyEncoding === 'latin1' ? 'latin1' : 'utf8',
    redirect,
    timeout: num(a.timeout) || null,
    follow: num(a.follow),
    compress: a.compress !== false,
  };
}

// ------------------------------------------------------------------------------------------------ fetching

function parseTarget(url: string, base?: string): URL {
  let u: URL;
  try {
    u = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    throw new FetchError(`invalid URL ${JSON.stringify(url.slice(0, 200))}`, 'invalid-url');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new FetchError(
      `only http: and https: URLs are allowed, got ${u.protocol} (${u.href.slice(0, 200)})`,
      'unsupported-protocol',
    );
  }
  return u;
}

/** For messages and logs: no credentials, no path or query. */
export function originOf(u: URL): string {
  return `${u.protocol}//${u.host}`;
}

interface Hop {
  url: URL;
  method: string;
  headers: Array<[string, string]>;
  body: Buffer | null;
}

function send(hop: Hop, target: ResolvedTarget, signal: AbortSignal): Promise<http.IncomingMessage> {
  const u = hop.url;
  const literal = parseIp(u.hostname) !== null;
  // Connect to the address NetGuard checked, whatever the name resolves to by now.
  const lookup: LookupFunction = (_host, options, cb) => {
    if ((options as { all?: boolean }).all)
      (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [
        { address: target.address, family: target.family },
      ]);
    else cb(null, target.address, target.family);
  };
  const headers: http.OutgoingHttpHeaders = { host: u.host };
  for (const [k, v] of hop.headers) {
    const prev = headers[k];
    headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [String(prev), v];
  }
  if (hop.body !== null || hop.method === 'POST' || hop.method === 'PUT' || hop.method === 'PATCH')
    headers['content-length'] = String(hop.body?.length ?? 0);
  if (u.username || u.password)
    headers.authorization ??= `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`;
  const options: https.RequestOptions = {
    protocol: u.protocol,
    host: literal ? target.address : u.hostname,
    port: u.port === '' ? undefined : Number(u.port),
    path: `${u.pathname || '/'}${u.search}`,
    method: hop.method,
    headers,
    setHost: false,
    agent: false,
    lookup,
  };
  if (u.protocol === 'https:' && !literal) options.servername = u.hostname;
  return new Promise((resolve, reject) => {
    let req: http.ClientRequest;
    try {
      req = (u.protocol === 'https:' ? https : http).request(options, resolve);
    } catch (err) {
      reject(
        new FetchError(
          `request to ${originOf(u)} failed, reason: ${(err as Error).message}`,
          'system',
          (err as { code?: string }).code,
        ),
      );
      return;
    }
    // (cheaper than the `signal` request option) abort = destroy the request and with it the response
    const onAbort = (): void => void req.destroy(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('close', () => signal.removeEventListener('abort', onAbort));
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        signal.aborted
          ? signal.reason
          : new FetchError(`request to ${u.href} failed, reason: ${err.message}`, 'system', err.code),
      );
    });
    req.end(hop.body ?? undefined);
  });
}

function sizeError(url: URL, maxBytes: number): FetchError {
  return new FetchError(`content size at ${url.href} over limit: ${maxBytes} bytes`, 'max-size');
}

/** Read the body with the size cap applied to the bytes on the wire and (when decompressing) to the output. */
async function readBody(
  res: http.IncomingMessage,
  url: URL,
  method: string,
  compress: boolean,
  maxBytes: number,
  signal: AbortSignal,
): Promise<string> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    res.destroy();
    throw sizeError(url, maxBytes);
  }
  if (method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) {
    res.resume();
    return '';
  }
  const enc = compress
    ? String(res.headers['content-encoding'] ?? '')
        .trim()
        .toLowerCase()
    : '';
  const inflate =
    enc === 'gzip' || enc === 'x-gzip'
      ? zlib.createGunzip({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
      : enc === 'deflate' || enc === 'x-deflate'
        ? zlib.createInflate({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
        : enc === 'br'
          ? zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH })
          : null;
  let out: Readable = res;
  if (inflate) {
    // the cap applies to the compressed bytes too (a stream that inflates to little but never ends)
    let wire = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        wire += chunk.length;
        if (wire > maxBytes) cb(sizeError(url, maxBytes));
        else cb(null, chunk);
      },
    });
    out = pipeline(res, meter, inflate, () => undefined);
  }
  try {
    return (await collect(out, maxBytes, url)).toString('utf8');
  } catch (err) {
    res.destroy();
    if (signal.aborted) throw signal.reason;
    if (err instanceof PluginFacingError) throw err;
    throw new FetchError(
      `invalid response body while trying to fetch ${url.href}: ${(err as Error).message}`,
      'system',
      (err as { code?: string }).code,
    );
  }
}

/** All of a stream, failing as soon as it passes maxBytes. */
function collect(stream: Readable, maxBytes: number, url: URL): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let done = false;
    const fail = (err: Error): void => {
      if (done) return;
      done = true;
      stream.destroy();
      reject(err);
    };
    stream.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) fail(sizeError(url, maxBytes));
      else chunks.push(chunk);
    });
    stream.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks, total));
    });
    stream.on('error', fail);
    stream.on('close', () => fail(new Error('connection closed before the body was complete')));
  });
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

async function fetchLoop(
  req: FetchRequest,
  opts: ResolvedFetchOptions,
  signal: AbortSignal,
): Promise<FetchResponseData> {
  const maxRedirects = Math.min(opts.maxRedirects, req.follow ?? Infinity);
  let hop: Hop = {
    url: parseTarget(req.url),
    method: req.method,
    headers: req.headers.filter(([k]) => !DROPPED_HEADERS.has(k)),
    body: req.body === null ? null : Buffer.from(req.body, req.bodyEncoding),
  };
  if (hop.body !== null && hop.body.length > opts.maxBytes)
    throw new FetchError(`request body over limit: ${hop.body.length} > ${opts.maxBytes} bytes`, 'max-size');
  const has = (name: string): boolean => hop.headers.some(([k]) => k === name);
  if (!has('accept')) hop.headers.push(['accept', '*/*']);
  if (!has('user-agent')) hop.headers.push(['user-agent', 'posthog-plugins (node-fetch compatible)']);
  if (req.compress && !has('accept-encoding')) hop.headers.push(['accept-encoding', 'gzip, deflate, br']);
  if (hop.body !== null && !has('content-type') && req.bodyEncoding === 'utf8')
    hop.headers.push(['content-type', 'text/plain;charset=UTF-8']);

  for (let redirects = 0; ; redirects++) {
    let target: ResolvedTarget;
    try {
      target = await opts.guard.resolve(hop.url.hostname);
    } catch (err) {
      if (err instanceof FetchRefusedError) {
        const via = redirects > 0 ? ` (after a redirect from ${req.url.slice(0, 200)})` : '';
        throw new FetchError(
          `request to ${originOf(hop.url)} refused: ${err.message}${via}`,
          'refused',
          'EFETCHREFUSED',
        );
      }
      throw new FetchError(
        `request to ${hop.url.href} failed, reason: ${(err as Error).message}`,
        'system',
        (err as { code?: string }).code ?? 'ENOTFOUND',
      );
    }
    if (signal.aborted) throw signal.reason;
    const res = await send(hop, target, signal);
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (REDIRECTS.has(status) && typeof location === 'string' && req.redirect !== 'manual') {
      res.resume();
      if (req.redirect === 'error')
        throw new FetchError(
          `uri requested responds with a redirect, redirect mode is set to error: ${hop.url.href}`,
          'no-redirect',
        );
      if (redirects >= maxRedirects)
        throw new FetchError(`maximum redirect reached at: ${hop.url.href}`, 'max-redirect');
      const next = parseTarget(location, hop.url.href);
      let { method, body } = hop;
      let headers = hop.headers;
      if (status === 303 || ((status === 301 || status === 302) && method === 'POST')) {
        method = method === 'HEAD' ? 'HEAD' : 'GET';
        body = null;
        headers = headers.filter(([k]) => k !== 'content-type');
      }
      if (next.host !== hop.url.host || next.protocol !== hop.url.protocol)
        headers = headers.filter(([k]) => !CREDENTIAL_HEADERS.has(k));
      hop = { url: next, method, headers, body };
      continue;
    }
    const headers: Array<[string, string]> = [];
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2)
      headers.push([res.rawHeaders[i].toLowerCase(), res.rawHeaders[i + 1]]);
    const body = await readBody(res, hop.url, hop.method, req.compress, opts.maxBytes, signal);
    return { url: hop.url.href, status, statusText: res.statusMessage ?? '', redirected: redirects > 0, headers, body };
  }
}

/** One plugin request, whole exchange (DNS, redirects, body) bounded by the timeout. Rejects with FetchError. */
export async function guardedFetch(
  req: FetchRequest,
  opts: ResolvedFetchOptions,
  outer?: AbortSignal,
): Promise<FetchResponseData> {
  const timeoutMs = Math.min(opts.timeoutMs, req.timeout ?? Infinity);
  const ac = new AbortController();
  const onOuter = (): void =>
    ac.abort(new FetchError(`request to ${req.url.slice(0, 200)} aborted: the plugin's isolate was closed`, 'aborted'));
  if (outer?.aborted) onOuter();
  else outer?.addEventListener('abort', onOuter, { once: true });
  const timer = setTimeout(
    () =>
      ac.abort(
        new FetchError(`network timeout at: ${req.url.slice(0, 200)} (limit ${timeoutMs} ms)`, 'request-timeout'),
      ),
    timeoutMs,
  );
  const aborted = new Promise<never>((_, reject) => {
    if (ac.signal.aborted) reject(ac.signal.reason);
    else ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true });
  });
  aborted.catch(() => undefined);
  try {
    return await Promise.race([fetchLoop(req, opts, ac.signal), aborted]);
  } finally {
    // (a finished exchange left nothing open: the body was read or destroyed, redirect bodies were drained)
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuter);
  }
}

/** The `fetch` entry of the host ops registry. */
export function createFetchOp(opts: ResolvedFetchOptions): HostOp {
  return {
    // a body of maxBytes may grow when JSON-escaped; the body itself is checked again after parsing
    maxArgBytes: opts.maxBytes * 2 + 64 * 1024,
    concurrency: opts.concurrency,
    maxQueued: opts.maxQueued,
    errorName: 'FetchError',
    async run(args, ctx) {
      const req = parseFetchRequest(args);
      try {
        return await guardedFetch(req, opts, ctx.signal);
      } catch (err) {
        if (err instanceof FetchError && err.type === 'refused')
          ctx.warn(`plugin fetch refused: ${err.message} (allow with --fetch-allow)`);
        throw err;
      }
    },
  };
}
