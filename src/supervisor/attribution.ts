import type { Flight } from '../worker/flight-recorder';

/**
 * How a worker process ended, and what the supervisor concludes from its flight record: which plugin config
 * to charge with the crash, which events to retry alone, which (event, config) pair to never run again.
 */
export type DeathCause =
  /** Died by a signal of its own making: SIGABRT (V8 fatal OOM), SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP. */
  | 'crash'
  /** We SIGKILLed it because it stopped answering heartbeats. */
  | 'hang'
  /** Killed from outside (SIGKILL/SIGTERM by an operator, the kernel's OOM killer). */
  | 'killed'
  /** Exited with a non-zero code (startup error, uncaught exception). */
  | 'error'
  /** Exited 0 without being asked to (should not happen). */
  | 'exit';

const SELF_INFLICTED = new Set(['SIGABRT', 'SIGSEGV', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGTRAP', 'SIGSYS']);

export function classifyDeath(code: number | null, signal: NodeJS.Signals | null, killedForHang: boolean): DeathCause {
  if (killedForHang) return 'hang';
  if (signal !== null) return SELF_INFLICTED.has(signal) ? 'crash' : 'killed';
  return code === 0 ? 'exit' : 'error';
}

export interface Verdict {
  /** The one plugin config to charge with this death, if it can be told. */
  charge: number | null;
  /** Why nothing was charged, or what was. */
  reason: string;
  /** Task ids in plugin calls at the time of death: retried alone. */
  suspects: string[];
  /** [taskId, configId]: this event killed the process in this config; it is run without it from now on. */
  poison: Array<[string, number]>;
  /** A plugin load was among several in flight: the replacement loads its plugins one at a time. */
  serialLoad: boolean;
}

/**
 * A death is charged to a plugin only when it can be the plugin's doing (a self-inflicted signal, a hang; an
 * outside SIGKILL only while a suspect event ran alone, e.g. the kernel's OOM killer hitting it again) and
 * exactly one config was inside an isolate. With one config and one event, that pair is poisoned. Every event
 * that was inside an isolate is retried alone either way, which pins the culprit if it happens again.
 */
export function judge(cause: DeathCause, flights: Flight[] | null): Verdict {
  const list = flights ?? [];
  const suspects = [...new Set(list.flatMap((f) => f.taskIds))];
  const configs = [...new Set(list.map((f) => f.configId))];
  const loading = list.some((f) => f.taskIds.length === 0);
  const verdict: Verdict = { charge: null, reason: '', suspects, poison: [], serialLoad: false };

  if (flights === null) {
    verdict.reason = 'no flight record';
    return verdict;
  }
  if (list.length === 0) {
    verdict.reason = 'no plugin call was in flight';
    return verdict;
  }
  const careful = list.length === 1 && (list[0] as Flight).careful;
  const pluginsDoing = cause === 'crash' || cause === 'hang' || (cause === 'killed' && careful);
  if (!pluginsDoing) {
    verdict.reason = `${cause === 'killed' ? 'killed from outside' : 'not a crash'}: not charged to plugin config(s) ${configs.join(', ')}`;
    return verdict;
  }
  if (configs.length > 1) {
    verdict.reason = `${configs.length} plugin configs (${configs.join(', ')}) were in flight: not charged; their events are retried one by one`;
    verdict.serialLoad = loading;
    return verdict;
  }
  const configId = configs[0] as number;
  verdict.charge = configId;
  if (suspects.length === 1) {
    verdict.poison.push([suspects[0] as string, configId]);
    verdict.reason = `plugin config ${configId} was running event task ${suspects[0]}`;
  } else if (loading && suspects.length === 0) {
    verdict.reason = `plugin config ${configId} was loading (code or setupPlugin)`;
  } else {
    verdict.reason = `plugin config ${configId} was running ${suspects.length} event(s)`;
  }
  return verdict;
}
