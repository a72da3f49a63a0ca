/**
 * The Celery wire contract with Python: pure functions and types, no I/O.
 */
export type { JsonValue, JsonObject, RawMessage, TaskMessage, OutgoingTask } from './types';
export { parseKombuJson, stringifyForPython, reviveKombuTags, isTaggedShape, KombuTagError } from './json';
export { decompress, DEFAULT_MAX_DECOMPRESSED_BYTES } from './compression';
export type { DecompressOptions } from './compression';
export { decodeTask, taskTiming, checkContentType } from './decode';
export type { DecodeResult, DecodeOptions, TaskTiming } from './decode';
export { encodeTaskV2, LANG } from './encode';
export {
  parseEnvelope,
  buildEnvelope,
  priorityKey,
  priorityStep,
  consumeKeys,
  queueFromKey,
  messagePriority,
  unackedRecord,
  parseUnackedRecord,
  markRedelivered,
  bindingMember,
  parseBindingMember,
  DEFAULT_SEP,
  DEFAULT_PRIORITY_STEPS,
  MIN_PRIORITY,
  MAX_PRIORITY,
} from './redis-envelope';
export type { EnvelopeResult, EnvelopeOptions, KeyOptions, UnackedRecordResult, Binding } from './redis-envelope';
export {
  PROCESS_EVENT_WITH_PLUGINS,
  PROCESS_EVENT,
  INGESTION_PARAMS,
  TOP_LEVEL_FIELDS,
  ingestionArgsFromTask,
  toPluginEvent,
  toProcessEventKwargs,
  processEventTask,
  processEventWithPluginsTask,
} from './posthog';
export type { IngestionArgs, IngestionArgsResult, PluginEvent, TaskOptions } from './posthog';
export { randomTaskId, derivedUuid, uuidV5, isUuid, POSTHOG_PLUGINS_NAMESPACE, NAMESPACE_DNS } from './ids';
export { pythonRepr, truncatedRepr, truncateRepr, REPR_MAX_LENGTH } from './repr';
export { parseIsoDateTime, formatPythonUtcIso } from './time';
export type { NaiveZone } from './time';
