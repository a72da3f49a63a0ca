import { PluginStore } from '../store/plugin-store';
import type { PluginError } from '../store/types';

/**
 * The plugin store as a worker process uses it: errors are written only to configs that are still enabled.
 * When the supervisor disables a config that keeps crashing, a sibling may be loading that config at that very
 * moment (it read the row a second earlier); its "setupPlugin failed" or "loaded fine, clear the error" must not
 * overwrite the reason the config was disabled. One conditional UPDATE, so there is no window.
 */
export class WorkerPluginStore extends PluginStore {
  override async setError(configId: number, error: PluginError | null): Promise<void> {
    await this.db('posthog_pluginconfig')
      .where('id', configId)
      .where('enabled', true)
      .update({ error: error === null ? null : JSON.stringify(error) });
  }
}
