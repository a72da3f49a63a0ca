import type { BoundedRedis } from '../../redis/client';
import { luaScript } from '../../redis/lua';

/**
 * Lua scripts that make every Redis state change of a delivery atomic. kombu itself pops (BRPOP) and writes
 * its `unacked` record in two steps, so a crash in between loses the message; here the pop, the kombu
 * records and our own per-worker bookkeeping happen in one script, and so do publish + ack.
 *
 * Each script is a file in lua/ whose header lists its KEYS and ARGV (read at start, see src/redis/lua.ts).
 */
const script = (name: string): string => luaScript('brokers/redis/lua', name);

/** Scripts defined without a fixed key count: ioredis takes the key count as the first argument. */
interface ScriptCommands {
  phPop(numKeys: number, ...keysAndArgs: string[]): Promise<[string[], string[]]>;
  phSettle(numKeys: number, ...keysAndArgs: Array<string | Buffer>): Promise<string[]>;
  phRestore(numKeys: number, ...keysAndArgs: string[]): Promise<number>;
}

/** A client with (some of) these scripts defined as commands (`defineCommand`). */
export type ScriptedRedis = BoundedRedis & ScriptCommands;

/** Pop a batch with its unacked records (lua/pop.lua). */
export const POP_SCRIPT = script('pop');
/** Publish outputs and ack inputs (lua/settle.lua). */
export const SETTLE_SCRIPT = script('settle');
/** Give unacked messages back to their queues (lua/restore.lua). */
export const RESTORE_SCRIPT = script('restore');
