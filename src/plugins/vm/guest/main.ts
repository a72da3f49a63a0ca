/**
 * The guest's entry: evaluated in every fresh context before the plugin, with $0..$3 as contract.ts describes.
 * It keeps both Callbacks and every builtin it needs in its closure, installs only plain functions on globalThis
 * (console, require, module, exports, RetryError, posthog, and `fetch` when the host offers it) and the meta APIs,
 * and hands the driver to the build's footer, which returns it to the host. Nothing reachable from plugin code
 * leads back to the host.
 */
import type { Driver, GuestAttachment, GuestInit, HostLog, HostRequest } from '../contract';
import { buildAttachments } from './attachments';
import { createBridgeClient } from './bridge-client';
import { createConsole } from './console';
import { createDriver } from './driver';
import { RetryError } from './errors';
import { createFetch } from './fetch';
import { createMetaApis } from './meta-apis';
import { createModuleSystem } from './modules';
import { defineGlobal, parse } from './primordials';

declare const $0: HostLog;
declare const $1: HostRequest;
declare const $2: string;
declare const $3: GuestAttachment[];
/** Declared by the build's banner; its footer returns it. */
declare let guestDriver: Driver;

const init = parse($2) as GuestInit;
const ops = init.ops;

const sink = createConsole($0, init.maxLogLine, init.maxLogLinesPerSecond);
defineGlobal('console', sink.console);

const meta: Record<string, unknown> = { config: init.config, attachments: buildAttachments($3), global: {} };

const modules = createModuleSystem(init.importMessage);
defineGlobal('module', modules.module);
defineGlobal('exports', modules.module.exports);
defineGlobal('require', modules.require);

const bridge = createBridgeClient($1, ops);
const pluginFetch = createFetch(bridge);
if (ops.fetch) defineGlobal('fetch', pluginFetch);

defineGlobal('RetryError', RetryError);
modules.hostModules['@posthog/plugin-scaffold'] = { RetryError: RetryError };
if (ops.fetch) modules.hostModules['node-fetch'] = pluginFetch;

const apis = createMetaApis(bridge, ops, init.unavailable);
defineGlobal('posthog', apis.posthog);
meta.cache = apis.cache;
meta.storage = apis.storage;
meta.utils = { cursor: apis.cursor };
meta.jobs = apis.jobs;

// eslint-disable-next-line prefer-const, @typescript-eslint/no-unused-vars -- the build's footer returns it
guestDriver = createDriver(meta, sink.flushDropped, bridge.settle);
