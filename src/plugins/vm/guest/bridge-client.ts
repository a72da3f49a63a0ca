/**
 * The guest half of the request/settle bridge (the host half is bridge.ts): a host op call posts
 * (id, op, argsJson) through the ignored $1 Callback and waits, as a promise, for the host's settle(id, ok, json).
 */
import type { HostRequest, OpLimits } from '../contract';
import { hasOwn, NullProto, ObjectCreate, own, parse, PromiseCtor, TypeErrorCtor } from './primordials';

/** Builds the plugin-facing error of an API (FetchError, CacheError…) from a message and a node-fetch style type. */
export type Fail = (message: string, type: string) => Error;
/** Builds the value a call resolves to from the host's parsed result. */
export type Wrap = (result: unknown) => unknown;

interface Pending extends NullProto {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  wrap: Wrap;
  fail: Fail;
  op: string;
}

export interface BridgeClient {
  /** A promise for host op `op` with argument JSON `json`. */
  hostCall(op: string, json: string, wrap: Wrap, fail: Fail): Promise<unknown>;
  /** Completes request `id` (the driver's settle). */
  settle(id: number, ok: boolean, json: string): void;
}

/** A field of a parsed host reply (own properties only: no getter a plugin put on Object.prototype runs). */
function field(o: unknown, key: string): unknown {
  return o !== null && typeof o === 'object' && hasOwn(o, key) ? (o as Record<string, unknown>)[key] : undefined;
}

/** The error a failed host op rejects with: a TypeError, or the API's own error with the host's type and code. */
export function remoteError(v: unknown, fail: Fail): Error {
  const name = field(v, 'name');
  const m = field(v, 'message');
  const message = typeof m === 'string' ? m : 'host call failed';
  if (name === 'TypeError') return new TypeErrorCtor(message);
  const type = field(v, 'type');
  const e = fail(message, typeof type === 'string' ? type : 'system');
  const code = field(v, 'code');
  if (typeof code === 'string') {
    own(e, 'code', code, true);
    own(e, 'errno', code, true);
  }
  return e;
}

/** ops: the host ops offered, with their limits (checked here first, and again by the host). */
export function createBridgeClient(hostRequest: HostRequest, ops: Record<string, OpLimits>): BridgeClient {
  const pending = ObjectCreate(null) as Record<number, Pending | undefined>;
  const pendingPerOp = ObjectCreate(null) as Record<string, number>;
  let lastId = 0;

  function hostCall(op: string, json: string, wrap: Wrap, fail: Fail): Promise<unknown> {
    return new PromiseCtor(function (resolve, reject) {
      const limits = ops[op];
      const count = pendingPerOp[op] || 0;
      if (json.length > limits.maxArgBytes) {
        reject(fail(op + ' request too large: ' + json.length + ' bytes, limit ' + limits.maxArgBytes, 'max-size'));
        return;
      }
      if (count >= limits.maxPending) {
        reject(
          fail(
            'too many ' + op + ' requests at once (limit ' + limits.maxPending + ' per plugin config)',
            'too-many-requests',
          ),
        );
        return;
      }
      const id = ++lastId;
      pending[id] = { __proto__: null, resolve: resolve, reject: reject, wrap: wrap, fail: fail, op: op };
      pendingPerOp[op] = count + 1;
      try {
        hostRequest(id, op, json);
      } catch (_) {
        delete pending[id];
        pendingPerOp[op] = count;
        reject(fail(op + ' failed: the host call could not be made', 'system'));
      }
    });
  }

  function settle(id: number, ok: boolean, json: string): void {
    const p = pending[id];
    if (p === undefined) return;
    delete pending[id];
    pendingPerOp[p.op]--;
    let v: unknown;
    try {
      v = parse(json);
    } catch (_) {
      p.reject(p.fail('malformed reply from the host', 'system'));
      return;
    }
    if (!ok) {
      p.reject(remoteError(v, p.fail));
      return;
    }
    let r: unknown;
    try {
      r = p.wrap(v);
    } catch (e) {
      p.reject(e);
      return;
    }
    p.resolve(r);
  }

  return { hostCall, settle };
}
