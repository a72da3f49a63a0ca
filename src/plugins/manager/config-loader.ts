import crypto from 'node:crypto';
import type { Logger } from '../../log';
import { pluginErrorFrom } from '../../store/plugin-store';
import type { LoadedPluginConfig } from '../../store/types';
import { compilePluginAsync } from '../loading/compile';
import { type ConfigEntry, emptyGeneration, type Generation, logMetaOf } from './config-entry';
import type { SandboxError } from '../vm/errors';
import type { PluginVm } from '../vm/plugin-vm';
import { readPluginRowSource } from '../loading/source';

export interface ConfigLoaderOptions {
  /** Base directory for relative `file:` plugin urls. */
  baseDir: string;
  logger: Logger;
  /** Modules plugins may import. */
  hostModules: ReadonlySet<string>;
  /** A new (not yet started) VM for an entry. */
  newVm(entry: ConfigEntry, row: LoadedPluginConfig, code: PluginCode): PluginVm;
}

/** A config's compiled code; `hash` identifies the source. */
export interface PluginCode {
  code: string;
  filename: string;
  hash: string;
}

/** A generation built from the store's rows, before its new isolates are started. */
export interface LoadPlan {
  next: Generation;
  /** Entries with a new VM to start, their code, and whether the row had an error to clear once it comes up. */
  toStart: Array<{ entry: ConfigEntry; code: PluginCode; hadError: boolean }>;
  /** VMs of the old generation the new one keeps. */
  reused: Set<PluginVm>;
}

/**
 * Builds the next generation of chains from the enabled configs: compiles each plugin, and keeps the VM of a config
 * whose code, config and attachments did not change (its fingerprint).
 */
export class ConfigLoader {
  constructor(private readonly opts: ConfigLoaderOptions) {}

  async plan(rows: LoadedPluginConfig[], old: Generation): Promise<LoadPlan> {
    const plan: LoadPlan = { next: emptyGeneration(), toStart: [], reused: new Set() };
    for (const row of rows) {
      const entry = newEntry(row);
      const code = await this.compile(entry, row);
      if (code) this.attachVm(plan, entry, row, code, old.entries.get(row.id));
      plan.next.entries.set(entry.id, entry);
      const chain = plan.next.chains.get(entry.teamId) ?? [];
      chain.push(entry);
      plan.next.chains.set(entry.teamId, chain);
    }
    for (const chain of plan.next.chains.values()) chain.sort((a, b) => a.order - b.order || a.id - b.id);
    return plan;
  }

  /** The plugin's code, with the entry's fingerprint set; null (and entry.loadError) when it cannot be compiled. */
  private async compile(entry: ConfigEntry, row: LoadedPluginConfig): Promise<PluginCode | null> {
    try {
      const compiled = await compilePluginAsync(
        readPluginRowSource(row.plugin, { baseDir: this.opts.baseDir }),
        this.opts.hostModules,
      );
      entry.fingerprint = sha256(
        compiled.hash,
        compiled.filename,
        String(row.teamId),
        String(row.pluginId),
        JSON.stringify(row.config),
        ...row.attachments.flatMap((a) => [a.key, a.contentType, a.fileName, a.contents]),
      );
      return { code: compiled.code, filename: compiled.filename, hash: compiled.hash };
    } catch (err) {
      entry.loadError = pluginErrorFrom(err);
      this.opts.logger.error(
        `plugin ${row.plugin.name} (config ${row.id}, team ${row.teamId}) failed to load: ${(err as Error).message}`,
        logMetaOf(entry),
      );
      return null;
    }
  }

  /** Reuse the previous generation's running VM of an unchanged config, or make a new one to start. */
  private attachVm(
    plan: LoadPlan,
    entry: ConfigEntry,
    row: LoadedPluginConfig,
    code: PluginCode,
    prev: ConfigEntry | undefined,
  ): void {
    // Failing setups keep counting across reloads of an unchanged config, so busy installs still disable it.
    if (prev && prev.fingerprint === entry.fingerprint) entry.setupFailures = prev.setupFailures;
    if (prev?.vm && prev.vm.state === 'ready' && prev.fingerprint === entry.fingerprint) {
      entry.vm = prev.vm;
      entry.sink = prev.sink;
      entry.clearErrorOnStart = prev.clearErrorOnStart; // a deferred VM not started yet clears the error when it is
      plan.reused.add(prev.vm);
      return;
    }
    entry.vm = this.opts.newVm(entry, row, code);
    plan.toStart.push({ entry, code, hadError: row.error !== null });
  }
}

/**
 * Run `start` over the entries, `concurrency` at a time. A config that came up has the row's old error cleared (as
 * PostHog does after a good load); one whose setupPlugin failed is marked for a retry once the generation is live.
 */
export async function startEntries(
  toStart: LoadPlan['toStart'],
  concurrency: number,
  start: (entry: ConfigEntry) => Promise<SandboxError | null>,
  clearError: (configId: number) => void,
): Promise<void> {
  await inPool(toStart, concurrency, async ({ entry, hadError }) => {
    const err = await start(entry);
    if (err === null && hadError) clearError(entry.id);
    if (err?.kind === 'setup') entry.retrySetup = true;
  });
}

/** `fn` over the items, at most `concurrency` at a time. */
export async function inPool<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let cursor = 0;
  const worker = async (): Promise<void> => {
    while (cursor < items.length) await fn(items[cursor++]);
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, concurrency), items.length) }, worker));
}

function newEntry(row: LoadedPluginConfig): ConfigEntry {
  return {
    id: row.id,
    pluginId: row.pluginId,
    teamId: row.teamId,
    name: row.plugin.name,
    order: row.order,
    fingerprint: '',
    vm: null,
    loadError: null,
    sink: null,
    setupFailures: 0,
    config: row.config,
    hangs: 0,
    pauses: 0,
    pausedUntil: 0,
  };
}

function sha256(...parts: Array<string | Buffer>): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}
