import type { JobStore } from '../../store/job-store';
import { type HostOp, PluginFacingError } from '../vm/bridge';

/**
 * meta.jobs.NAME(payload).runNow() / runIn(n, unit) / runAt(date): {name, payload: JSON text, runAt: epoch ms}
 * → null. The job is stored (posthog_plugins_job) before the plugin's promise resolves, so it survives restarts.
 */
const MAX_PAYLOAD_CHARS = 1024 * 1024;

function fail(message: string): never {
  throw new PluginFacingError('JobError', message);
}

export function createJobsOp(jobs: Pick<JobStore, 'enqueue'>): HostOp {
  return {
    maxArgBytes: MAX_PAYLOAD_CHARS + 1024,
    concurrency: 10,
    maxQueued: 1000,
    errorName: 'JobError',
    async run(raw, ctx) {
      const args = (raw ?? {}) as Record<string, unknown>;
      const { name, payload, runAt } = args;
      if (typeof name !== 'string' || name.length === 0 || name.length > 200)
        fail('job names are strings of 1 to 200 characters');
      if (name.startsWith('$')) fail(`job names starting with $ are the worker's own: ${JSON.stringify(name)}`);
      if (typeof payload !== 'string') fail('job payloads must be JSON');
      if (typeof runAt !== 'number' || !Number.isFinite(runAt)) fail('invalid run time');
      try {
        await jobs.enqueue({
          pluginConfigId: ctx.plugin.pluginConfigId,
          teamId: ctx.plugin.teamId,
          name,
          payloadJson: payload,
          runAt: new Date(runAt),
        });
      } catch (err) {
        ctx.logger.warn(`meta.jobs.${name}: could not store the job: ${(err as Error).message}`, ctx.logMeta);
        fail(`job ${JSON.stringify(name)} could not be stored: the database did not answer (see the worker log)`);
      }
      return null;
    },
  };
}
