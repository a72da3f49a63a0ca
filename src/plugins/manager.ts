import crypto from 'node:crypto';
import path from 'node:path';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import { PluginStore, pluginErrorFrom } from '../store/plugin-store';
import type { LoadedPluginConfig, PluginError } from '../store/types';
import type { HostOps } from './bridge';
import { createFetchOp, resolveFetchOptions } from './fetch';
import { msSinceBusyDispose, PluginVm, resolveLimits, SandboxError } from './sandbox';
import { readPluginRowSource } from './source';
import { importNotAvailable, transpilePlugin } from './transpile';
import type { ConfigInfo, FetchOptions, PluginEvent, SandboxErrorInfo, SandboxLimits } from './types';

export { DEFAULT_LIMITS } from './types';
export type { SandboxLimits } from './types';

export interface PluginManagerOptions {
  store: PluginStore;
  /** Base directory for relative `file:` plugin urls. */
  baseDir: string;
  limits?: Partial<SandboxLimits>;
  logger: Logger;
  /** Isolates started in parallel during a (re)load (default 4). */
  loadConcurrency?: number;
  /** `fetch` for plugins: limits and the address allow-list (see FetchOptions). */
  fetch?: FetchOptions;
  /**
   * Called synchronously right before each entry into a config's isolate: a chain step (`events`: the caller's
   * event objects going in) or a load with setupPlugin (`events` empty). It may return a function, called when
   * that entry is over, or `false` to skip this chain step (the events keep their current value).
   */
  onEnter?: (configId: number, events: readonly PluginEvent[]) => (() => void) | false | void;
}

interface ConfigEntry {
  id: number;
  pluginId: number;
  teamId: number;
  name: string;
  order: number;
  fingerprint: string;
  vm: PluginVm | null;
  loadError: PluginError | null;
}

interface Generation {
  chains: Map<number, ConfigEntry[]>;
  entries: Map<number, ConfigEntry>;
  active: number;
  retired: boolean;
  onIdle: (() => void) | null;
}

/** At most this many per-event error lines per config per call; the rest are counted. */
const MAX_ERROR_LOG_LINES = 5;

function emptyGeneration(): Generation {
  return { chains: new Map(), entries: new Map(), active: 0, retired: false, onIdle: null };
}

function sha256(...parts: Array<string | Buffer>): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

function safeParse(json: string): JsonObject | null {
  try {
    const v = JSON.parse(json) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as JsonObject) : null;
  } catch {
    return null;
  }
}

/** PostHog's error JSON from what the sandbox reported. */
function toPluginError(info: SandboxErrorInfo, event: JsonObject | null | undefined): PluginError {
  if (info.thrownString) return { message: info.message, time: new Date().toISOString() };
  const e: PluginError = { message: info.message, time: new Date().toISOString(), name: info.name };
  if (info.stack !== undefined) e.stack = info.stack;
  if (event !== undefined) e.event = event;
  return e;
}

/**
 * Loads every enabled plugin config, one isolate each, and runs per-team chains over batches of events.
 * Reloads swap a fully-built generation of chains in one assignment; isolates of configs that did not change
 * (same code, config and attachments) are kept, the others are torn down once no chain call uses them.
 */
export class PluginManager {
  private gen: Generation = emptyGeneration();
  private readonly limits: SandboxLimits;
  private reloading: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly retiring = new Set<Promise<void>>();
  /** Async host APIs (request/settle bridge) every plugin config gets. */
  private readonly hostOps: HostOps;

  private constructor(private readonly opts: PluginManagerOptions) {
    this.limits = resolveLimits(opts.limits);
    const fetch = resolveFetchOptions(opts.fetch); // throws on an unreadable allow-list entry
    this.hostOps = new Map(fetch.enabled ? [['fetch', createFetchOp(fetch)]] : []);
  }

  static async create(opts: PluginManagerOptions): Promise<PluginManager> {
    const m = new PluginManager(opts);
    await m.reload();
    return m;
  }

  get sandboxLimits(): SandboxLimits {
    return { ...this.limits };
  }

  configsFor(teamId: number): readonly ConfigInfo[] {
    return (this.gen.chains.get(teamId) ?? []).map((e) => ({
      id: e.id,
      pluginId: e.pluginId,
      name: e.name,
      order: e.order,
      state: e.vm && e.vm.state === 'ready' ? 'ready' : 'failed',
    }));
  }

  /** Team ids that have at least one enabled config. */
  teams(): number[] {
    return [...this.gen.chains.keys()];
  }

  /** The live VM of a config (tests, diagnostics). */
  vmFor(configId: number): PluginVm | null {
    return this.gen.entries.get(configId)?.vm ?? null;
  }

  /** Re-read configs from the store and swap in the new chains. Concurrent calls are serialised. */
  reload(): Promise<void> {
    const next = this.reloading.then(() => this.reloadUnlocked());
    this.reloading = next.catch(() => undefined);
    return next;
  }

  /**
   * Run the team's chain over `events`, in config order; the event order is kept. result[i] is the final event
   * or null when a plugin dropped it. The input objects are never touched (plugins only see JSON copies).
   * Never rejects because of a plugin: a failing plugin leaves the event as it was before that plugin.
   */
  async runChain(teamId: number, events: PluginEvent[]): Promise<Array<PluginEvent | null>> {
    if (this.closed) throw new Error('PluginManager is closed');
    const gen = this.gen;
    const chain = gen.chains.get(teamId);
    if (!chain || chain.length === 0 || events.length === 0) return events.slice();
    gen.active++;
    try {
      return await this.runChainIn(chain, teamId, events);
    } finally {
      gen.active--;
      if (gen.retired && gen.active === 0) gen.onIdle?.();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.reloading;
    this.closed = true;
    const gen = this.gen;
    this.gen = emptyGeneration();
    const vms = [...gen.entries.values()].map((e) => e.vm).filter((v): v is PluginVm => v !== null);
    for (const vm of vms) vm.beginClose();
    const grace = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
    // Give running chain calls a moment to finish, then teardownPlugin (bounded), then dispose regardless.
    if (gen.active > 0) {
      await Promise.race([
        new Promise<void>((resolve) => {
          gen.retired = true;
          gen.onIdle = resolve;
        }),
        grace(Math.min(this.limits.wallTimeoutMs, 1000)),
      ]);
    }
    const idle = vms.filter((vm) => vm.idle); // a VM still busy is cut short below, without teardown
    await Promise.race([Promise.all(idle.map((vm) => vm.teardown())), grace(Math.min(this.limits.wallTimeoutMs, 5000))]);
    for (const vm of vms) vm.dispose();
    await Promise.all(this.retiring);
    // Exiting right after disposing running isolates can segfault: give isolated-vm ≥100 ms.
    const since = msSinceBusyDispose();
    if (since < 150) await new Promise((r) => setTimeout(r, 150 - since));
  }

  // ------------------------------------------------------------------------------------------------ internals

  private async runChainIn(chain: ConfigEntry[], teamId: number, events: PluginEvent[]): Promise<Array<PluginEvent | null>> {
    const { store, logger } = this.opts;
    const n = events.length;
    const current: Array<string | null> = events.map((e) => JSON.stringify(e));
    const changed = new Array<boolean>(n).fill(false);
    const writes: Array<Promise<void>> = [];

    for (const entry of chain) {
      const vm = entry.vm;
      if (!vm || vm.state !== 'ready') continue;
      const idx: number[] = [];
      for (let i = 0; i < n; i++) if (current[i] !== null) idx.push(i);
      if (idx.length === 0) break;
      const inputs = idx.map((i) => current[i] as string);

      const leave = this.opts.onEnter?.(entry.id, idx.map((i) => events[i]));
      if (leave === false) continue;
      let outcome;
      try {
        outcome = await vm.process(inputs);
      } catch (err) {
        logger.error(`plugin chain step failed unexpectedly: ${(err as Error).message}`, { pluginConfigId: entry.id, teamId });
        continue;
      } finally {
        if (leave) leave();
      }
      for (let k = 0; k < idx.length; k++) {
        const out = outcome.outputs[k];
        if (out === undefined) continue;
        current[idx[k]] = out;
        changed[idx[k]] = true;
      }

      let lastError: PluginError | null = null;
      outcome.errors.forEach(({ index, error }, nth) => {
        const event = safeParse(inputs[index]);
        lastError = toPluginError(error, event);
        if (nth < MAX_ERROR_LOG_LINES) {
          logger.warn(`plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on event ${describeEvent(event)}: ${error.name}: ${error.message}`, {
            pluginConfigId: entry.id,
            pluginId: entry.pluginId,
            teamId,
            plugin: entry.name,
          });
        }
      });
      if (outcome.errors.length > MAX_ERROR_LOG_LINES) {
        logger.warn(`plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on ${outcome.errors.length - MAX_ERROR_LOG_LINES} more event(s) in this batch`);
      }
      if (outcome.failure) lastError = toPluginError(outcome.failure, undefined);
      if (lastError !== null) {
        const err = lastError;
        writes.push(
          store.setError(entry.id, err).catch((e: unknown) => {
            logger.error(`could not store plugin error for config ${entry.id}: ${(e as Error).message}`);
          }),
        );
      }
    }

    const result = new Array<PluginEvent | null>(n);
    for (let i = 0; i < n; i++) {
      const s = current[i];
      if (s === null) {
        result[i] = null;
        continue;
      }
      if (!changed[i]) {
        result[i] = events[i];
        continue;
      }
      const ev = safeParse(s);
      if (ev === null) {
        result[i] = events[i];
        continue;
      }
      // Plugins may not move events to another team (PostHog resets team_id too).
      if (ev.team_id !== events[i].team_id) ev.team_id = events[i].team_id;
      result[i] = ev as PluginEvent;
    }
    await Promise.all(writes);
    return result;
  }

  private async reloadUnlocked(): Promise<void> {
    if (this.closed) throw new Error('PluginManager is closed');
    const { store, logger, baseDir } = this.opts;
    const rows = await store.loadEnabledConfigs();
    const old = this.gen;
    const next = emptyGeneration();
    const toStart: Array<{ entry: ConfigEntry; row: LoadedPluginConfig }> = [];
    const reused = new Set<PluginVm>();

    for (const row of rows) {
      const meta = { pluginConfigId: row.id, pluginId: row.pluginId, teamId: row.teamId, plugin: row.plugin.name };
      const entry: ConfigEntry = {
        id: row.id,
        pluginId: row.pluginId,
        teamId: row.teamId,
        name: row.plugin.name,
        order: row.order,
        fingerprint: '',
        vm: null,
        loadError: null,
      };
      let code: { code: string; filename: string } | null = null;
      try {
        const src = readPluginRowSource(row.plugin, { baseDir });
        const t = transpilePlugin(src.code, src.main);
        if (t.imports.length > 0) throw new SandboxError('load', importNotAvailable(t.imports[0]));
        const filename = `${src.name.replace(/[^\w@.-]+/g, '_')}/${path.posix.basename(src.main)}`;
        code = { code: t.code, filename };
        entry.fingerprint = sha256(
          t.hash,
          filename,
          String(row.teamId),
          String(row.pluginId),
          JSON.stringify(row.config),
          ...row.attachments.flatMap((a) => [a.key, a.contentType, a.fileName, a.contents]),
        );
      } catch (err) {
        entry.loadError = pluginErrorFrom(err);
        logger.error(`plugin ${row.plugin.name} (config ${row.id}, team ${row.teamId}) failed to load: ${(err as Error).message}`, meta);
      }
      if (code) {
        const prev = old.entries.get(row.id);
        if (prev?.vm && prev.vm.state === 'ready' && prev.fingerprint === entry.fingerprint) {
          entry.vm = prev.vm;
          reused.add(prev.vm);
        } else {
          entry.vm = new PluginVm({
            configId: row.id,
            pluginId: row.pluginId,
            teamId: row.teamId,
            name: row.plugin.name,
            code: code.code,
            filename: code.filename,
            config: row.config,
            attachments: row.attachments,
            limits: this.limits,
            logger,
            ops: this.hostOps,
          });
          toStart.push({ entry, row });
        }
      }
      next.entries.set(entry.id, entry);
      const chain = next.chains.get(entry.teamId) ?? [];
      chain.push(entry);
      next.chains.set(entry.teamId, chain);
    }
    for (const chain of next.chains.values()) chain.sort((a, b) => a.order - b.order || a.id - b.id);

    // Start new isolates (load + setupPlugin), a few at a time.
    const concurrency = Math.max(1, this.opts.loadConcurrency ?? 4);
    let cursor = 0;
    const startOne = async (): Promise<void> => {
      while (cursor < toStart.length) {
        const { entry, row } = toStart[cursor++];
        const meta = { pluginConfigId: row.id, pluginId: row.pluginId, teamId: row.teamId, plugin: row.plugin.name };
        const leave = this.opts.onEnter?.(row.id, []);
        try {
          await entry.vm!.start();
          logger.info(`plugin ${row.plugin.name} loaded (config ${row.id}, team ${row.teamId})`, meta);
          if (row.error !== null) await store.setError(row.id, null); // PostHog clears the error after a good load
        } catch (err) {
          const info = err instanceof SandboxError ? err.info() : { name: 'Error', message: String(err) };
          entry.loadError = toPluginError(info, undefined);
          logger.error(`plugin ${row.plugin.name} (config ${row.id}, team ${row.teamId}) failed to load: ${info.message}`, meta);
        } finally {
          if (leave) leave();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, toStart.length) }, startOne));
    const loadErrors = [...next.entries.values()].filter((e) => e.loadError !== null);
    await Promise.all(
      loadErrors.map((e) =>
        store.setError(e.id, e.loadError).catch((err: unknown) => logger.error(`could not store plugin error for config ${e.id}: ${(err as Error).message}`)),
      ),
    );

    if (this.closed) {
      for (const e of next.entries.values()) if (e.vm && !reused.has(e.vm)) e.vm.dispose();
      throw new Error('PluginManager was closed during reload');
    }
    // Swap in one step, then retire what the new generation does not use.
    this.gen = next;
    const retired = [...old.entries.values()].map((e) => e.vm).filter((v): v is PluginVm => v !== null && !reused.has(v));
    if (retired.length > 0) this.retire(old, retired);
    logger.info(`plugins loaded: ${next.entries.size} config(s) for ${next.chains.size} team(s), ${loadErrors.length} failed`);
  }

  private retire(gen: Generation, vms: PluginVm[]): void {
    const done = (async () => {
      if (gen.active > 0) {
        await new Promise<void>((resolve) => {
          gen.retired = true;
          gen.onIdle = resolve;
        });
      }
      await Promise.all(vms.map((vm) => vm.teardown()));
      for (const vm of vms) vm.dispose();
    })();
    this.retiring.add(done);
    void done.finally(() => this.retiring.delete(done));
  }
}

function describeEvent(event: JsonObject | null): string {
  if (!event) return '(unparseable)';
  const parts: string[] = [];
  const uuid = event.uuid ?? (event.properties && typeof event.properties === 'object' && !Array.isArray(event.properties) ? event.properties.$uuid : undefined);
  if (typeof uuid === 'string') parts.push(`uuid=${uuid}`);
  if (typeof event.event === 'string') parts.push(`event=${JSON.stringify(event.event)}`);
  if (typeof event.distinct_id === 'string') parts.push(`distinct_id=${JSON.stringify(event.distinct_id)}`);
  return parts.length ? parts.join(' ') : '(no id)';
}
