/**
 * What `posthog-plugins install SOURCE` was given, when SOURCE is not a path on disk: the link forms PostHog's
 * "install from URL" accepted (GitHub, GitLab, npm), bare npm names, and direct archive URLs. Pure: no I/O, so
 * every form is unit-tested; `resolve.ts` turns a spec into an archive to download.
 */
export type PluginSpec =
  | { kind: 'github'; owner: string; repo: string; ref: string | null }
  | { kind: 'gitlab'; origin: string; project: string; ref: string | null }
  | { kind: 'npm'; name: string; version: string | null }
  | { kind: 'archive'; url: string };

export class PluginSpecError extends Error {
  override name = 'PluginSpecError';
}

export interface SpecOptions {
  /** Hosts whose links are GitLab projects besides gitlab.com (a self-hosted GitLab, from --gitlab-url). */
  gitlabHosts?: string[];
}

const GITHUB_HOSTS = new Set(['github.com', 'www.github.com']);
const NPM_HOSTS = new Set(['npmjs.com', 'www.npmjs.com']);
const GITHUB_NAME = /^[A-Za-z0-9_.-]+$/;
/** npm's rules: lower case, url-safe, optional scope, ≤ 214 characters; a name never starts with . or _. */
const NPM_NAME = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
const NPM_VERSION = /^[A-Za-z0-9._+-]+$/;
const ARCHIVE_FILE = /\.(?:zip|tgz|tar|tar\.gz)$/i;

/** A spec from a command-line argument that is not an existing path. */
export function parsePluginSpec(input: string, opts: SpecOptions = {}): PluginSpec {
  const s = input.trim();
  if (/^https?:\/\//i.test(s)) return parseUrl(s, opts);
  const npm = parseNpmName(s);
  if (npm) return npm;
  throw new PluginSpecError(
    `${JSON.stringify(input)} is neither a path on disk nor a plugin link: expected a folder, a .js/.ts file, a .zip/.tgz archive, ` +
      'https://github.com/OWNER/REPO[/tree/REF], https://gitlab.com/GROUP/PROJECT[/-/tree/REF], an npm package (name, @scope/name, name@version) or an archive URL',
  );
}

/** `name`, `@scope/name`, `name@1.2.3`, `@scope/name@beta` (a version or a dist-tag). */
function parseNpmName(s: string): PluginSpec | null {
  const at = s.indexOf('@', 1);
  const name = at > 0 ? s.slice(0, at) : s;
  const version = at > 0 ? s.slice(at + 1) : null;
  // "plugin.zip" that does not exist is a mistyped path, not a package.
  if (name.length > 214 || !NPM_NAME.test(name) || ARCHIVE_FILE.test(name)) return null;
  if (version !== null && !NPM_VERSION.test(version)) return null;
  return { kind: 'npm', name, version };
}

function parseUrl(raw: string, opts: SpecOptions): PluginSpec {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new PluginSpecError(`not a valid URL: ${raw}`);
  }
  const host = u.hostname.toLowerCase();
  const segments = u.pathname
    .split('/')
    .filter((p) => p !== '')
    .map(decodeURIComponent);
  if (GITHUB_HOSTS.has(host)) return parseGithub(raw, segments);
  const gitlab = host === 'gitlab.com' || (opts.gitlabHosts ?? []).map((h) => h.toLowerCase()).includes(host);
  // An archive file or an API call on a GitLab host is downloaded as it is, not read as a project path.
  if (gitlab && !ARCHIVE_FILE.test(u.pathname) && segments[0] !== 'api') return parseGitlab(raw, u, segments);
  if (NPM_HOSTS.has(host)) return parseNpmUrl(raw, segments);
  return { kind: 'archive', url: u.href };
}

/**
 * github.com/OWNER/REPO, …/tree/REF, …/commit/SHA, …/releases/tag/TAG, …/archive/REF.zip|.tar.gz,
 * …/archive/refs/tags/TAG.zip. A REF may contain slashes (branch "feature/x"): everything after the keyword.
 */
function parseGithub(raw: string, seg: string[]): PluginSpec {
  const [owner, repoRaw, keyword, ...rest] = seg;
  if (!owner || !repoRaw || !GITHUB_NAME.test(owner) || !GITHUB_NAME.test(repoRaw)) {
    throw new PluginSpecError(`not a GitHub repository link: ${raw} (expected https://github.com/OWNER/REPO)`);
  }
  const repo = repoRaw.replace(/\.git$/, '');
  if (keyword === undefined) return { kind: 'github', owner, repo, ref: null };
  let ref: string;
  if ((keyword === 'tree' || keyword === 'commit') && rest.length > 0) ref = rest.join('/');
  else if (keyword === 'releases' && rest[0] === 'tag' && rest.length > 1) ref = rest.slice(1).join('/');
  else if (keyword === 'archive' && rest.length > 0) {
    const file = rest.join('/').replace(/^refs\/(?:heads|tags)\//, '');
    const m = /^(.+?)(?:\.zip|\.tar\.gz)$/.exec(file);
    if (!m) throw new PluginSpecError(`not a GitHub archive link: ${raw} (expected …/archive/REF.zip or .tar.gz)`);
    ref = m[1] as string;
  } else {
    throw new PluginSpecError(
      `unsupported GitHub link: ${raw} (expected the repository, …/tree/REF, …/commit/SHA or …/releases/tag/TAG)`,
    );
  }
  return { kind: 'github', owner, repo, ref };
}

/** gitlab.com/GROUP[/SUBGROUP…]/PROJECT, …/-/tree/REF, …/-/commit/SHA, …/-/tags/TAG. */
function parseGitlab(raw: string, u: URL, seg: string[]): PluginSpec {
  const dash = seg.indexOf('-');
  const projectSeg = dash >= 0 ? seg.slice(0, dash) : seg;
  if (projectSeg.length < 2 || !projectSeg.every((p) => GITHUB_NAME.test(p))) {
    throw new PluginSpecError(`not a GitLab project link: ${raw} (expected https://gitlab.com/GROUP/PROJECT)`);
  }
  const project = projectSeg.join('/').replace(/\.git$/, '');
  if (dash < 0) return { kind: 'gitlab', origin: u.origin, project, ref: null };
  const [keyword, ...rest] = seg.slice(dash + 1);
  if ((keyword === 'tree' || keyword === 'commit' || keyword === 'tags') && rest.length > 0) {
    return { kind: 'gitlab', origin: u.origin, project, ref: rest.join('/') };
  }
  throw new PluginSpecError(
    `unsupported GitLab link: ${raw} (expected the project, …/-/tree/REF, …/-/commit/SHA or …/-/tags/TAG)`,
  );
}

/** npmjs.com/package/NAME, …/package/@scope/NAME, …/v/VERSION. */
function parseNpmUrl(raw: string, seg: string[]): PluginSpec {
  if (seg[0] !== 'package' || seg.length < 2)
    throw new PluginSpecError(`not an npm package link: ${raw} (expected https://www.npmjs.com/package/NAME)`);
  const scoped = (seg[1] as string).startsWith('@');
  const nameParts = scoped ? seg.slice(1, 3) : seg.slice(1, 2);
  const rest = seg.slice(1 + nameParts.length);
  const name = nameParts.join('/');
  const version = rest[0] === 'v' && rest.length === 2 ? (rest[1] as string) : null;
  if (
    !NPM_NAME.test(name) ||
    (rest.length > 0 && version === null) ||
    (version !== null && !NPM_VERSION.test(version))
  ) {
    throw new PluginSpecError(
      `not an npm package link: ${raw} (expected https://www.npmjs.com/package/NAME[/v/VERSION])`,
    );
  }
  return { kind: 'npm', name, version };
}
