/** The event handed to plugins: `{distinct_id, ip, site_url, team_id, now, sent_at, ...data}`. */
export type { PluginEvent } from '../../protocol/posthog';

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

/**
 * `fetch` inside plugins (PluginManager option `fetch`; CLI --fetch-timeout-ms, --fetch-max-bytes, --fetch-allow).
 * Every request is checked by NetGuard: http(s) only, no loopback/private/link-local/metadata/reserved addresses
 * unless allow-listed.
 */
export interface FetchOptions {
  /** false: plugins get no `fetch` global (default true). */
  enabled?: boolean;
  /** Whole request (DNS, connect, redirects, body), ms (default 10 000). A plugin's own `timeout` can only lower it. */
  timeoutMs?: number;
  /** Largest response body (after decompression, and on the wire) and request body, bytes (default 5 MiB). */
  maxBytes?: number;
  /** Host names ("localhost", "*.corp.example"), IPs and CIDRs exempt from the address check: a comma-separated string or a list. */
  allow?: string | readonly string[];
  /** Requests in flight per plugin config (default 10). */
  concurrency?: number;
  /** Requests waiting for a slot per plugin config; more are rejected at once (default 100). */
  maxQueued?: number;
  /** Redirects followed per request (default 5; a plugin's `follow` can only lower it). */
  maxRedirects?: number;
  /** DNS resolution, for tests (default: dns.lookup, all addresses). */
  lookup?: (hostname: string) => Promise<Array<{ address: string; family: number }>>;
}

export const DEFAULT_FETCH_OPTIONS = Object.freeze({
  timeoutMs: 10_000,
  maxBytes: 5 * 1024 * 1024,
  concurrency: 10,
  maxQueued: 100,
  maxRedirects: 5,
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
