import type { Options } from 'yargs';
import { env, num } from '../config';
import type { RemoteOptions } from './resolve';

/**
 * `install` options for links and npm names: where GitHub, GitLab and npm are (tests and self-hosted GitLab or
 * npm mirrors point them elsewhere) and the download limits. Tokens come only from the environment, with
 * PostHog's names, so they never show in a process list.
 */
export const installRemoteOptions = {
  'github-api-url': {
    type: 'string',
    describe: 'GitHub REST API base for github.com links (env GITHUB_API_URL; token: env GITHUB_TOKEN)',
    default: env('GITHUB_API_URL') ?? 'https://api.github.com',
  },
  'gitlab-url': {
    type: 'string',
    describe:
      'GitLab base for gitlab.com links, or a self-hosted GitLab whose links are then accepted too (env GITLAB_URL; token: env GITLAB_TOKEN)',
    default: env('GITLAB_URL') ?? 'https://gitlab.com',
  },
  'npm-registry': {
    type: 'string',
    describe: 'npm registry for package names and npmjs.com links (env NPM_REGISTRY; token: env NPM_TOKEN)',
    default: env('NPM_REGISTRY') ?? 'https://registry.npmjs.org',
  },
  'download-timeout-ms': {
    type: 'number',
    describe: 'Deadline of each download request, ms (env PLUGIN_DOWNLOAD_TIMEOUT_MS)',
    default: num('PLUGIN_DOWNLOAD_TIMEOUT_MS', 60_000),
  },
  'download-max-bytes': {
    type: 'number',
    describe: 'Largest plugin archive (or registry document) accepted, bytes (env PLUGIN_DOWNLOAD_MAX_BYTES)',
    default: num('PLUGIN_DOWNLOAD_MAX_BYTES', 50 * 1024 * 1024),
  },
} satisfies Record<string, Options>;

export function remoteOptionsFrom(argv: {
  'github-api-url': string;
  'gitlab-url': string;
  'npm-registry': string;
  'download-timeout-ms': number;
  'download-max-bytes': number;
}): RemoteOptions {
  return {
    githubApiUrl: argv['github-api-url'],
    gitlabUrl: argv['gitlab-url'],
    npmRegistry: argv['npm-registry'],
    githubToken: env('GITHUB_TOKEN'),
    gitlabToken: env('GITLAB_TOKEN'),
    npmToken: env('NPM_TOKEN'),
    timeoutMs: argv['download-timeout-ms'],
    maxBytes: argv['download-max-bytes'],
  };
}
