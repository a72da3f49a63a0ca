import fs from 'node:fs';
import path from 'node:path';
import { isJsonObject } from '../../../protocol/json';
import type { JsonObject } from '../../../protocol/types';
import type { PluginRow } from '../../store/types';
import { Archive, ArchiveError, openArchive, sniffArchive, normalizeArchivePath } from './archive';

/** The code of one plugin, ready to transpile. */
export interface PluginSourceCode {
  /** Display name: plugin.json `name`, else the file or folder name. */
  name: string;
  /** Path of the main file inside the plugin (e.g. "index.ts"); its extension picks the loader. */
  main: string;
  code: string;
  /** Parsed plugin.json, or null when there is none (single-file plugins, the source column). */
  pluginJson: JsonObject | null;
  /** Where the code came from, for logs ("file:/abs/dir", "archive (zip)", "source column"). */
  origin: string;
}

export class PluginSourceError extends Error {
  override name = 'PluginSourceError';
}

const CODE_EXTENSIONS = ['.js', '.ts', '.mjs', '.cjs', '.mts', '.cts'];
const ARCHIVE_EXTENSIONS = ['.zip', '.tgz', '.tar.gz', '.tar'];
const DEFAULT_MAINS = ['index.js', 'index.ts'];

function decodeText(buf: Buffer): string {
  const s = buf.toString('utf8');
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

function parsePluginJson(text: string, where: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new PluginSourceError(`invalid plugin.json in ${where}: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new PluginSourceError(`invalid plugin.json in ${where}: not an object`);
  return v as JsonObject;
}

function mainOf(json: JsonObject | null, exists: (p: string) => boolean): string | null {
  const m = json?.main;
  if (typeof m === 'string' && m.trim() !== '') return normalizeArchivePath(m.trim());
  return DEFAULT_MAINS.find(exists) ?? null;
}

function nameOf(json: JsonObject | null, fallback: string): string {
  return typeof json?.name === 'string' && json.name.trim() !== '' ? json.name.trim() : fallback;
}

function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** A plugin folder: plugin.json (optional) + its `main` (default index.js, then index.ts). */
export function readPluginFolder(dir: string): PluginSourceCode {
  const root = path.resolve(dir);
  const jsonPath = path.join(root, 'plugin.json');
  const json = fs.existsSync(jsonPath) ? parsePluginJson(fs.readFileSync(jsonPath, 'utf8'), root) : null;
  const main = mainOf(json, (p) => fs.existsSync(path.join(root, p)));
  if (main === null) {
    throw new PluginSourceError(
      `main file ${DEFAULT_MAINS.join(' or ')} not found in ${root}${json ? '' : ' (and no plugin.json)'}`,
    );
  }
  const file = path.resolve(root, main);
  if (!isInside(root, file)) throw new PluginSourceError(`main file ${main} is outside the plugin folder ${root}`);
  if (!fs.existsSync(file) || !fs.statSync(file).isFile())
    throw new PluginSourceError(`main file ${main} not found in ${root}`);
  return {
    name: nameOf(json, path.basename(root)),
    main,
    code: decodeText(fs.readFileSync(file)),
    pluginJson: json,
    origin: `file:${root}`,
  };
}

/**
 * An archive (zip, tar.gz, tar): plugin.json at the root or in the single top-level folder that GitHub/GitLab
 * archives have; then its `main`.
 */
export function readPluginArchive(buf: Buffer, label = 'archive'): PluginSourceCode {
  let archive: Archive;
  try {
    archive = openArchive(buf);
  } catch (err) {
    if (err instanceof ArchiveError) throw new PluginSourceError(`cannot read ${label}: ${err.message}`);
    throw err;
  }
  const paths = archive.paths();
  let root = '';
  if (!archive.has('plugin.json')) {
    const candidates = paths.filter((p) => /^[^/]+\/plugin\.json$/.test(p) && !p.startsWith('__MACOSX/'));
    if (candidates.length === 0) throw new PluginSourceError(`${label} has no plugin.json`);
    if (candidates.length > 1) {
      throw new PluginSourceError(
        `${label} has several plugin.json files (${candidates.join(', ')}); expected one top-level folder`,
      );
    }
    root = candidates[0].slice(0, -'plugin.json'.length);
  }
  const jsonBuf = archive.read(root + 'plugin.json');
  const json = parsePluginJson(decodeText(jsonBuf ?? Buffer.alloc(0)), label);
  const main = mainOf(json, (p) => archive.has(root + p));
  if (main === null) throw new PluginSourceError(`main file ${DEFAULT_MAINS.join(' or ')} not found in ${label}`);
  if (main.split('/').includes('..'))
    throw new PluginSourceError(`main file ${main} is outside the plugin in ${label}`);
  let code: Buffer | null;
  try {
    code = archive.read(root + main);
  } catch (err) {
    if (err instanceof ArchiveError) throw new PluginSourceError(`cannot read ${main} from ${label}: ${err.message}`);
    throw err;
  }
  if (code === null) throw new PluginSourceError(`main file ${main} not found in ${label}`);
  const fallbackName = root ? root.slice(0, -1) : 'plugin';
  return {
    name: nameOf(json, fallbackName),
    main,
    code: decodeText(code),
    pluginJson: json,
    origin: `${label} (${archive.kind})`,
  };
}

/** One code file: the plugin is that file alone. */
export function readPluginFile(file: string): PluginSourceCode {
  const abs = path.resolve(file);
  const base = path.basename(abs);
  const name = base.replace(/\.[^.]+$/, '');
  return { name, main: base, code: decodeText(fs.readFileSync(abs)), pluginJson: null, origin: `file:${abs}` };
}

/** A path on disk: folder, code file (.js/.ts/…) or archive (.zip/.tgz/.tar.gz/.tar, or sniffed). */
export function readPluginPath(p: string): PluginSourceCode {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) throw new PluginSourceError(`plugin path not found: ${abs}`);
  const st = fs.statSync(abs);
  if (st.isDirectory()) return readPluginFolder(abs);
  const lower = abs.toLowerCase();
  if (CODE_EXTENSIONS.some((e) => lower.endsWith(e))) return readPluginFile(abs);
  const buf = fs.readFileSync(abs);
  if (ARCHIVE_EXTENSIONS.some((e) => lower.endsWith(e)) || sniffArchive(buf) !== null) {
    return { ...readPluginArchive(buf, `archive ${path.basename(abs)}`), origin: `file:${abs}` };
  }
  throw new PluginSourceError(
    `don't know how to load ${abs}: expected a folder, a .js/.ts file or a .zip/.tgz archive`,
  );
}

/**
 * posthog_pluginsourcefile rows (PostHog 0233 on): `index.ts` is the code, whatever language it holds (0243 stored
 * an archive's main file under that name, JavaScript included), else plugin.json's `main` among the rows.
 */
function readSourceFiles(plugin: PluginRow, files: Record<string, string>): PluginSourceCode {
  const where = `the posthog_pluginsourcefile rows of plugin ${plugin.name}`;
  const json = typeof files['plugin.json'] === 'string' ? parsePluginJson(files['plugin.json'], where) : null;
  const main = typeof files['index.ts'] === 'string' ? 'index.ts' : mainOf(json, (p) => typeof files[p] === 'string');
  if (main === null || typeof files[main] !== 'string') throw new PluginSourceError(`no index.ts in ${where}`);
  return { name: plugin.name, main, code: files[main], pluginJson: json, origin: 'posthog_pluginsourcefile' };
}

export interface SourceOptions {
  /** Base directory for relative `file:` urls (PostHog's BASE_DIR). */
  baseDir: string;
}

/** Resolve a `file:` url to an absolute path ("file:rel", "file:/abs", "file:///abs"). */
export function resolveFileUrl(url: string, baseDir: string): string {
  let p = url.slice('file:'.length);
  if (p.startsWith('//')) p = p.slice(2); // file:///abs → /abs, file://rel → rel
  return path.resolve(baseDir, decodeURIComponent(p));
}

/**
 * Code of a posthog_plugin row, in PostHog's order of preference: posthog_pluginsourcefile rows, the `source`
 * column, the `archive` bytes, a `file:` url (relative to baseDir); else "un-downloaded remote plugin".
 */
export function readPluginRowSource(plugin: PluginRow, opts: SourceOptions): PluginSourceCode {
  const named = (s: PluginSourceCode): PluginSourceCode => ({ ...s, name: plugin.name || s.name });
  const files = plugin.sourceFiles;
  if (files && Object.values(files).some((f) => f !== '')) return readSourceFiles(plugin, files);
  if (plugin.source !== null && plugin.source.trim() !== '') {
    return {
      name: plugin.name,
      main: 'index.ts',
      code: plugin.source,
      pluginJson: null,
      origin: 'posthog_plugin.source',
    };
  }
  if (plugin.archive && plugin.archive.length > 0)
    return named(readPluginArchive(plugin.archive, `archive of plugin ${plugin.name}`));
  if (plugin.url?.startsWith('file:')) {
    const file = resolveFileUrl(plugin.url, opts.baseDir);
    if (!fs.existsSync(file)) {
      const relative = !/^file:(\/|\/\/\/)/.test(plugin.url);
      throw new PluginSourceError(
        `plugin path not found: ${file} (url ${plugin.url}${relative ? `, relative to --base-dir ${opts.baseDir}` : ''})`,
      );
    }
    return named(readPluginPath(file));
  }
  if (plugin.pluginType === 'source')
    throw new PluginSourceError(
      `source plugin ${plugin.name} has no source (no posthog_pluginsourcefile rows, empty source column)`,
    );
  throw new PluginSourceError(
    `un-downloaded remote plugin ${plugin.name}${plugin.url ? ` (${plugin.url})` : ''}: no archive stored`,
  );
}

/** plugin.json `config` (a map or an array of entries) as stored in posthog_plugin.config_schema. */
export function configSchemaOf(json: JsonObject | null): JsonObject | JsonObject[] {
  const c = json?.config;
  if (Array.isArray(c))
    return c.filter((e): e is JsonObject => e !== null && typeof e === 'object' && !Array.isArray(e));
  return isJsonObject(c) ? c : {};
}
