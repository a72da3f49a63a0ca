import type { JsonObject } from '../../../protocol/types';
import type { PluginError } from '../../store/types';
import type { EventSink } from '../background/event-sink';
import type { TaskKind } from '../vm/driver-client';
import type { PluginVm } from '../vm/plugin-vm';
import type { TaskOutcome } from '../vm/task-call';
import type { SandboxErrorInfo } from '../types';

/** One posthog_pluginlogentry row to write (batched by the sink). */
export interface PluginLogEntry {
  teamId: number;
  pluginId: number;
  pluginConfigId: number;
  source: 'SYSTEM' | 'PLUGIN' | 'CONSOLE';
  type: 'DEBUG' | 'LOG' | 'INFO' | 'WARN' | 'ERROR';
  message: string;
}

export interface PluginLogSink {
  add(entry: PluginLogEntry): void;
}

/** What names a config in log lines and plugin log entries. */
export interface ConfigIdentity {
  id: number;
  pluginId: number;
  teamId: number;
  name: string;
}

/** One enabled plugin config of a generation. */
export interface ConfigEntry extends ConfigIdentity {
  order: number;
  fingerprint: string;
  vm: PluginVm | null;
  loadError: PluginError | null;
  /** onEvent/exportEvents of this config (shared with the next generation when the VM is reused). */
  sink: EventSink | null;
  /** setupPlugin attempts that failed in a row. */
  setupFailures: number;
  /** setupPlugin failed at load: retry it once this entry is live. */
  retrySetup?: boolean;
  /** Its isolate is created on first use, and the row had an error: cleared once it comes up. */
  clearErrorOnStart?: boolean;
  /** A setupPlugin retry is scheduled (the config may come up: its jobs wait). */
  setupRetryPending?: boolean;
  /** processEvent calls in a row that hit the wall-clock deadline. */
  hangs: number;
  /** Pauses so far (each twice as long as the one before). */
  pauses: number;
  /** Skipped in chains until then (ms since epoch): its processEvent keeps hanging. */
  pausedUntil: number;
  config: JsonObject;
}

/** The chains of one load of the configs; a reload builds the next one and swaps it in. */
export interface Generation {
  chains: Map<number, ConfigEntry[]>;
  entries: Map<number, ConfigEntry>;
  /** Chain calls running on this generation. */
  active: number;
  retired: boolean;
  onIdle: (() => void) | null;
}

/** Enters a config's isolate for a background task, under crash attribution (the manager's enterTask). */
export type EnterTask = (
  entry: ConfigEntry,
  vm: PluginVm,
  kind: TaskKind,
  name: string,
  arg: string[],
  wall: number,
) => Promise<TaskOutcome>;

export function emptyGeneration(): Generation {
  return { chains: new Map(), entries: new Map(), active: 0, retired: false, onIdle: null };
}

/** The task never got the plugin's answer because of us (isolate recreated or closed, not ready): not its error. */
export function isInterruption(o: TaskOutcome): boolean {
  return o.interrupted === 'disposed' || o.interrupted === 'not-ready';
}

/** The tags of every log line about a config. */
export function logMetaOf(entry: ConfigIdentity): Record<string, unknown> {
  return { pluginConfigId: entry.id, pluginId: entry.pluginId, teamId: entry.teamId, plugin: entry.name };
}

/** PostHog's error JSON from what the sandbox reported. */
export function toPluginError(info: SandboxErrorInfo, event: JsonObject | null | undefined): PluginError {
  if (info.thrownString) return { message: info.message, time: new Date().toISOString() };
  const e: PluginError = { message: info.message, time: new Date().toISOString(), name: info.name };
  if (info.stack !== undefined) e.stack = info.stack;
  if (event !== undefined) e.event = event;
  return e;
}
