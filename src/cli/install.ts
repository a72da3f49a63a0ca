import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { JsonObject } from '../../protocol/types';
import { downloadPlugin, type RemoteOptions } from '../install/resolve';
import { parsePluginSpec } from '../install/spec';
import type { Logger } from '../log';
import { checkPluginLoads } from '../plugins/loading/check';
import { resolveConfig } from '../plugins/loading/config-schema';
import { configSchemaOf, readPluginPath, type PluginSourceCode } from '../plugins/loading/source';
import type { FetchOptions, SandboxLimits } from '../plugins/types';
import {
  configsOfPlugin,
  findConfig,
  findPluginsByUrl,
  setConfigValues,
  updatePluginCode,
} from '../store/plugin-admin';
import type { PluginStore } from '../store/plugin-store';
import type { InstallPluginInput } from '../store/types';
import { openStore } from '../store/open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';
import { parseJsonObject } from '../config';

export interface InstallArgs {
  source: string;
  databaseUrl: string;
  /** Given: local plugins inside it are stored relative to it (`file:rel`); absent: as absolute `file:` paths. */
  baseDir?: string;
  team: number;
  order?: number;
  config: string;
  name?: string;
  disabled: boolean;
  /** Update the plugin already stored with the same url instead of refusing a second install. */
  upgrade: boolean;
  /** Where GitHub/GitLab/npm are, tokens, and the download limits (for links and package names). */
  remote: RemoteOptions;
  limits: Partial<SandboxLimits>;
  fetch: FetchOptions;
  announce: AnnounceTarget;
}

/**
 * `posthog-plugins install SOURCE`: read the plugin and load it in an isolate as a worker would (without
 * setupPlugin), so a broken one is refused here with the compiler's message; check --config against plugin.json
 * (defaults filled, as PostHog's form did); then store it as PostHog would: folders and code files as `local`
 * plugins with a `file:` url, archives as `custom` plugins with the bytes, links and npm packages as PostHog's
 * "install from URL" did (`custom`, the archive, `url` = the repository or package, `tag` = commit or version).
 * A plugin already stored with the same url is reused (PostHog keeps urls unique), never added twice; with
 * --upgrade its code is replaced. Then the team gets a config at the end of its chain (or at --order), and
 * running workers are told on the reload channel.
 */
export async function runInstall(args: InstallArgs, logger: Logger): Promise<void> {
  const changes = parseJsonObject(args.config, '--config') as JsonObject;
  if (!existsSync(args.source) && looksLikePath(args.source))
    throw new Error(`plugin path not found: ${path.resolve(args.source)}`);
  const { plugin, code, origin } = existsSync(args.source) ? fromPath(args) : await fromRemote(args, logger);
  try {
    await checkPluginLoads(code, { limits: args.limits, fetch: args.fetch, logger });
  } catch (err) {
    throw new Error(`${origin} does not load, nothing was stored: ${(err as Error).message}`);
  }
  // A new config is checked before anything is stored; with --upgrade the team may already have one.
  const checked = args.upgrade ? null : checkedConfig(plugin, changes, {}, 'the new config', logger);
  const fresh = (): JsonObject => checked ?? checkedConfig(plugin, changes, {}, 'the new config', logger);

  const { db, store } = await openStore(args.databaseUrl, logger);
  try {
    const existing = plugin.url ? await findPluginsByUrl(store, plugin.url) : [];
    const pluginId = existing[0];
    if (pluginId === undefined) {
      const config = fresh();
      await addConfig(
        store,
        await store.installPlugin({ ...plugin, teamId: args.team }),
        config,
        args,
        logger,
        `installed plugin ${JSON.stringify(plugin.name)}`,
      );
    } else {
      const teamConfigs = await configsOfPlugin(store, pluginId, args.team);
      if (!args.upgrade && teamConfigs.length > 0) {
        throw new Error(
          `${plugin.url} is already installed for team ${args.team} as config #${teamConfigs.join(', #')} (plugin #${pluginId}): ` +
            'use --upgrade to replace its code, or `posthog-plugins config set` to change its config',
        );
      }
      const config = teamConfigs.length === 0 ? fresh() : null;
      if (args.upgrade) await upgrade(store, pluginId, teamConfigs, plugin, changes, logger);
      if (config !== null)
        await addConfig(
          store,
          pluginId,
          config,
          args,
          logger,
          `added plugin ${JSON.stringify(plugin.name)} (already stored)`,
        );
    }
  } finally {
    await db.destroy();
  }
  await announceReload(args.announce, logger);
}

/** Replace the plugin's code and apply --config to the team's configs, each checked against the new schema first. */
async function upgrade(
  store: PluginStore,
  pluginId: number,
  teamConfigs: number[],
  plugin: InstallPluginInput,
  changes: JsonObject,
  logger: Logger,
): Promise<void> {
  const updated: Array<{ id: number; config: JsonObject }> = [];
  for (const id of teamConfigs) {
    const current = await findConfig(store, id);
    if (current) updated.push({ id, config: checkedConfig(plugin, changes, current.config, `config #${id}`, logger) });
  }
  await updatePluginCode(store, pluginId, plugin);
  for (const u of updated) await setConfigValues(store, u.id, u.config);
  logger.info(
    `upgraded plugin ${JSON.stringify(plugin.name)} (#${pluginId})${updated.length ? `; config #${updated.map((u) => u.id).join(', #')} checked against its new schema` : ''}`,
    {
      url: plugin.url,
      ...(plugin.tag ? { tag: plugin.tag } : {}),
    },
  );
}

async function addConfig(
  store: PluginStore,
  pluginId: number,
  config: JsonObject,
  args: InstallArgs,
  logger: Logger,
  what: string,
): Promise<void> {
  const existing = (await store.listConfigs()).filter((c) => c.teamId === args.team);
  const order = args.order ?? existing.reduce((max, c) => Math.max(max, c.order + 1), 0);
  const configId = await store.createConfig({ pluginId, teamId: args.team, order, config, enabled: !args.disabled });
  logger.info(
    `${what} (#${pluginId}) for team ${args.team} at order ${order} as config #${configId}${args.disabled ? ' (disabled)' : ''}`,
  );
}

/** --config applied to `base` and checked against the plugin's schema; every problem at once, or the config. */
function checkedConfig(
  plugin: InstallPluginInput,
  changes: JsonObject,
  base: JsonObject,
  what: string,
  logger: Logger,
): JsonObject {
  const r = resolveConfig(plugin.configSchema, changes, base);
  if (r.problems.length > 0)
    throw new Error(
      `--config does not fit plugin.json of ${JSON.stringify(plugin.name)} for ${what}: ${r.problems.join('; ')}`,
    );
  if (r.attachmentsNeeded.length > 0) {
    logger.warn(
      `plugin ${JSON.stringify(plugin.name)} needs attachment(s) ${r.attachmentsNeeded.join(', ')} (posthog_pluginattachment, as PostHog's upload stored them); until then its setupPlugin may fail`,
    );
  }
  return r.config;
}

interface Prepared {
  plugin: InstallPluginInput;
  code: PluginSourceCode;
  origin: string;
}

function fromPath(args: InstallArgs): Prepared {
  const abs = path.resolve(args.source);
  const code = readPluginPath(abs);
  const name = args.name ?? code.name;
  const isArchive = statSync(abs).isFile() && !/\.[cm]?[jt]s$/i.test(abs);
  const configSchema = configSchemaOf(code.pluginJson);
  if (isArchive) {
    if (args.upgrade)
      throw new Error(
        `--upgrade needs a folder, a code file or a link: an uploaded archive (${abs}) has no url to find it by`,
      );
    return {
      plugin: { name, pluginType: 'custom', url: null, archive: readFileSync(abs), configSchema },
      code,
      origin: abs,
    };
  }
  return { plugin: { name, pluginType: 'local', url: localUrl(abs, args.baseDir), configSchema }, code, origin: abs };
}

/** `file:/abs/path` as PostHog stored local plugins, or relative to a stated base dir when inside it. */
function localUrl(abs: string, baseDir: string | undefined): string {
  if (baseDir === undefined) return `file:${abs}`;
  const rel = path.relative(path.resolve(baseDir), abs);
  return rel === '' || rel.startsWith('..') || path.isAbsolute(rel) ? `file:${abs}` : `file:${rel}`;
}

async function fromRemote(args: InstallArgs, logger: Logger): Promise<Prepared> {
  const gitlabHost = safeHost(args.remote.gitlabUrl);
  const spec = parsePluginSpec(args.source, { gitlabHosts: gitlabHost ? [gitlabHost] : [] });
  logger.info(`downloading ${args.source}`, { spec });
  const got = await downloadPlugin(spec, args.remote);
  const description = typeof got.code.pluginJson?.description === 'string' ? got.code.pluginJson.description : '';
  return {
    plugin: {
      name: args.name ?? got.code.name,
      pluginType: 'custom',
      url: got.url,
      tag: got.tag,
      archive: got.archive,
      description,
      configSchema: configSchemaOf(got.code.pluginJson),
    },
    code: got.code,
    origin: `${got.label} (${got.archive.length} bytes from ${got.archiveUrl})`,
  };
}

/** Not a link or a package name (`@scope/name`, `name@1.2.3`): a path that someone mistyped. */
function looksLikePath(source: string): boolean {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source) || source.startsWith('@') || /^[^./][^/]*\.[^/]*\//.test(source))
    return false; // a link without its scheme: github.com/…
  return /^[.~/]/.test(source) || source.includes(path.sep) || /\.(zip|tgz|tar\.gz|tar|[cm]?[jt]s)$/i.test(source);
}

function safeHost(url: string): string | null {
  try {
    return new URL(url).hostname;
  } catch {
    return null;
  }
}
