import type { Logger } from '../log';
import { openStore } from '../store/open-store';

/** `posthog-plugins list`: one line per plugin config, in chain order per team. */
export async function runList(url: string, json: boolean, logger: Logger): Promise<void> {
  const { db, store } = await openStore(url, logger);
  try {
    const configs = await store.listConfigs();
    if (json) {
      process.stdout.write(JSON.stringify(configs, null, 2) + '\n');
      return;
    }
    if (configs.length === 0) {
      process.stdout.write('no plugin configs (install one with `posthog-plugins install SOURCE --team ID`)\n');
      return;
    }
    const rows = configs.map((c) => [
      String(c.id),
      c.teamId === null ? '-' : String(c.teamId),
      String(c.order),
      c.enabled ? 'enabled' : 'disabled',
      `${c.pluginName} (#${c.pluginId}, ${c.pluginType ?? '?'}${c.url ? `, ${c.url}` : ''})`,
      c.error ? `${c.error.time} ${c.error.message}` : '',
    ]);
    const header = ['config', 'team', 'order', 'state', 'plugin', 'last error'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
    const line = (cells: string[]): string =>
      cells
        .map((c, i) => c.padEnd(widths[i] as number))
        .join('  ')
        .trimEnd() + '\n';
    process.stdout.write(line(header));
    for (const r of rows) process.stdout.write(line(r));
  } finally {
    await db.destroy();
  }
}
