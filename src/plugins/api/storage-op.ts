import { type PluginStorage, STORAGE_KEY_MAX_CHARS } from '../../store/plugin-storage';
import { type HostOp, PluginFacingError } from '../vm/bridge';

/**
 * meta.storage and meta.utils.cursor (posthog_pluginstorage, scoped to the calling config). The isolate side
 * (vm/guest/meta-apis.ts) sends JSON text values and parses what comes back:
 *   {cmd:'get', key} → string | null · {cmd:'set', key, value: string} → null · {cmd:'del', key} → null
 *   {cmd:'cursorInit', key, initial: integer} → null · {cmd:'cursorIncrement', key, by: integer} → number
 */
const MAX_VALUE_CHARS = 1024 * 1024;

function fail(message: string): never {
  throw new PluginFacingError('StorageError', message);
}

function keyOf(args: Record<string, unknown>): string {
  const key = args.key;
  if (typeof key !== 'string' || key.length === 0) fail('storage keys must be non-empty strings');
  if (key.length > STORAGE_KEY_MAX_CHARS)
    fail(`storage key too long: ${key.length} characters, limit ${STORAGE_KEY_MAX_CHARS}`);
  return key;
}

function intOf(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`${name} must be a safe integer`);
  return v;
}

/** `unavailable`: why this database cannot store anything right now (no posthog_pluginstorage table), else null. */
export function createStorageOp(
  storage: Pick<PluginStorage, 'get' | 'set' | 'del' | 'cursorInit' | 'cursorIncrement'>,
  unavailable: () => string | null = () => null,
): HostOp {
  return {
    maxArgBytes: MAX_VALUE_CHARS + 1024,
    concurrency: 10,
    maxQueued: 1000,
    errorName: 'StorageError',
    async run(raw, ctx) {
      const args = (raw ?? {}) as Record<string, unknown>;
      const id = ctx.plugin.pluginConfigId;
      const missing = unavailable();
      if (missing !== null) fail(`meta.storage is not available: ${missing}`);
      const key = keyOf(args);
      try {
        switch (args.cmd) {
          case 'get':
            return await storage.get(id, key);
          case 'set': {
            if (typeof args.value !== 'string') fail('storage values must be JSON text');
            await storage.set(id, key, args.value);
            return null;
          }
          case 'del':
            await storage.del(id, key);
            return null;
          case 'cursorInit':
            await storage.cursorInit(id, key, intOf(args.initial, 'initialValue'));
            return null;
          case 'cursorIncrement':
            return await storage.cursorIncrement(id, key, intOf(args.by, 'incrementBy'));
          default:
            return fail(`unknown storage command ${JSON.stringify(String(args.cmd)).slice(0, 40)}`);
        }
      } catch (err) {
        if (err instanceof PluginFacingError) throw err;
        // The database's own message may name tables and hosts: the plugin gets the command, the log the rest.
        ctx.logger.warn(`meta.storage ${String(args.cmd)} failed: ${(err as Error).message}`, ctx.logMeta);
        return fail(`meta.storage ${String(args.cmd)} failed: the database did not answer (see the worker log)`);
      }
    },
  };
}
