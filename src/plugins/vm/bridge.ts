import type ivm from 'isolated-vm';
import type { Logger } from '../../log';
import type { Driver, SettleError } from './contract';

/**
 * The host half of the request/settle bridge (docs/isolated-vm.md#bridge). Plugin code calls a plain function set by
 * the guest (e.g. `fetch`); the guest (vm/guest/bridge-client.ts) posts `(id, op, argsJson)` through an ignored
 * Callback and keeps the promise in a closure. The host runs the op named in the registry and re-enters the isolate
 * with `settle(id, ok, resultJson)` through `Reference.apply` with its own CPU `timeout`, so code that resumes after
 * `await fetch(...)` is as bounded as the first entry. Plugin code never sees a Reference, Callback or this object.
 *
 * Adding an async host API (cache, storage, …) = one more entry in the ops registry plus its shim in
 * vm/guest/meta-apis.ts.
 */

/** Which plugin config a host call comes from (cache keys, storage rows, jobs are scoped by it). */
export interface PluginIdentity {
  pluginConfigId: number;
  pluginId: number;
  teamId: number;
}

export interface HostOpContext {
  /** The calling plugin config. */
  plugin: Readonly<PluginIdentity>;
  /** Aborted when the isolate is disposed (limit hit, reload, shutdown): stop the work. */
  signal: AbortSignal;
  logger: Logger;
  /** pluginConfigId, pluginId, teamId, plugin: tag every log line with them. */
  logMeta: Readonly<Record<string, unknown>>;
  /** A warning about the plugin's call, tagged and rate-limited per plugin config. */
  warn(message: string): void;
}

export interface HostOp {
  /** Largest argument JSON accepted, in UTF-16 units (checked before parsing; the guest checks it too). */
  maxArgBytes: number;
  /** Calls of this op running at once per plugin config. */
  concurrency: number;
  /** Calls waiting for a free slot; beyond that a call is rejected at once. */
  maxQueued: number;
  /** `name` of the errors the plugin sees for refused calls (e.g. 'FetchError'). */
  errorName: string;
  /** The work. The result must survive JSON.stringify; throw a PluginFacingError for what the plugin may see. */
  run(args: unknown, ctx: HostOpContext): Promise<unknown>;
}

export type HostOps = ReadonlyMap<string, HostOp>;

/** An error the plugin is shown as is (name, message, type, code). Anything else becomes a generic message. */
export class PluginFacingError extends Error {
  constructor(
    name: string,
    message: string,
    readonly type?: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = name;
  }
}

export interface BridgeOptions {
  /** isolated-vm `timeout` for every settle (the plugin's CPU limit per entry). */
  timeout: number;
  plugin: PluginIdentity;
  logger: Logger;
  logMeta: Readonly<Record<string, unknown>>;
  /**
   * A settle failed in a way that leaves the isolate unusable or its call stuck (timeout, memory, disposal). Other
   * settle failures are the plugin's own unhandled rejections: logged (rate-limited), the isolate is fine.
   */
  onFatal(err: unknown): void;
}

interface Lane {
  running: number;
  queue: Array<() => void>;
}

/** Errors from a settle that are the plugin's own (an unhandled rejection), i.e. not a limit or a disposal. */
export function isFatalEntryError(err: unknown): boolean {
  const msg =
    typeof (err as { message?: unknown })?.message === 'string' ? (err as { message: string }).message : String(err);
  return /timed out|memory limit|disposed|abandoned|Isolate is|released/i.test(msg);
}

const MAX_INVALID_WARNINGS = 5;
/** Warnings from host ops per config per minute; the rest are counted and reported with the next one. */
const WARNINGS_PER_MINUTE = 10;

export class Bridge {
  private closed = false;
  private readonly abort = new AbortController();
  /** Ids running or queued; an id can be used once at a time. */
  private readonly ids = new Set<number>();
  private readonly lanes = new Map<string, Lane>();
  private invalid = 0;
  private warnWindow = 0;
  private warnCount = 0;
  private warnDropped = 0;
  private readonly ctx: HostOpContext;
  /** Settles running inside the isolate right now. */
  settling = 0;

  constructor(
    private readonly settleRef: ivm.Reference<Driver['settle']>,
    private readonly ops: HostOps,
    private readonly opts: BridgeOptions,
  ) {
    this.ctx = {
      plugin: Object.freeze({ ...opts.plugin }),
      signal: this.abort.signal,
      logger: opts.logger,
      logMeta: opts.logMeta,
      warn: (m) => this.warn(m),
    };
  }

  /** Requests running or waiting. */
  get inflight(): number {
    return this.ids.size;
  }

  /** The isolate's request callback. Called later on the host loop (ignored Callback); never throws. */
  onRequest(id: unknown, op: unknown, json: unknown): void {
    if (this.closed) return;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0 || this.ids.has(id)) {
      // Only the guest makes requests, with fresh ids: this one cannot be answered.
      if (this.invalid++ < MAX_INVALID_WARNINGS)
        this.opts.logger.warn(`bridge: ignored a request with an invalid id`, this.opts.logMeta);
      return;
    }
    this.ids.add(id);
    const hostOp = typeof op === 'string' ? this.ops.get(op) : undefined;
    if (!hostOp) {
      this.settle(id, false, {
        name: 'TypeError',
        message: `unknown host call ${JSON.stringify(String(op).slice(0, 40))}`,
      });
      return;
    }
    const name = op as string;
    if (typeof json !== 'string') {
      this.settle(id, false, { name: 'TypeError', message: `${name}: malformed request` });
      return;
    }
    if (json.length > hostOp.maxArgBytes) {
      this.settle(id, false, {
        name: hostOp.errorName,
        message: `${name} request too large: ${json.length} bytes, limit ${hostOp.maxArgBytes}`,
        type: 'max-size',
      });
      return;
    }
    let args: unknown;
    try {
      args = JSON.parse(json);
    } catch {
      this.settle(id, false, { name: 'TypeError', message: `${name}: malformed request` });
      return;
    }
    let lane = this.lanes.get(name);
    if (!lane) {
      lane = { running: 0, queue: [] };
      this.lanes.set(name, lane);
    }
    const start = (): void => void this.execute(id, name, hostOp, lane!, args);
    if (lane.running < hostOp.concurrency) {
      lane.running++;
      start();
    } else if (lane.queue.length < hostOp.maxQueued) {
      lane.queue.push(start);
    } else {
      this.settle(id, false, {
        name: hostOp.errorName,
        message: `too many ${name} requests at once: ${lane.running} running and ${lane.queue.length} waiting (limit ${hostOp.concurrency} + ${hostOp.maxQueued} per plugin config)`,
        type: 'too-many-requests',
      });
    }
  }

  /** Stop: abort running ops, drop queued ones, answer nothing more. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort(new Error('plugin isolate closed'));
    for (const lane of this.lanes.values()) lane.queue.length = 0;
    this.ids.clear();
  }

  private async execute(id: number, name: string, op: HostOp, lane: Lane, args: unknown): Promise<void> {
    let ok = true;
    let payload: unknown;
    try {
      payload = await op.run(args, this.ctx);
    } catch (err) {
      ok = false;
      if (err instanceof PluginFacingError) {
        payload = { name: err.name, message: err.message, type: err.type, code: err.code } satisfies SettleError;
      } else {
        if (!this.closed)
          this.opts.logger.error(
            `host call ${name} failed unexpectedly: ${(err as Error)?.stack ?? String(err)}`,
            this.opts.logMeta,
          );
        payload = { name: 'Error', message: `${name} failed (host error)` } satisfies SettleError;
      }
    } finally {
      const next = lane.queue.shift();
      if (next) next();
      else lane.running--;
    }
    this.settle(id, ok, payload);
  }

  private warn(message: string): void {
    const now = Date.now();
    if (now - this.warnWindow >= 60_000) {
      this.warnWindow = now;
      this.warnCount = 0;
    }
    if (++this.warnCount > WARNINGS_PER_MINUTE) {
      this.warnDropped++;
      return;
    }
    const more = this.warnDropped > 0 ? ` (${this.warnDropped} similar warning(s) suppressed before this one)` : '';
    this.warnDropped = 0;
    this.opts.logger.warn(message + more, this.opts.logMeta);
  }

  private settle(id: number, ok: boolean, payload: unknown): void {
    if (this.closed) return;
    this.ids.delete(id);
    let json: string;
    try {
      json = JSON.stringify(payload ?? null);
    } catch {
      ok = false;
      json = JSON.stringify({ name: 'Error', message: 'host call returned an unserializable result' });
    }
    this.settling++;
    this.settleRef.apply(undefined, [id, ok, json], { arguments: { copy: true }, timeout: this.opts.timeout }).then(
      () => {
        this.settling--;
      },
      (err: unknown) => {
        this.settling--;
        if (this.closed) return;
        if (isFatalEntryError(err)) {
          this.opts.onFatal(err);
        } else {
          const e = (err ?? {}) as { name?: unknown; message?: unknown };
          this.warn(
            `unhandled rejection in plugin code after a host call: ${String(e.name ?? 'Error')}: ${String(e.message ?? err)}`.slice(
              0,
              2000,
            ),
          );
        }
      },
    );
  }
}
