import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import {
  markRedelivered,
  parseBindingMember,
  parseEnvelope,
  parseUnackedRecord,
  priorityKey,
} from '../../../protocol/redis-envelope';
import type { Logger } from '../../log';
import { processExists } from '../../process-exists';
import {
  KOMBU_UNACKED,
  KOMBU_UNACKED_INDEX,
  KOMBU_UNACKED_MUTEX,
  WORKERS_KEY,
  inflightKey,
  kombuBindingKey,
  landingKey,
  leaseKey,
} from './keys';
import type { ScriptedRedis } from './scripts';

const RESTORE_CHUNK = 500;
/** Stands in for the holder's in-flight set when there is no known holder (never written). */
const NO_HOLDER = 'posthog-plugins:inflight:-';
const SPACE = processSpace();

/** What a worker writes into its lease, so that others can tell a dead local process at once. */
export interface LeaseInfo {
  host: string;
  pid: number;
  started: string;
  /** Together with host, what makes a pid comparable: same boot, same PID namespace (not just same hostname). */
  processSpace: string;
}

/** This process's boot id and PID namespace: containers sharing a hostname (host network) differ here. */
export function processSpace(): string {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${boot}/${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return 'unknown';
  }
}

/**
 * Puts messages whose holder is gone back into their queues:
 * - our workers whose lease expired (or whose process is gone from this host): right away, within seconds;
 * - any holder (Python workers included) whose unacked_index entry is older than the visibility timeout,
 *   with kombu's algorithm and its `unacked_mutex`, so Python's restore and ours never collide.
 */
export class UnackedRestorer {
  constructor(
    private readonly redis: ScriptedRedis,
    private readonly logger: Logger,
  ) {}

  /**
   * Restore the given delivery tags if they are still unacked. Returns how many went back. Works in chunks:
   * a spread of very many arguments would overflow the stack, and one huge script would block Redis.
   */
  async restoreTags(tags: string[], holderInflightKey: string | null): Promise<number> {
    let restored = 0;
    for (let i = 0; i < tags.length; i += RESTORE_CHUNK)
      restored += await this.restoreChunk(tags.slice(i, i + RESTORE_CHUNK), holderInflightKey);
    return restored;
  }

  /** `holderInflightKey` null: restore whoever holds them (kombu's visibility restore). */
  private async restoreChunk(tags: string[], holderInflightKey: string | null): Promise<number> {
    if (tags.length === 0) return 0;
    const records = await this.redis.hmget(KOMBU_UNACKED, ...tags);
    const args: string[] = [];
    for (let i = 0; i < tags.length; i++) {
      const tag = tags[i] as string;
      const record = records[i];
      if (record == null) continue; // already acked or restored by someone else
      const target = await this.targetFor(tag, record);
      if (target) args.push(tag, target.key, target.envelope);
    }
    // Tags without a record still get cleaned out of the holder's in-flight set.
    const stale = tags.filter((_, i) => records[i] == null);
    if (stale.length && holderInflightKey) await this.redis.srem(holderInflightKey, ...stale);
    if (args.length === 0) return 0;
    const holder = holderInflightKey ?? NO_HOLDER;
    return this.redis.phRestore(3, KOMBU_UNACKED, KOMBU_UNACKED_INDEX, holder, holderInflightKey ? '1' : '0', ...args);
  }

  private async targetFor(tag: string, record: string): Promise<{ key: string; envelope: string } | null> {
    const parsed = parseUnackedRecord(record);
    if (!parsed.ok) {
      this.logger.error('unacked record cannot be restored: left in place', { tag, reason: parsed.reason });
      return null;
    }
    const { envelopeText, exchange, routingKey } = parsed;
    let queue = routingKey;
    if (exchange !== '') {
      // Same routing as kombu: a named exchange resolves through its binding table.
      const members = await this.redis.smembers(kombuBindingKey(exchange));
      const match = members.map((m) => parseBindingMember(m)).find((m) => m !== null && m.routingKey === routingKey);
      if (!match) {
        this.logger.error('unacked message has no binding to restore to: left in place', { tag, exchange, routingKey });
        return null;
      }
      queue = match.queue;
    }
    const envelope = parseEnvelope(envelopeText);
    const priority = envelope.ok ? envelope.priority : 0;
    return { key: priorityKey(queue, priority), envelope: markRedelivered(envelopeText) };
  }

  /** Everything a dead worker held: its in-flight tags and whatever sits in its landing list. */
  async restoreWorker(workerId: string, inputQueue: string): Promise<number> {
    const inflight = inflightKey(workerId);
    const tags = await this.redis.smembers(inflight);
    let restored = await this.restoreTags(tags, inflight);
    // Landing items were popped from the bare queue key (oldest end) and never got an unacked record.
    while ((await this.redis.lmove(landingKey(workerId), inputQueue, 'LEFT', 'RIGHT')) !== null) restored++;
    if ((await this.redis.scard(inflight)) === 0) {
      await this.redis.multi().srem(WORKERS_KEY, workerId).del(inflight).exec();
    }
    return restored;
  }

  /** Restore the messages of every registered worker that is no longer alive. */
  async restoreDeadWorkers(selfId: string, inputQueue: string): Promise<void> {
    const ids = await this.redis.smembers(WORKERS_KEY);
    for (const id of ids) {
      if (id === selfId) continue;
      const lease = await this.redis.get(leaseKey(id));
      if (lease !== null && isAlive(lease)) continue;
      const restored = await this.restoreWorker(id, inputQueue);
      this.logger.warn(`restored ${restored} in-flight message(s) of dead worker ${id}`, { worker: id, restored });
    }
  }

  /**
   * kombu's restore_visible: under `unacked_mutex`, restore every unacked message older than the
   * visibility timeout, except those this worker holds itself (it is alive and still working on them).
   */
  async restoreVisible(visibilityTimeoutS: number, ownTags: ReadonlySet<string>): Promise<number> {
    const token = randomUUID();
    const locked = await this.redis.set(KOMBU_UNACKED_MUTEX, token, 'PX', 300_000, 'NX');
    if (locked !== 'OK') return 0;
    try {
      const ceiling = Date.now() / 1000 - visibilityTimeoutS;
      const tags = (await this.redis.zrevrangebyscore(KOMBU_UNACKED_INDEX, ceiling, 0)).filter((t) => !ownTags.has(t));
      const restored = await this.restoreTags(tags, null);
      if (restored) this.logger.warn(`restored ${restored} message(s) unacked for over ${visibilityTimeoutS} s`);
      return restored;
    } finally {
      // Release only our own lock (someone may have taken it over after expiry).
      if ((await this.redis.get(KOMBU_UNACKED_MUTEX)) === token) await this.redis.del(KOMBU_UNACKED_MUTEX);
    }
  }
}

/**
 * A lease from this host, boot and PID namespace whose process no longer exists is dead even before its TTL
 * runs out. Anything else (another machine, or a container that only shares our hostname) waits for the TTL.
 */
function isAlive(leaseValue: string): boolean {
  let info: Partial<LeaseInfo>;
  try {
    info = JSON.parse(leaseValue) as Partial<LeaseInfo>;
  } catch {
    return true;
  }
  if (info.host !== hostname() || typeof info.pid !== 'number' || info.processSpace !== SPACE || SPACE === 'unknown')
    return true;
  return processExists(info.pid);
}
