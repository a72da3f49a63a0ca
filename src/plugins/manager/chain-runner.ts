import { isJsonObject } from '../../../protocol/json';
import { restoreLosslessNumbers } from '../../../protocol/lossless-numbers';
import type { JsonObject } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { PluginError } from '../../store/types';
import { type ConfigEntry, logMetaOf, toPluginError } from './config-entry';
import type { ConfigHealth } from './config-health';
import type { SinkEvent } from '../background/event-sink';
import type { PluginEvent } from '../types';

/** At most this many per-event error lines per config per call; the rest are counted. */
const MAX_ERROR_LOG_LINES = 5;

export interface ChainRunnerOptions {
  logger: Logger;
  health: ConfigHealth;
  /** See PluginManagerOptions.onEnter. */
  onEnter?: (configId: number, events: readonly PluginEvent[]) => (() => void) | false | void;
  /** See PluginManagerOptions.onCall. */
  onCall?: (
    config: { id: number; name: string },
    seconds: number,
    outcome: { errors: number; recreated: number },
  ) => void;
  /** See PluginManagerOptions.taskIdOf. */
  taskIdOf?: (event: PluginEvent) => string | undefined;
  /** Called before a config without an isolate (not created yet, or evicted) gets events. */
  wake?: (entry: ConfigEntry) => Promise<void>;
}

export interface ChainResult {
  /** The final event per input, or null when a plugin dropped it. */
  result: Array<PluginEvent | null>;
  /** The final events' JSON as the last plugin gave it (null: dropped). */
  finals: Array<string | null>;
}

/** Runs one team's chain of processEvent calls over a batch, and reports what each config did. */
export class ChainRunner {
  constructor(private readonly opts: ChainRunnerOptions) {}

  async run(chain: ConfigEntry[], teamId: number, events: PluginEvent[]): Promise<ChainResult> {
    const { logger, health } = this.opts;
    const n = events.length;
    const current: Array<string | null> = events.map((e) => JSON.stringify(e));
    const changed = new Array<boolean>(n).fill(false);

    for (const entry of chain) {
      const vm = entry.vm;
      if (!vm || vm.state !== 'ready') continue;
      if (!vm.exports.processEvent && !vm.exports.processEventBatch) continue; // exporters: nothing to change
      if (entry.pausedUntil > Date.now()) continue; // keeps hanging: events pass it unchanged for a while
      const idx: number[] = [];
      for (let i = 0; i < n; i++) if (current[i] !== null) idx.push(i);
      if (idx.length === 0) break;
      const inputs = idx.map((i) => current[i] as string);
      if (vm.hibernated && this.opts.wake) {
        await this.opts.wake(entry);
        if (vm.state !== 'ready') continue; // its load or setupPlugin failed: recorded, events pass it unchanged
      }

      const leave = this.opts.onEnter?.(
        entry.id,
        idx.map((i) => events[i]),
      );
      if (leave === false) continue;
      let outcome;
      const started = process.hrtime.bigint();
      try {
        outcome = await vm.process(inputs);
        this.opts.onCall?.(entry, Number(process.hrtime.bigint() - started) / 1e9, {
          errors: outcome.errors.length + (outcome.failure ? 1 : 0),
          recreated: outcome.recreated,
        });
      } catch (err) {
        logger.error(`plugin chain step failed unexpectedly: ${(err as Error).message}`, {
          pluginConfigId: entry.id,
          teamId,
        });
        continue;
      } finally {
        if (leave) leave();
      }
      for (let k = 0; k < idx.length; k++) {
        const out = outcome.outputs[k];
        if (out === undefined) continue;
        current[idx[k]] = out;
        changed[idx[k]] = true;
      }

      let lastError: PluginError | null = null;
      outcome.errors.forEach(({ index, error }, nth) => {
        const event = safeParse(inputs[index]);
        lastError = toPluginError(error, event);
        if (nth < MAX_ERROR_LOG_LINES) {
          health.logEntry(
            entry,
            'PLUGIN',
            'ERROR',
            `processEvent failed on event ${describeEvent(event)}: ${error.name}: ${error.message}`,
          );
          logger.warn(
            `plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on event ${describeEvent(event)}: ${error.name}: ${error.message}`,
            {
              pluginConfigId: entry.id,
              pluginId: entry.pluginId,
              teamId,
              plugin: entry.name,
              taskId: this.opts.taskIdOf?.(events[idx[index] as number] as PluginEvent) ?? null,
            },
          );
        }
      });
      if (outcome.errors.length > MAX_ERROR_LOG_LINES) {
        logger.warn(
          `plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on ${outcome.errors.length - MAX_ERROR_LOG_LINES} more event(s) in this batch`,
          logMetaOf(entry),
        );
      }
      if (outcome.failure) lastError = toPluginError(outcome.failure, undefined);
      if (lastError !== null) health.errors.set(entry.id, lastError);
      health.noteHangs(entry, outcome.deadlines); // after the call's own error: a pause is the more useful record
    }

    const result = new Array<PluginEvent | null>(n);
    for (let i = 0; i < n; i++) {
      const s = current[i];
      if (s === null) {
        result[i] = null;
        continue;
      }
      if (!changed[i]) {
        result[i] = events[i];
        continue;
      }
      const ev = safeParse(s);
      if (ev === null) {
        result[i] = events[i];
        continue;
      }
      // Plugins may not move events to another team (PostHog resets team_id too).
      if (ev.team_id !== events[i].team_id) ev.team_id = events[i].team_id;
      // Numbers the plugins saw as JS numbers and gave back unchanged are written as Python sent them.
      result[i] = restoreLosslessNumbers(events[i], ev) as PluginEvent;
    }
    return { result, finals: current };
  }
}

/** onEvent/exportEvents of every config in the chain get the events that made it through. */
export function feedSinks(chain: ConfigEntry[], { result, finals }: ChainResult): void {
  let items: SinkEvent[] | null = null;
  for (const entry of chain) {
    if (!entry.sink) continue;
    items ??= result.flatMap((ev, i) =>
      ev === null
        ? []
        : [{ json: finals[i] ?? JSON.stringify(ev), name: typeof ev.event === 'string' ? ev.event : undefined }],
    );
    entry.sink.push(items);
  }
}

function safeParse(json: string): JsonObject | null {
  try {
    const v = JSON.parse(json) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as JsonObject) : null;
  } catch {
    return null;
  }
}

function describeEvent(event: JsonObject | null): string {
  if (!event) return '(unparseable)';
  const parts: string[] = [];
  const props = event.properties;
  const uuid = event.uuid ?? (isJsonObject(props) ? props.$uuid : undefined);
  if (typeof uuid === 'string') parts.push(`uuid=${uuid}`);
  if (typeof event.event === 'string') parts.push(`event=${JSON.stringify(event.event)}`);
  if (typeof event.distinct_id === 'string') parts.push(`distinct_id=${JSON.stringify(event.distinct_id)}`);
  return parts.length ? parts.join(' ') : '(no id)';
}
