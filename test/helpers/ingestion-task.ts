import { processEventWithPluginsTask } from '../../protocol/posthog';
import type { JsonObject, OutgoingTask } from '../../protocol/types';

/** process_event_with_plugins as Django's capture sends it, numbered so tests can tell events apart. */
export function ingestionTask(
  n: number,
  opts: { teamId?: number; data?: JsonObject; eta?: Date; expires?: Date } = {},
): OutgoingTask {
  const task = processEventWithPluginsTask(
    {
      distinct_id: `user-${n}`,
      ip: '127.0.0.1',
      site_url: 'http://localhost:8000',
      data: opts.data ?? { event: `e${n}`, uuid: `u${n}`, properties: { n } },
      team_id: opts.teamId ?? 2,
      now: '2021-10-01T12:00:00.000Z',
      sent_at: null,
    },
    { id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, origin: 'test@django' },
  );
  if (opts.eta) task.eta = opts.eta;
  if (opts.expires) task.expires = opts.expires;
  return task;
}
