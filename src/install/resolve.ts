import { sniffArchive } from '../plugins/loading/archive';
import { type PluginSourceCode, PluginSourceError, readPluginArchive } from '../plugins/loading/source';
import { DownloadError, getJson, httpGet, type HttpOptions } from './http';
import type { PluginSpec } from './spec';

/**
 * From a plugin spec to the archive PostHog would have stored for it, the way PostHog's Django did on "install
 * from URL": the ref is pinned to a commit (GitHub/GitLab) or a version (npm) first, so `tag` says exactly what
 * was installed; `url` is the repository or package page without the ref (PostHog's `root_url`). GitHub and
 * GitLab archives are zips (as PostHog downloaded them), npm's are its tarballs.
 */
export interface RemoteOptions {
  /** GitHub REST API base (https://api.github.com). */
  githubApiUrl: string;
  /** GitLab base, for its API under /api/v4 (https://gitlab.com). */
  gitlabUrl: string;
  /** npm registry (https://registry.npmjs.org). */
  npmRegistry: string;
  githubToken?: string;
  gitlabToken?: string;
  npmToken?: string;
  /** Deadline of each request (metadata or archive), ms. */
  timeoutMs: number;
  /** Largest response accepted, bytes (the archive, and any metadata document). */
  maxBytes: number;
}

export interface ResolvedSource {
  /** Where the archive is downloaded from. */
  archiveUrl: string;
  /** Sent with the archive request (credentials, only to the origin they belong to). */
  headers: Record<string, string>;
  /** posthog_plugin.url as PostHog stores it. */
  url: string;
  /** posthog_plugin.tag: the commit sha or the npm version; null for a plain archive URL. */
  tag: string | null;
  /** For messages: "GitHub repository OWNER/REPO at SHA". */
  label: string;
}

export interface DownloadedPlugin extends ResolvedSource {
  archive: Buffer;
  code: PluginSourceCode;
}

export class RemotePluginError extends Error {
  override name = 'RemotePluginError';
}

const SHA1 = /^[0-9a-f]{40}$/i;

export async function resolvePluginSource(spec: PluginSpec, opts: RemoteOptions): Promise<ResolvedSource> {
  switch (spec.kind) {
    case 'github':
      return resolveGithub(spec, opts);
    case 'gitlab':
      return resolveGitlab(spec, opts);
    case 'npm':
      return resolveNpm(spec, opts);
    case 'archive':
      return { archiveUrl: spec.url, headers: {}, url: spec.url, tag: null, label: spec.url };
  }
}

/** Resolve, download and read the plugin: refuses anything that is not a loadable plugin archive. */
export async function downloadPlugin(spec: PluginSpec, opts: RemoteOptions): Promise<DownloadedPlugin> {
  const source = await resolvePluginSource(spec, opts);
  const res = await httpGet(source.archiveUrl, {
    timeoutMs: opts.timeoutMs,
    maxBytes: opts.maxBytes,
    headers: source.headers,
  });
  if (res.status === 404)
    throw new RemotePluginError(`${source.label}: archive not found (GET ${source.archiveUrl} returned 404)`);
  if (res.status < 200 || res.status > 299)
    throw new RemotePluginError(
      `${source.label}: archive download failed (GET ${source.archiveUrl} returned ${res.status})`,
    );
  if (sniffArchive(res.body) === null) {
    const start = res.body.subarray(0, 60).toString('utf8').replace(/\s+/g, ' ');
    throw new RemotePluginError(
      `${source.label} is not a plugin archive: ${res.url} returned ${res.contentType || 'no content type'}, not a zip or tar.gz (it starts with ${JSON.stringify(start)})`,
    );
  }
  let code: PluginSourceCode;
  try {
    code = readPluginArchive(res.body, source.label);
  } catch (err) {
    if (err instanceof PluginSourceError)
      throw new RemotePluginError(`${source.label} is not a PostHog plugin: ${err.message}`);
    throw err;
  }
  return { ...source, archive: res.body, code };
}

// ------------------------------------------------------------------------------------------------ GitHub

async function resolveGithub(
  spec: Extract<PluginSpec, { kind: 'github' }>,
  opts: RemoteOptions,
): Promise<ResolvedSource> {
  const api = trimSlash(opts.githubApiUrl);
  const repo = `${spec.owner}/${spec.repo}`;
  const headers: Record<string, string> = { accept: 'application/vnd.github+json', ...bearer(opts.githubToken) };
  const http: HttpOptions = { timeoutMs: opts.timeoutMs, maxBytes: opts.maxBytes, headers };
  const base = `${api}/repos/${encodeURIComponent(spec.owner)}/${encodeURIComponent(spec.repo)}`;
  let sha: string;
  if (spec.ref !== null && SHA1.test(spec.ref)) {
    sha = spec.ref.toLowerCase();
  } else {
    let ref = spec.ref;
    if (ref === null) {
      const meta = await getJson(base, http);
      if (meta.status !== 200)
        throw new RemotePluginError(githubFailure(`GitHub repository ${repo}`, meta.status, opts.githubToken));
      ref = stringField(meta.json, 'default_branch', `GitHub repository ${repo}`);
    }
    const commit = await getJson(`${base}/commits/${encodePath(ref)}`, http);
    if (commit.status === 404 || commit.status === 422) {
      throw new RemotePluginError(
        `GitHub repository ${repo} has no branch, tag or commit ${JSON.stringify(ref)} (or the repository does not exist${opts.githubToken ? '' : '; a private one needs GITHUB_TOKEN'})`,
      );
    }
    if (commit.status !== 200)
      throw new RemotePluginError(
        githubFailure(`GitHub repository ${repo} at ${ref}`, commit.status, opts.githubToken),
      );
    sha = stringField(commit.json, 'sha', `GitHub commit ${ref} of ${repo}`);
  }
  return {
    archiveUrl: `${base}/zipball/${sha}`,
    headers: bearer(opts.githubToken),
    url: `https://github.com/${repo}`,
    tag: sha,
    label: `GitHub repository ${repo} at ${sha.slice(0, 12)}`,
  };
}

function githubFailure(what: string, status: number, token: string | undefined): string {
  if (status === 404) return `${what} not found${token ? '' : ' (a private repository needs GITHUB_TOKEN)'}`;
  if (status === 401) return `${what}: GitHub refused the token in GITHUB_TOKEN (401)`;
  if (status === 403 || status === 429)
    return `${what}: GitHub refused the request (${status}; rate limited?${token ? '' : ' set GITHUB_TOKEN'})`;
  return `${what}: the GitHub API answered ${status}`;
}

// ------------------------------------------------------------------------------------------------ GitLab

async function resolveGitlab(
  spec: Extract<PluginSpec, { kind: 'gitlab' }>,
  opts: RemoteOptions,
): Promise<ResolvedSource> {
  const base = `${trimSlash(opts.gitlabUrl)}/api/v4/projects/${encodeURIComponent(spec.project)}`;
  const http: HttpOptions = { timeoutMs: opts.timeoutMs, maxBytes: opts.maxBytes, headers: bearer(opts.gitlabToken) };
  const what = `GitLab project ${spec.project}`;
  let ref = spec.ref;
  if (ref === null) {
    const meta = await getJson(base, http);
    if (meta.status === 404)
      throw new RemotePluginError(
        `${what} not found${opts.gitlabToken ? '' : ' (a private project needs GITLAB_TOKEN)'}`,
      );
    if (meta.status !== 200) throw new RemotePluginError(`${what}: the GitLab API answered ${meta.status}`);
    ref = stringField(meta.json, 'default_branch', what);
  }
  const commit = await getJson(`${base}/repository/commits/${encodeURIComponent(ref)}`, http);
  if (commit.status === 404)
    throw new RemotePluginError(
      `${what} has no branch, tag or commit ${JSON.stringify(ref)} (or the project does not exist)`,
    );
  if (commit.status !== 200) throw new RemotePluginError(`${what} at ${ref}: the GitLab API answered ${commit.status}`);
  const sha = stringField(commit.json, 'id', `GitLab commit ${ref} of ${spec.project}`);
  return {
    archiveUrl: `${base}/repository/archive.zip?sha=${encodeURIComponent(sha)}`,
    headers: bearer(opts.gitlabToken),
    url: `${spec.origin}/${spec.project}`,
    tag: sha,
    label: `${what} at ${sha.slice(0, 12)}`,
  };
}

// ------------------------------------------------------------------------------------------------ npm

async function resolveNpm(spec: Extract<PluginSpec, { kind: 'npm' }>, opts: RemoteOptions): Promise<ResolvedSource> {
  const registry = trimSlash(opts.npmRegistry);
  const metaUrl = `${registry}/${spec.name.replace('/', '%2f')}`;
  const meta = await getJson(metaUrl, {
    timeoutMs: opts.timeoutMs,
    maxBytes: opts.maxBytes,
    headers: bearer(opts.npmToken),
  });
  if (meta.status === 404) throw new RemotePluginError(`npm package ${spec.name} not found in ${registry}`);
  if (meta.status !== 200) throw new RemotePluginError(`npm package ${spec.name}: ${registry} answered ${meta.status}`);
  const doc = asObject(meta.json);
  const versions = asObject(doc['versions']);
  const distTags = asObject(doc['dist-tags']);
  const wanted = spec.version ?? 'latest';
  const version =
    wanted in versions ? wanted : typeof distTags[wanted] === 'string' ? (distTags[wanted] as string) : null;
  if (version === null || !(version in versions)) {
    const known = Object.keys(versions).slice(-5).join(', ');
    throw new RemotePluginError(
      `npm package ${spec.name} has no version or dist-tag ${JSON.stringify(wanted)}${known ? ` (latest versions: ${known})` : ''}`,
    );
  }
  const tarball = asObject(asObject(versions[version])['dist'])['tarball'];
  if (typeof tarball !== 'string' || !/^https?:\/\//.test(tarball))
    throw new RemotePluginError(`npm package ${spec.name}@${version} has no tarball URL in ${registry}`);
  return {
    archiveUrl: tarball,
    // The token belongs to the registry: a tarball hosted elsewhere does not get it.
    headers: new URL(tarball).origin === new URL(registry).origin ? bearer(opts.npmToken) : {},
    url: `https://www.npmjs.com/package/${spec.name}`,
    tag: version,
    label: `npm package ${spec.name}@${version}`,
  };
}

// ------------------------------------------------------------------------------------------------ helpers

function bearer(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/** A git ref as a URL path: each segment encoded, the slashes of "feature/x" kept. */
function encodePath(ref: string): string {
  return ref.split('/').map(encodeURIComponent).join('/');
}

function asObject(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function stringField(json: unknown, field: string, what: string): string {
  const v = asObject(json)[field];
  if (typeof v !== 'string' || v === '') throw new DownloadError(`${what}: the API answer has no "${field}"`);
  return v;
}
