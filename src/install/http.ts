/**
 * The one HTTP GET `install` uses for API metadata and archives: a deadline over the whole exchange (connect,
 * redirects, body), a byte limit enforced while the body streams in (a huge or endless body is cut off, not
 * buffered), a bounded number of redirects, and credentials that never follow a redirect to another origin
 * (GitHub sends archive downloads to codeload.github.com with a signed URL of its own).
 */
export interface HttpOptions {
  timeoutMs: number;
  maxBytes: number;
  maxRedirects?: number;
  headers?: Record<string, string>;
}

export interface HttpResponse {
  status: number;
  /** The URL that answered, after redirects. */
  url: string;
  contentType: string;
  body: Buffer;
}

export class DownloadError extends Error {
  override name = 'DownloadError';
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const USER_AGENT = 'posthog-plugins (plugin install)';

export async function httpGet(url: string, opts: HttpOptions): Promise<HttpResponse> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), opts.timeoutMs);
  try {
    return await follow(url, opts, controller.signal);
  } catch (err) {
    if (controller.signal.aborted) throw new DownloadError(`GET ${url} timed out after ${opts.timeoutMs} ms`);
    if (err instanceof DownloadError) throw err;
    const cause = (err as { cause?: { message?: string; code?: string } }).cause;
    throw new DownloadError(`GET ${url} failed: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

async function follow(start: string, opts: HttpOptions, signal: AbortSignal): Promise<HttpResponse> {
  const maxRedirects = opts.maxRedirects ?? 5;
  const firstOrigin = new URL(start).origin;
  let url = start;
  for (let hop = 0; ; hop++) {
    const sameOrigin = new URL(url).origin === firstOrigin;
    const headers: Record<string, string> = { 'user-agent': USER_AGENT };
    for (const [k, v] of Object.entries(opts.headers ?? {})) {
      if (sameOrigin || k.toLowerCase() !== 'authorization') headers[k] = v;
    }
    const res = await fetch(url, { headers, redirect: 'manual', signal });
    if (REDIRECTS.has(res.status)) {
      await res.body?.cancel();
      const location = res.headers.get('location');
      if (!location) throw new DownloadError(`GET ${url}: redirect ${res.status} without a Location header`);
      if (hop >= maxRedirects) throw new DownloadError(`GET ${start}: more than ${maxRedirects} redirects`);
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:')
        throw new DownloadError(`GET ${url}: redirect to unsupported URL ${next.href}`);
      url = next.href;
      continue;
    }
    const body = await readLimited(res, url, opts.maxBytes);
    return { status: res.status, url, contentType: res.headers.get('content-type') ?? '', body };
  }
}

async function readLimited(res: Response, url: string, maxBytes: number): Promise<Buffer> {
  const tooLarge = (): DownloadError =>
    new DownloadError(`GET ${url}: response larger than ${maxBytes} bytes (the download limit)`);
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel();
    throw tooLarge();
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(Buffer.from(value));
  }
  return Buffer.concat(chunks, total);
}

/** GET and parse JSON; a non-2xx status is returned as `status` with `json` null, for the caller's message. */
export async function getJson(url: string, opts: HttpOptions): Promise<{ status: number; json: unknown }> {
  const res = await httpGet(url, { ...opts, headers: { accept: 'application/json', ...opts.headers } });
  if (res.status < 200 || res.status > 299) return { status: res.status, json: null };
  try {
    return { status: res.status, json: JSON.parse(res.body.toString('utf8')) };
  } catch (err) {
    throw new DownloadError(`GET ${url}: the answer is not JSON (${(err as Error).message})`);
  }
}
