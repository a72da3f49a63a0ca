import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { BoundedRedis } from '../../redis/client';

/**
 * Lua scripts that make every Redis state change of a delivery atomic. kombu itself pops (BRPOP) and writes
 * its `unacked` record in two steps, so a crash in between loses the message; here the pop, the kombu
 * records and our own per-worker bookkeeping happen in one script, and so do publish + ack.
 *
 * Each script is a file in lua/ whose header lists its KEYS and ARGV. tsc copies no .lua files: the compiled
 * module (dist/src/brokers/redis/) reads them from the source tree it was built from, so a clone that was built
 * with `make build`, `npm run build` or plain `tsc` finds them. Read once, at start: a missing file fails there.
 */
const LUA_DIR = path.resolve(__dirname, '../../../../src/brokers/redis/lua');

/** The text of lua/<name>.lua, sent to Redis as it is (no substitution). */
export function luaScript(name: string): string {
  const file = path.join(LUA_DIR, `${name}.lua`);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read Redis script ${file}: ${(err as Error).message}`);
  }
}

/** Scripts defined without a fixed key count: ioredis takes the key count as the first argument. */
interface ScriptCommands {
  phPop(numKeys: number, ...keysAndArgs: string[]): Promise<[string[], string[]]>;
  phSettle(numKeys: number, ...keysAndArgs: Array<string | Buffer>): Promise<string[]>;
  phRestore(numKeys: number, ...keysAndArgs: string[]): Promise<number>;
}

/** A client with (some of) these scripts defined as commands (`defineCommand`). */
export type ScriptedRedis = BoundedRedis & ScriptCommands;

/** Pop a batch with its unacked records (lua/pop.lua). */
export const POP_SCRIPT = luaScript('pop');
/** Publish outputs and ack inputs (lua/settle.lua). */
export const SETTLE_SCRIPT = luaScript('settle');
/** Give unacked messages back to their queues (lua/restore.lua). */
export const RESTORE_SCRIPT = luaScript('restore');
