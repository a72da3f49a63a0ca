export { openDatabase, describeDatabaseUrl, databaseKind } from './database';
export { migrate, migrateOwnTables, PLUGIN_TABLES, OWN_TABLES } from './migrate';
export { PluginStore, pluginErrorFrom, parseJsonColumn } from './plugin-store';
export { PluginStorage, STORAGE_KEY_MAX_CHARS } from './plugin-storage';
export { PluginLogWriter, logTypeFor } from './plugin-log-writer';
export type { ConsoleLevel, LogSource, LogType, PluginLogEntryInput, PluginLogWriterOptions } from './plugin-log-writer';
export { JobStore } from './job-store';
export type { ClaimedJob, JobInput } from './job-store';
export type * from './types';
