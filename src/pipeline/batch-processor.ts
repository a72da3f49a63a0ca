import { decodeTask } from '../../protocol/decode';
import { taskTiming } from '../../protocol/decode';
import { encodeTaskV2 } from '../../protocol/encode';
import { derivedUuid } from '../../protocol/ids';
import { MAX_NESTING_DEPTH, tooDeepReason, valueTooDeep } from '../../protocol/limits';
import {
  PROCESS_EVENT_WITH_PLUGINS,
  ingestionArgsFromTask,
  processEventTask,
  toPluginEvent,
  toProcessEventKwargs,
  type IngestionArgs,
  type PluginEvent,
} from '../../protocol/posthog';
import type { TaskMessage } from '../../protocol/types';
import type { Delivery, Outgoing } from '../brokers/broker';
import type { Logger } from '../log';
import { Gate } from './gate';
import type { SuspectList } from './suspects';

/** The part of the plugin manager the pipeline needs. */
export interface ChainRunner {
  runChain(teamId: number, events: PluginEvent[]): Promise<Array<PluginEvent | null>>;
}

export interface BatchProcessorOptions {
  plugins: ChainRunner;
  logger: Logger;
  /** Celery `origin` header of what we publish. */
  origin: string;
  /** Queue for `process_event` (PostHog's CELERY_DEFAULT_QUEUE). */
  outputQueue: string;
  /** Clock, injectable so replay can judge `expires` against a given instant. */
  now?: () => number;
  /** Replay runs every task at once, whatever its eta. */
  ignoreEta?: boolean;
  /**
   * Tasks that were inside a plugin call when a worker process died: each is run alone (one event per call,
   * nothing else in flight in this process), after the rest of its batch.
   */
  suspects?: SuspectList;
  /**
   * Team chains of one batch run at most this many at a time (default 4). Different teams' isolates run in
   * parallel on isolated-vm's threads when a plugin is asynchronous (a synchronous processEvent runs on this
   * thread), so a few at once keep those busy; many more only add bookkeeping and memory.
   */
  teamConcurrency?: number;
}

const DEFAULT_TEAM_CONCURRENCY = 4;

/** The event (`data`) sits two levels inside a process_event body: `[args, {…, data: {…}}, embed]`. */
const EVENT_DEPTH_IN_BODY = 2;

/**
 * Thrown by a ChainRunner that cannot run any chain now (closed): the batch is given back whole. Any other
 * failure of runChain is taken to be caused by its events (see BatchProcessor.runTeam).
 */
export class ChainUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChainUnavailableError';
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The Celery task id of each event handed to the plugins, for flight records (see PluginManager onEnter). */
const taskIds = new WeakMap<object, string>();

/** The task id of an event object this module handed to the plugins, if any. */
export function taskIdOf(event: object): string | undefined {
  return taskIds.get(event);
}

/** What should happen to one delivery. */
export type Outcome =
  | { kind: 'ack'; delivery: Delivery; outputs: Outgoing[]; result: 'published' | 'dropped' | 'expired' }
  | { kind: 'reject'; delivery: Delivery; reason: string }
  | { kind: 'wait'; delivery: Delivery; dueMs: number };

interface Runnable {
  index: number;
  delivery: Delivery;
  task: TaskMessage;
  args: IngestionArgs;
}

/**
 * One batch of deliveries in, one outcome per delivery out (same order): decode, check task name and
 * timing, run each team's plugin chain once over that team's events (in arrival order), and build the
 * `process_event` messages for what survives. Broker-agnostic; `replay` uses it without any broker.
 */
export class BatchProcessor {
  private readonly now: () => number;
  private readonly gate = new Gate();

  constructor(private readonly opts: BatchProcessorOptions) {
    this.now = opts.now ?? Date.now;
  }

  async process(deliveries: Delivery[]): Promise<Outcome[]> {
    const outcomes: Outcome[] = new Array(deliveries.length);
    const byTeam = new Map<number, Runnable[]>();
    const now = this.now();

    deliveries.forEach((delivery, index) => {
      // Whatever one message does to the steps before the plugins, it is that message's outcome, not the batch's.
      let read: Outcome | Runnable;
      try {
        read = this.read(delivery, index, now);
      } catch (err) {
        read = { kind: 'reject', delivery, reason: `cannot read the task: ${errorText(err)}` };
      }
      if (!('task' in read)) {
        outcomes[index] = read;
        return;
      }
      const team = read.args.team_id;
      const list = byTeam.get(team) ?? [];
      list.push(read);
      byTeam.set(team, list);
    });

    const careful: Runnable[] = [];
    const suspects = this.opts.suspects;
    if (suspects && suspects.size > 0) {
      for (const [teamId, runnables] of byTeam) {
        const normal = runnables.filter((r) => !suspects.isSuspect(r.task.id));
        if (normal.length === runnables.length) continue;
        careful.push(...runnables.filter((r) => suspects.isSuspect(r.task.id)));
        if (normal.length > 0) byTeam.set(teamId, normal);
        else byTeam.delete(teamId);
      }
    }
    if (byTeam.size > 0) {
      const teams = [...byTeam];
      let next = 0;
      // A fixed number of lanes, each taking the next team when its last one is done: at most that many team
      // chains in flight, and no lane waits for a slow team of another.
      const lane = async (): Promise<void> => {
        while (next < teams.length) {
          const [teamId, runnables] = teams[next++] as [number, Runnable[]];
          await this.runTeam(teamId, runnables, outcomes);
        }
      };
      const lanes = Math.max(1, Math.min(this.opts.teamConcurrency ?? DEFAULT_TEAM_CONCURRENCY, teams.length));
      await this.gate.shared(() => Promise.all(Array.from({ length: lanes }, lane)));
    }
    for (const r of careful) {
      this.opts.logger.info('running an event alone: it was in a plugin call when a worker process died', {
        taskId: r.task.id,
        teamId: r.args.team_id,
      });
      await this.gate.exclusive(() => this.runTeam(r.args.team_id, [r], outcomes));
    }
    return outcomes;
  }

  /** Decode, timing and arguments of one delivery: its outcome, or what to run through the plugins. */
  private read(delivery: Delivery, index: number, now: number): Outcome | Runnable {
    const decoded = decodeTask(delivery.message);
    if (!decoded.ok) return { kind: 'reject', delivery, reason: decoded.reason };
    const task = decoded.task;
    if (task.task !== PROCESS_EVENT_WITH_PLUGINS) {
      return {
        kind: 'reject',
        delivery,
        reason: `unknown task ${JSON.stringify(task.task)} (this worker only handles ${PROCESS_EVENT_WITH_PLUGINS})`,
      };
    }
    const timing = taskTiming(task, now);
    if (timing.state === 'expired') return { kind: 'ack', delivery, outputs: [], result: 'expired' };
    if (timing.state === 'wait' && !this.opts.ignoreEta) return { kind: 'wait', delivery, dueMs: timing.dueMs };
    const parsed = ingestionArgsFromTask(task);
    if (!parsed.ok) return { kind: 'reject', delivery, reason: parsed.reason };
    return { index, delivery, task, args: parsed.args };
  }

  /**
   * One team's events through its chain. The chain contains each plugin's failures per event; should it still
   * fail as a whole (something no plugin caught), the events are split in halves and run again, down to the one
   * event that fails alone, which is set aside with the error: one bad message never holds back the others, and
   * the batch is never given back to fail the same way again.
   */
  private async runTeam(teamId: number, runnables: Runnable[], outcomes: Outcome[]): Promise<void> {
    const events = runnables.map((r) => {
      const event = toPluginEvent(r.args);
      taskIds.set(event, r.task.id);
      return event;
    });
    let results: Array<PluginEvent | null>;
    try {
      results = await this.opts.plugins.runChain(teamId, events);
    } catch (err) {
      if (err instanceof ChainUnavailableError) throw err; // not the events' doing: the batch goes back
      if (runnables.length === 1) {
        const r = runnables[0] as Runnable;
        outcomes[r.index] = {
          kind: 'reject',
          delivery: r.delivery,
          reason: `the plugin chain of team ${teamId} failed on this event: ${errorText(err)}`,
        };
        return;
      }
      this.opts.logger.warn(
        `the plugin chain of team ${teamId} failed on ${runnables.length} events (${errorText(err)}): running them in halves to find the event`,
        { teamId },
      );
      const half = Math.ceil(runnables.length / 2);
      await this.runTeam(teamId, runnables.slice(0, half), outcomes);
      await this.runTeam(teamId, runnables.slice(half), outcomes);
      return;
    }
    runnables.forEach((r, i) => {
      const event = results[i] ?? null;
      if (event === null) {
        outcomes[r.index] = { kind: 'ack', delivery: r.delivery, outputs: [], result: 'dropped' };
        return;
      }
      try {
        // The input was checked before the plugins; what a plugin made of it is checked before it is encoded.
        if (event !== events[i] && valueTooDeep(event, MAX_NESTING_DEPTH - EVENT_DEPTH_IN_BODY)) {
          throw new Error(tooDeepReason('event', MAX_NESTING_DEPTH - EVENT_DEPTH_IN_BODY));
        }
        outcomes[r.index] = {
          kind: 'ack',
          delivery: r.delivery,
          outputs: [this.output(r, event)],
          result: 'published',
        };
      } catch (err) {
        // A plugin returned something Python's process_event could not take (e.g. a numeric `now`):
        // keep the input, with the reason, rather than publish a message that crashes a Python worker.
        outcomes[r.index] = {
          kind: 'reject',
          delivery: r.delivery,
          reason: `plugins produced an event that cannot be published: ${errorText(err)}`,
        };
      }
    });
  }

  private output(r: Runnable, event: PluginEvent): Outgoing {
    // The output id derives from the input id: a redelivered input yields the same task id again,
    // so a duplicate is recognisable downstream, and replay output is byte-stable.
    const task = processEventTask(toProcessEventKwargs(event, r.args), {
      id: derivedUuid(`${r.task.id}:process_event`),
      origin: this.opts.origin,
      parentId: r.task.id,
      rootId: r.task.rootId ?? r.task.id,
    });
    return { queue: this.opts.outputQueue, message: encodeTaskV2(task), priority: 0 };
  }
}
