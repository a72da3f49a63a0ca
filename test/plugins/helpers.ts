import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { tempDir } from '../helpers/temp';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../../src/log';
import { openDatabase } from '../../src/store/database';
import { migrate } from '../../src/store/migrate';
import { PluginStore } from '../../src/store/plugin-store';
import type { PluginEvent } from '../../src/plugins/types';

export { tempDir };

/** fixtures/plugins in the source tree (tests run from dist/test/plugins). */
export const FIXTURES = path.resolve(__dirname, '../../../fixtures/plugins');
export const fixture = (...p: string[]): string => path.join(FIXTURES, ...p);

/** Where a manager's posthog_pluginlogentry rows go in tests, with the console lines of one config at hand. */
export function logSink(): {
  entries: PluginLogEntry[];
  add(e: PluginLogEntry): void;
  console(configId: number): string[];
} {
  const entries: PluginLogEntry[] = [];
  return {
    entries,
    add: (e) => entries.push(e),
    console: (configId) =>
      entries.filter((e) => e.source === 'CONSOLE' && e.pluginConfigId === configId).map((e) => e.message),
  };
}

/** Polls `cond` every 10 ms until it holds; throws naming `what` after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface CapturedLog {
  level: string;
  message: string;
  [key: string]: unknown;
}

/** A winston logger that keeps every entry in memory. */
export function captureLogger(): { logger: Logger; logs: CapturedLog[] } {
  const logs: CapturedLog[] = [];
  const stream = new Writable({
    objectMode: true,
    write(chunk: CapturedLog, _enc, cb) {
      logs.push(chunk);
      cb();
    },
  });
  const logger = winston.createLogger({ level: 'debug', transports: [new winston.transports.Stream({ stream })] });
  return { logger, logs };
}

let uuidCounter = 0;
export function makeEvent(event: string, extra: JsonObject = {}, teamId = 1): PluginEvent {
  uuidCounter++;
  return {
    distinct_id: `user-${uuidCounter}`,
    ip: '127.0.0.1',
    site_url: 'http://localhost:8000',
    team_id: teamId,
    now: '2021-10-01T12:00:00.000Z',
    sent_at: null,
    uuid: `00000000-0000-0000-0000-${String(uuidCounter).padStart(12, '0')}`,
    event,
    properties: { $lib: 'test' },
    ...extra,
  };
}

export async function memoryStore(): Promise<PluginStore> {
  const db = openDatabase('sqlite::memory:');
  await migrate(db);
  return new PluginStore(db);
}

/** Install a fixture (or any path) as a `file:` plugin and give it a config. */
export async function addPlugin(
  store: PluginStore,
  opts: {
    url?: string;
    archive?: Buffer;
    source?: string;
    name?: string;
    teamId?: number | null;
    order?: number;
    config?: JsonObject;
    enabled?: boolean;
    pluginType?: string;
  },
): Promise<{ pluginId: number; configId: number }> {
  const pluginId = await store.installPlugin({
    name: opts.name ?? path.basename(opts.url ?? 'plugin'),
    pluginType: opts.pluginType ?? (opts.source !== undefined ? 'source' : opts.archive ? 'custom' : 'local'),
    url: opts.url ?? null,
    archive: opts.archive ?? null,
    source: opts.source ?? null,
  });
  const configId = await store.createConfig({
    pluginId,
    teamId: opts.teamId === undefined ? 1 : opts.teamId,
    order: opts.order ?? 0,
    config: opts.config ?? {},
    enabled: opts.enabled ?? true,
  });
  return { pluginId, configId };
}

/** Build a zip or tar.gz with Python's zipfile/tarfile. files: archive path → content. */
export function makeArchive(
  kind: 'zip' | 'tgz',
  files: Record<string, string | Buffer>,
  dir = tempDir(),
  opts: { stored?: boolean } = {},
): string {
  const src = path.join(dir, 'src');
  for (const [name, content] of Object.entries(files)) {
    const p = path.join(src, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
  }
  const out = path.join(dir, kind === 'zip' ? 'plugin.zip' : 'plugin.tgz');
  const names = JSON.stringify(Object.keys(files));
  const script =
    kind === 'zip'
      ? `import zipfile, json, sys, os\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.${opts.stored ? 'ZIP_STORED' : 'ZIP_DEFLATED'}) as z:\n    for n in json.loads(sys.argv[3]):\n        z.write(os.path.join(sys.argv[2], n), n)\n`
      : `import tarfile, json, sys, os\nwith tarfile.open(sys.argv[1], 'w:gz', format=tarfile.PAX_FORMAT, pax_headers={'comment': '0123456789abcdef'}) as t:\n    for n in json.loads(sys.argv[3]):\n        t.add(os.path.join(sys.argv[2], n), n)\n`;
  execFileSync('python3', ['-c', script, out, src, names]);
  return out;
}

export function readText(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

import { PluginManager, PluginManagerOptions, type PluginLogEntry } from '../../src/plugins/manager/plugin-manager';
import type { SandboxLimits } from '../../src/plugins/types';

export const FAST_LIMITS: Partial<SandboxLimits> = {
  memoryLimitMb: 16,
  cpuTimeoutMs: 200,
  wallTimeoutMs: 1000,
  maxResultBytes: 1024 * 1024,
};

export interface Harness {
  store: PluginStore;
  manager: PluginManager;
  logs: CapturedLog[];
  ids: Array<{ pluginId: number; configId: number }>;
}

type PluginSpec = Parameters<typeof addPlugin>[1];

/** An in-memory store with the given plugins installed (urls relative to fixtures/plugins), and a manager over it. */
export async function harness(
  plugins: PluginSpec[],
  limits: Partial<SandboxLimits> = FAST_LIMITS,
  extra: Partial<Omit<PluginManagerOptions, 'store' | 'baseDir' | 'limits' | 'logger'>> = {},
): Promise<Harness> {
  const store = await memoryStore();
  const ids = [];
  for (const p of plugins) ids.push(await addPlugin(store, p));
  const { logger, logs } = captureLogger();
  try {
    const manager = await PluginManager.create({ ...extra, store, baseDir: FIXTURES, limits, logger });
    // Plugin errors are written in the background (events never wait for the database): reads wait for them.
    const getError = store.getError.bind(store);
    const listConfigs = store.listConfigs.bind(store);
    store.getError = async (id) => (await manager.flushErrors(), getError(id));
    store.listConfigs = async () => (await manager.flushErrors(), listConfigs());
    return { store, manager, logs, ids };
  } catch (err) {
    await store.db.destroy();
    throw err;
  }
}

export async function closeHarness(h: Harness | undefined): Promise<void> {
  if (!h) return;
  try {
    await h.manager.close();
  } finally {
    await h.store.db.destroy();
  }
}

export function props(e: PluginEvent | null): JsonObject {
  assert.ok(e, 'event was dropped');
  return e.properties as JsonObject;
}
