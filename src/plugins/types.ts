import type { JsonObject } from '../../protocol/types';

/**
 * The event handed to plugins (same structure as protocol/posthog.ts's PluginEvent, declared here so the two
 * modules don't depend on each other's timing): `{distinct_id, ip, site_url, team_id, now, sent_at, ...data}`.
 */
export type PluginEvent = JsonObject & {
  distinct_id: string;
  ip: string | null;
  site_url: string;
  team_id: number;
  now: string;
  sent_at: string | null;
};

export interface SandboxLimits {
  /** isolated-vm `memoryLimit` per isolate (MB, integer ≥ 8). The heap limit is soft: budget ~2.5× per busy isolate. */
  memoryLimitMb: number;
  /** isolated-vm `timeout` on every entry into an isolate: load, setupPlugin, each batch call (ms, integer > 0). */
  cpuTimeoutMs: number;
  /** Wall-clock deadline per call (covers promises that never settle); the isolate is disposed when it passes. */
  wallTimeoutMs: number;
  /** Cap on the serialized results of one call, checked on the JSON strings before the host parses anything. */
  maxResultBytes: number;
}

export const DEFAULT_LIMITS: SandboxLimits = Object.freeze({
  memoryLimitMb: 64,
  cpuTimeoutMs: 1000,
  wallTimeoutMs: 10_000,
  maxResultBytes: 16 * 1024 * 1024,
});

/** An error thrown inside the sandbox, as the driver reports it. */
export interface SandboxErrorInfo {
  name: string;
  message: string;
  stack?: string;
  /** The plugin threw a string (PostHog records those as `{message, time}` only). */
  thrownString?: boolean;
}

/** A configured plugin as runChain runs it. */
export interface ConfigInfo {
  id: number;
  pluginId: number;
  name: string;
  order: number;
  /** 'ready' runs; 'failed' (load or setupPlugin failed) is skipped until the next reload. */
  state: 'ready' | 'failed';
}
