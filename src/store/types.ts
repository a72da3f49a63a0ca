import type { JsonObject, JsonValue } from '../../protocol/types';

/**
 * `posthog_pluginconfig.error`, exactly PostHog's shape: `{message, time}` for string errors and
 * `{message, time, name, stack, event}` for thrown errors (`event` = the event the plugin was given).
 */
export interface PluginError {
  message: string;
  /** ISO 8601 */
  time: string;
  name?: string;
  stack?: string;
  event?: JsonObject | null;
}

export interface PluginRow {
  id: number;
  name: string;
  /** local | custom | repository | source | inline; inferred as migration 0107 did where the column is absent or NULL. */
  pluginType: string;
  url: string | null;
  archive: Buffer | null;
  source: string | null;
  /** posthog_pluginsourcefile rows (PostHog 0233 on): filename → source. */
  sourceFiles: Record<string, string> | null;
  configSchema: JsonValue;
  updatedAt: string | null;
}

export interface PluginAttachment {
  key: string;
  contentType: string;
  fileName: string;
  contents: Buffer;
}

export interface LoadedPluginConfig {
  id: number;
  teamId: number;
  pluginId: number;
  order: number;
  config: JsonObject;
  error: PluginError | null;
  updatedAt: string | null;
  plugin: PluginRow;
  attachments: PluginAttachment[];
}

export interface PluginConfigSummary {
  id: number;
  teamId: number | null;
  pluginId: number;
  pluginName: string;
  pluginType: string | null;
  url: string | null;
  enabled: boolean;
  order: number;
  config: JsonObject;
  error: PluginError | null;
}

export interface InstallPluginInput {
  name: string;
  /** local | custom | repository | source */
  pluginType: string;
  url?: string | null;
  archive?: Buffer | null;
  source?: string | null;
  configSchema?: JsonValue;
  description?: string | null;
  tag?: string | null;
  isGlobal?: boolean;
  /** Default: the organization of `teamId`, else the first organization (PostHog databases from Dec 2020 on). */
  organizationId?: string | null;
  /** The team the plugin is installed for: its organization owns the plugin. */
  teamId?: number | null;
}

export interface CreateConfigInput {
  pluginId: number;
  teamId: number | null;
  order: number;
  config?: JsonObject;
  enabled?: boolean;
}

export interface AttachmentInput {
  pluginConfigId: number;
  teamId: number | null;
  key: string;
  contentType: string;
  fileName: string;
  contents: Buffer;
}
