import { isJsonObject } from '../../../protocol/json';
import type { JsonObject, JsonValue } from '../../../protocol/types';

/**
 * plugin.json's `config` (stored as `posthog_plugin.config_schema`), read the way PostHog's UI read it: a map
 * `{key: field}` or an array of fields; entries without a key (`markdown`) are display-only. PostHog's form stored
 * every value as a string as entered (`choice` too), filled `default`s into a new config and refused to save
 * without the `required` ones; attachments were uploaded separately (posthog_pluginattachment), never in `config`.
 */
export type ConfigFieldType = 'string' | 'choice' | 'attachment' | 'json';

export interface ConfigField {
  key: string;
  type: ConfigFieldType;
  required: boolean;
  secret: boolean;
  default?: JsonValue;
  choices?: string[];
}

const TYPES = new Set<string>(['string', 'choice', 'attachment', 'json']);

export function configFields(schema: JsonValue | null | undefined): ConfigField[] {
  let entries: JsonObject[] = [];
  if (Array.isArray(schema)) entries = schema.filter(isJsonObject);
  else if (isJsonObject(schema))
    entries = Object.entries(schema)
      .filter(([, v]) => isJsonObject(v))
      .map(([key, v]) => ({ key, ...(v as JsonObject) }));
  const out: ConfigField[] = [];
  for (const e of entries) {
    if (typeof e.key !== 'string' || e.key === '') continue;
    const type = typeof e.type === 'string' && TYPES.has(e.type) ? (e.type as ConfigFieldType) : 'string';
    const field: ConfigField = { key: e.key, type, required: e.required === true, secret: e.secret === true };
    if (e.default !== undefined && e.default !== null) field.default = e.default;
    if (Array.isArray(e.choices)) field.choices = e.choices.map((c) => String(c));
    out.push(field);
  }
  return out;
}

export interface ResolvedConfig {
  config: JsonObject;
  /** Why the config cannot be stored (empty: it can). */
  problems: string[];
  /** Required attachment fields: uploaded apart from the config, so only reported. */
  attachmentsNeeded: string[];
}

/**
 * `base` (the stored config, `{}` for a new one) updated with `changes` (a null value removes a key), defaults
 * filled for keys still missing, then checked against the schema. A plugin without a schema takes anything.
 */
export function resolveConfig(
  schema: JsonValue | null | undefined,
  changes: JsonObject,
  base: JsonObject = {},
): ResolvedConfig {
  const fields = configFields(schema);
  const byKey = new Map(fields.map((f) => [f.key, f]));
  const problems: string[] = [];
  const config: JsonObject = { ...base };
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) delete config[key];
    else config[key] = value;
  }
  for (const f of fields)
    if (config[f.key] === undefined && f.default !== undefined && f.type !== 'attachment') config[f.key] = f.default;
  if (fields.length === 0) return { config, problems, attachmentsNeeded: [] };

  const known = fields.filter((f) => f.type !== 'attachment').map((f) => f.key);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) continue;
    const f = byKey.get(key);
    if (!f) problems.push(`unknown key "${key}" (plugin.json config has: ${known.join(', ') || 'no settable keys'})`);
    else if (f.type === 'attachment')
      problems.push(`"${key}" is an attachment: it is uploaded as a file, not set in the config`);
  }
  for (const f of fields) {
    if (f.type === 'attachment') continue;
    const v = config[f.key];
    if (v === undefined || v === '') {
      if (f.required) problems.push(`"${f.key}" is required`);
      continue;
    }
    if (typeof v !== 'string') {
      problems.push(
        `"${f.key}" must be a string (plugin.json type ${f.type}; PostHog stores values as entered), got ${JSON.stringify(v)}`,
      );
      continue;
    }
    if (f.type === 'choice' && f.choices && !f.choices.includes(v)) {
      problems.push(
        `"${f.key}" must be one of ${f.choices.map((c) => JSON.stringify(c)).join(', ')}, got ${JSON.stringify(v)}`,
      );
    }
    if (f.type === 'json' && !parsesAsJson(v))
      problems.push(`"${f.key}" must be JSON text (plugin.json type json), got ${JSON.stringify(v)}`);
  }
  const attachmentsNeeded = fields.filter((f) => f.type === 'attachment' && f.required).map((f) => f.key);
  return { config, problems, attachmentsNeeded };
}

/** The config for display: secret fields masked, as PostHog's API returned them. */
export function maskSecrets(schema: JsonValue | null | undefined, config: JsonObject): JsonObject {
  const secret = new Set(
    configFields(schema)
      .filter((f) => f.secret)
      .map((f) => f.key),
  );
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(config))
    out[k] = secret.has(k) && v !== '' && v !== null ? '**************** POSTHOG SECRET FIELD ****************' : v;
  return out;
}

function parsesAsJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
