import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type PluginSpec, PluginSpecError, parsePluginSpec } from '../../src/install/spec';

describe('install: plugin specs (links and npm names)', () => {
  const cases: Array<[string, PluginSpec]> = [
    [
      'https://github.com/PostHog/currency-plugin',
      { kind: 'github', owner: 'PostHog', repo: 'currency-plugin', ref: null },
    ],
    [
      'https://github.com/PostHog/currency-plugin/',
      { kind: 'github', owner: 'PostHog', repo: 'currency-plugin', ref: null },
    ],
    [
      'http://www.github.com/PostHog/currency-plugin.git',
      { kind: 'github', owner: 'PostHog', repo: 'currency-plugin', ref: null },
    ],
    ['https://github.com/o/r/tree/main', { kind: 'github', owner: 'o', repo: 'r', ref: 'main' }],
    ['https://github.com/o/r/tree/feature/x-y', { kind: 'github', owner: 'o', repo: 'r', ref: 'feature/x-y' }],
    [
      'https://github.com/o/r/commit/0123456789abcdef0123456789abcdef01234567',
      { kind: 'github', owner: 'o', repo: 'r', ref: '0123456789abcdef0123456789abcdef01234567' },
    ],
    ['https://github.com/o/r/releases/tag/v1.2.0', { kind: 'github', owner: 'o', repo: 'r', ref: 'v1.2.0' }],
    ['https://github.com/o/r/archive/v1.2.0.zip', { kind: 'github', owner: 'o', repo: 'r', ref: 'v1.2.0' }],
    [
      'https://github.com/o/r/archive/refs/tags/v1.2.0.tar.gz',
      { kind: 'github', owner: 'o', repo: 'r', ref: 'v1.2.0' },
    ],
    ['https://github.com/o/r?tab=readme', { kind: 'github', owner: 'o', repo: 'r', ref: null }],
    [
      'https://gitlab.com/group/project',
      { kind: 'gitlab', origin: 'https://gitlab.com', project: 'group/project', ref: null },
    ],
    [
      'https://gitlab.com/group/sub/project/-/tree/dev',
      { kind: 'gitlab', origin: 'https://gitlab.com', project: 'group/sub/project', ref: 'dev' },
    ],
    [
      'https://gitlab.com/group/project/-/commit/abc123',
      { kind: 'gitlab', origin: 'https://gitlab.com', project: 'group/project', ref: 'abc123' },
    ],
    [
      'https://gitlab.com/group/project/-/tags/v1',
      { kind: 'gitlab', origin: 'https://gitlab.com', project: 'group/project', ref: 'v1' },
    ],
    ['https://www.npmjs.com/package/posthog-plugin-x', { kind: 'npm', name: 'posthog-plugin-x', version: null }],
    [
      'https://www.npmjs.com/package/@posthog/plugin-geoip/v/0.0.7',
      { kind: 'npm', name: '@posthog/plugin-geoip', version: '0.0.7' },
    ],
    ['posthog-plugin-x', { kind: 'npm', name: 'posthog-plugin-x', version: null }],
    ['posthog-plugin-x@1.0.0', { kind: 'npm', name: 'posthog-plugin-x', version: '1.0.0' }],
    ['@posthog/plugin-geoip', { kind: 'npm', name: '@posthog/plugin-geoip', version: null }],
    ['@posthog/plugin-geoip@beta', { kind: 'npm', name: '@posthog/plugin-geoip', version: 'beta' }],
    ['https://example.com/files/plugin.zip', { kind: 'archive', url: 'https://example.com/files/plugin.zip' }],
    ['https://codeload.github.com/o/r/zip/main', { kind: 'archive', url: 'https://codeload.github.com/o/r/zip/main' }],
    ['http://127.0.0.1:8080/p.tgz?x=1', { kind: 'archive', url: 'http://127.0.0.1:8080/p.tgz?x=1' }],
  ];
  for (const [input, expected] of cases) {
    it(input, () => assert.deepEqual(parsePluginSpec(input), expected));
  }

  it('a self-hosted GitLab is recognised only when named', () => {
    assert.equal(parsePluginSpec('https://git.example.com/g/p').kind, 'archive');
    assert.deepEqual(parsePluginSpec('https://git.example.com/g/p/-/tree/v2', { gitlabHosts: ['git.example.com'] }), {
      kind: 'gitlab',
      origin: 'https://git.example.com',
      project: 'g/p',
      ref: 'v2',
    });
  });

  const refused: Array<[string, RegExp]> = [
    ['https://github.com/PostHog', /not a GitHub repository link/],
    ['https://github.com/o/r/issues/12', /unsupported GitHub link/],
    ['https://github.com/o/r/archive/v1', /not a GitHub archive link/],
    ['https://gitlab.com/justgroup', /not a GitLab project link/],
    ['https://gitlab.com/g/p/-/issues/3', /unsupported GitLab link/],
    ['https://www.npmjs.com/search?q=x', /not an npm package link/],
    ['https://www.npmjs.com/package/x/extra', /not an npm package link/],
    ['./missing-folder', /neither a path on disk nor a plugin link/],
    ['missing-plugin.zip', /neither a path on disk nor a plugin link/],
    ['Upper/Case', /neither a path on disk nor a plugin link/],
    ['name@bad version', /neither a path on disk nor a plugin link/],
  ];
  for (const [input, message] of refused) {
    it(`refuses ${input}`, () =>
      assert.throws(
        () => parsePluginSpec(input),
        (err: Error) => err instanceof PluginSpecError && message.test(err.message),
      ));
  }
});

describe('install: archive URLs on a GitLab host', () => {
  it('an archive file or an API URL is downloaded as it is', () => {
    assert.deepEqual(parsePluginSpec('https://gitlab.com/g/p/-/archive/main/p-main.zip'), {
      kind: 'archive',
      url: 'https://gitlab.com/g/p/-/archive/main/p-main.zip',
    });
    assert.equal(parsePluginSpec('https://gitlab.com/api/v4/projects/1/repository/archive.zip?sha=x').kind, 'archive');
  });
});
