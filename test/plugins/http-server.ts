import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';

/**
 * A local HTTP server on 127.0.0.1 for the fetch tests (the only address they send traffic to).
 *   /json                 {"hello":"world","n":1}
 *   /echo                 the request: {method, url, headers, body}
 *   /status/:code         that status, statusText "Custom <code>"
 *   /headers              repeated x-multi and set-cookie headers
 *   /big?bytes=N[&chunked=1]  N bytes of "x" (with or without content-length)
 *   /gzip                 gzip-encoded JSON; /gzip-bomb?mb=N  N MB of zeros, gzip-encoded (~N KB on the wire)
 *   /slow?ms=N            answers after N ms
 *   /hold?ms=N            answers after N ms; counts requests in flight (maxInFlight)
 *   /redirect?to=URL&code=302   redirect to URL
 *   /chain?n=K            redirects K times, then {"done":true}
 *   /not-json             text that is not JSON
 *   anything else         404
 * Every request is recorded in `hits` ("METHOD /path?query").
 */
export interface TestServer {
  origin: string;
  port: number;
  hits: string[];
  inFlight: number;
  maxInFlight: number;
  /** Requests whose client went away before the answer. */
  aborted: number;
  reset(): void;
  close(): Promise<void>;
}

export async function startServer(): Promise<TestServer> {
  const state = { hits: [] as string[], inFlight: 0, maxInFlight: 0, aborted: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    state.hits.push(`${req.method} ${url.pathname}${url.search}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const q = (k: string): string | null => url.searchParams.get(k);
      const json = (v: unknown, status = 200): void => {
        const s = JSON.stringify(v);
        res.writeHead(status, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(s),
        });
        res.end(s);
      };
      res.on('close', () => {
        if (!res.writableFinished) state.aborted++;
      });
      const p = url.pathname;
      if (p === '/json') return json({ hello: 'world', n: 1 });
      if (p === '/echo') return json({ method: req.method, url: req.url, headers: req.headers, body });
      if (p.startsWith('/status/')) {
        const code = Number(p.slice('/status/'.length));
        res.writeHead(code, `Custom ${code}`, { 'content-type': 'text/plain' });
        return res.end(`status ${code}`);
      }
      if (p === '/headers') {
        res.setHeader('x-multi', ['a', 'b']);
        res.setHeader('set-cookie', ['one=1', 'two=2']);
        res.setHeader('content-type', 'text/plain');
        return res.end('headers');
      }
      if (p === '/big') {
        const n = Number(q('bytes') ?? 1024);
        const chunked = q('chunked') === '1';
        res.writeHead(
          200,
          chunked ? { 'content-type': 'text/plain' } : { 'content-type': 'text/plain', 'content-length': n },
        );
        const piece = Buffer.alloc(16384, 'x');
        let left = n;
        const pump = (): void => {
          while (left > 0) {
            const c = piece.subarray(0, Math.min(left, piece.length));
            left -= c.length;
            if (!res.write(c)) return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      if (p === '/gzip') {
        const gz = zlib.gzipSync(JSON.stringify({ compressed: true, text: 'hello '.repeat(100) }));
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-encoding': 'gzip',
          'content-length': gz.length,
        });
        return res.end(gz);
      }
      if (p === '/gzip-bomb') {
        const gz = zlib.gzipSync(Buffer.alloc(Number(q('mb') ?? 50) * 1024 * 1024));
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-encoding': 'gzip',
          'content-length': gz.length,
        });
        return res.end(gz);
      }
      if (p === '/slow') return later(Number(q('ms') ?? 1000), () => json({ slow: true }));
      if (p === '/hold') {
        state.inFlight++;
        state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
        return later(Number(q('ms') ?? 100), () => {
          state.inFlight--;
          json({ held: true });
        });
      }
      if (p === '/redirect') {
        res.writeHead(Number(q('code') ?? 302), { location: q('to') ?? '/json' });
        return res.end();
      }
      if (p === '/chain') {
        const n = Number(q('n') ?? 0);
        if (n <= 0) return json({ done: true });
        res.writeHead(302, { location: `/chain?n=${n - 1}` });
        return res.end();
      }
      if (p === '/not-json') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('this is not json');
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    get hits() {
      return state.hits;
    },
    get inFlight() {
      return state.inFlight;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    get aborted() {
      return state.aborted;
    },
    reset() {
      state.hits = [];
      state.maxInFlight = 0;
      state.aborted = 0;
    },
    close() {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
