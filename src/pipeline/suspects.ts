/**
 * Task ids that were inside a plugin call when a worker process died, and the (task, plugin config) pairs
 * known to kill the process. A worker runs a suspect alone, one event per call with nothing else in flight,
 * so that another death pins the exact event and config; a poisoned pair is run without that config.
 *
 * The supervisor keeps the master copy (it outlives the workers) and hands it to every worker: whole at
 * start (`toJSON`/`from`), then increments over IPC. Entries expire (default 10 min) and the list is bounded,
 * oldest dropped first: a forgotten suspect is only processed normally again.
 */
export interface SuspectSnapshot {
  /** [taskId, expiresAtMs] */
  suspects: Array<[string, number]>;
  /** [taskId, configId, expiresAtMs] */
  poison: Array<[string, number, number]>;
}

export const DEFAULT_SUSPECT_TTL_MS = 10 * 60_000;
const MAX_ENTRIES = 5_000;

export class SuspectList {
  private readonly suspects = new Map<string, number>();
  private readonly poison = new Map<string, Map<number, number>>();

  constructor(
    private readonly ttlMs = DEFAULT_SUSPECT_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  static from(snapshot: SuspectSnapshot | undefined, ttlMs?: number): SuspectList {
    const list = new SuspectList(ttlMs);
    if (!snapshot) return list;
    for (const [taskId, expires] of snapshot.suspects) list.suspects.set(taskId, expires);
    for (const [taskId, configId, expires] of snapshot.poison) list.setPoison(taskId, configId, expires);
    return list;
  }

  /** Add task ids (and poisoned pairs) with a fresh expiry; returns what was added, for broadcasting. */
  add(taskIds: Iterable<string>, poison: Iterable<[string, number]> = []): SuspectSnapshot {
    const expires = this.now() + this.ttlMs;
    const added: SuspectSnapshot = { suspects: [], poison: [] };
    for (const id of taskIds) {
      this.suspects.delete(id); // re-insert: Map order is the eviction order
      this.suspects.set(id, expires);
      added.suspects.push([id, expires]);
    }
    for (const [taskId, configId] of poison) {
      this.setPoison(taskId, configId, expires);
      added.poison.push([taskId, configId, expires]);
    }
    this.bound();
    return added;
  }

  /** Merge entries received from the supervisor (their expiry kept). */
  merge(snapshot: SuspectSnapshot): void {
    for (const [taskId, expires] of snapshot.suspects) {
      this.suspects.delete(taskId);
      this.suspects.set(taskId, expires);
    }
    for (const [taskId, configId, expires] of snapshot.poison) this.setPoison(taskId, configId, expires);
    this.bound();
  }

  isSuspect(taskId: string): boolean {
    const expires = this.suspects.get(taskId);
    if (expires === undefined) return false;
    if (expires > this.now()) return true;
    this.suspects.delete(taskId);
    return false;
  }

  /** Is this config known to kill the process on this task? */
  isPoisoned(taskId: string, configId: number): boolean {
    const expires = this.poison.get(taskId)?.get(configId);
    return expires !== undefined && expires > this.now();
  }

  get size(): number {
    return this.suspects.size;
  }

  toJSON(): SuspectSnapshot {
    this.prune();
    const poison: Array<[string, number, number]> = [];
    for (const [taskId, configs] of this.poison)
      for (const [configId, expires] of configs) poison.push([taskId, configId, expires]);
    return { suspects: [...this.suspects], poison };
  }

  private setPoison(taskId: string, configId: number, expires: number): void {
    const configs = this.poison.get(taskId) ?? new Map<number, number>();
    configs.set(configId, expires);
    this.poison.delete(taskId);
    this.poison.set(taskId, configs);
  }

  private prune(): void {
    const now = this.now();
    for (const [id, expires] of this.suspects) if (expires <= now) this.suspects.delete(id);
    for (const [id, configs] of this.poison) {
      for (const [configId, expires] of configs) if (expires <= now) configs.delete(configId);
      if (configs.size === 0) this.poison.delete(id);
    }
  }

  private bound(): void {
    if (this.suspects.size <= MAX_ENTRIES && this.poison.size <= MAX_ENTRIES) return;
    this.prune();
    for (const id of this.suspects.keys()) {
      if (this.suspects.size <= MAX_ENTRIES) break;
      this.suspects.delete(id);
    }
    for (const id of this.poison.keys()) {
      if (this.poison.size <= MAX_ENTRIES) break;
      this.poison.delete(id);
    }
  }
}
