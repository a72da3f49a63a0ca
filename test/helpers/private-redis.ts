/**
 * A Redis server of the test's own, on a free loopback port, for tests that must stop, restart or flood Redis
 * (the shared server at 6379 serves every other test file at once and has only 16 dbs).
 * `stop()` removes its directory; call it in an `after` hook so nothing is left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { needsServices } from './needs-services';

needsServices('a redis-server (test/helpers/private-redis)');

export interface PrivateRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>/<db>` */
  url(db?: number): string;
  /** Stops the server (SIGTERM, or SIGKILL when `hard`) and starts it again on the same port and directory. */
  restart(opts?: { hard?: boolean; downMs?: number }): Promise<void>;
  /** Stops the server and deletes its directory. */
  stop(): Promise<void>;
}

export interface PrivateRedisOptions {
  /** Keep data across restarts with an append-only file (as production Redis often does). Default true. */
  appendonly?: boolean;
}

/** A loopback port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

async function waitForPing(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on('error', () => {});
    try {
      await client.connect();
      // LOADING replies an error until the append-only file is read back.
      if ((await client.ping()) === 'PONG') return;
    } catch {
      // not up yet
    } finally {
      client.disconnect();
    }
    if (Date.now() > deadline) throw new Error(`private Redis on port ${port} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startPrivateRedis(opts: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'posthog-plugins-redis-'));
  const port = await freePort();
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--dir',
    dir,
    '--appendonly',
    opts.appendonly === false ? 'no' : 'yes',
    '--appendfsync',
    'always',
    '--daemonize',
    'no',
    '--logfile',
    join(dir, 'redis.log'),
  ];
  let child: ChildProcess | null = null;
  const launch = async (): Promise<void> => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitForPing(port, 10_000);
  };
  const halt = async (hard: boolean): Promise<void> => {
    const c = child;
    if (!c) return;
    child = null;
    c.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited(c);
  };
  await launch();
  return {
    port,
    url: (db = 0) => `redis://127.0.0.1:${port}/${db}`,
    async restart({ hard = false, downMs = 0 } = {}) {
      await halt(hard);
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
    async stop() {
      await halt(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
