/**
 * A RabbitMQ node of the test's own (its own node name, AMQP and distribution ports, data directory), for tests
 * that restart the broker: the machine's node serves every other test file at once. Starts in ~10 s.
 * `stop()` stops the node and deletes its directory; call it in an `after` hook so nothing is left behind.
 */
import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './private-redis';
import { needsServices } from './needs-services';

needsServices('a RabbitMQ node (test/helpers/private-rabbitmq)');

const execFileAsync = promisify(execFile);

export interface PrivateRabbit {
  readonly node: string;
  readonly port: number;
  /** `amqp://guest:guest@127.0.0.1:<port>/%2F` (the default vhost). */
  readonly url: string;
  /** rabbitmqctl against this node. */
  ctl(...args: string[]): Promise<string>;
  /** A clean broker restart: `stop_app`, `downMs` of nothing, `start_app` (durable queues and persistent messages stay). */
  restart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** The uid/gid of the `rabbitmq` system user, which rabbitmq-server drops to when started as root. */
async function rabbitmqUser(): Promise<{ uid: number; gid: number } | null> {
  if (userInfo().uid !== 0) return null;
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', 'rabbitmq']),
      execFileAsync('id', ['-g', 'rabbitmq']),
    ]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return null;
  }
}

export async function startPrivateRabbit(): Promise<PrivateRabbit> {
  const dir = mkdtempSync(join(tmpdir(), 'posthog-plugins-rabbitmq-'));
  const [port, distPort] = [await freePort(), await freePort()];
  const node = `pp-test-${process.pid}@localhost`;
  writeFileSync(join(dir, 'rabbitmq.conf'), `listeners.tcp.local = 127.0.0.1:${port}\n`);
  const owner = await rabbitmqUser();
  if (owner) for (const p of [dir, join(dir, 'rabbitmq.conf')]) chownSync(p, owner.uid, owner.gid);
  const env = {
    ...process.env,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_PID_FILE: join(dir, 'pid'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
  };
  const ctl = async (...args: string[]): Promise<string> => {
    try {
      return (await execFileAsync('rabbitmqctl', ['-q', '-n', node, ...args], { timeout: 120_000, env })).stdout;
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new Error(`rabbitmqctl -n ${node} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
    }
  };
  await execFileAsync('rabbitmq-server', ['-detached'], { env, timeout: 60_000 });
  await ctl('wait', join(dir, 'pid'), '--timeout', '90');
  return {
    node,
    port,
    url: `amqp://guest:guest@127.0.0.1:${port}/%2F`,
    ctl,
    async restart(downMs = 0) {
      await ctl('stop_app');
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await ctl('start_app');
      await ctl('await_startup', '--timeout', '90');
    },
    async stop() {
      // With the pid file rabbitmqctl waits for the OS process to end: one still shutting down would write its
      // logs into a directory it recreates.
      await ctl('stop', join(dir, 'pid')).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
