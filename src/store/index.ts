export { openDatabase, describeDatabaseUrl, databaseKind } from './database';
export { migrate, PLUGIN_TABLES } from './migrate';
export { PluginStore, pluginErrorFrom, parseJsonColumn } from './plugin-store';
export type * from './types';
