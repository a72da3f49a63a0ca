import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { type RemoteOptions, RemotePluginError, downloadPlugin, resolvePluginSource } from '../../src/install/resolve';
import { parsePluginSpec } from '../../src/install/spec';
import { openDatabase } from '../../src/store/database';
import { PluginStore } from '../../src/store/plugin-store';
import { readPluginRowSource } from '../../src/plugins/loading/source';
import { BIN, REPO, cli } from '../helpers/worker';
import { tempDir } from '../plugins/helpers';
import { type Forges, SHA_GITLAB, SHA_MAIN, SHA_V1, startForges } from './forges';

const execFileAsync = promisify(execFile);

/**
 * Installing by link or npm name against local stand-ins for GitHub, GitLab and npm (there is no outside
 * network here): resolution pins a commit or version, the archive is downloaded and read, and everything that is
 * not a plugin is refused with a reason. End to end through the real CLI into a temporary SQLite.
 */
describe('install: download by link or npm name', () => {
  let forges: Forges;
  let opts: RemoteOptions;
  const spec = (s: string) => parsePluginSpec(s, { gitlabHosts: ['127.0.0.1'] });

  before(async () => {
    forges = await startForges();
    opts = {
      githubApiUrl: forges.api,
      gitlabUrl: forges.api,
      npmRegistry: forges.api,
      timeoutMs: 10_000,
      maxBytes: 1024 * 1024,
    };
  });
  after(async () => forges?.close());

  it('GitHub repository link: default branch pinned to its commit, zipball through the redirect', async () => {
    const got = await downloadPlugin(spec('https://github.com/PostHog/hello'), opts);
    assert.equal(got.url, 'https://github.com/PostHog/hello');
    assert.equal(got.tag, SHA_MAIN);
    assert.equal(got.archiveUrl, `${forges.api}/repos/PostHog/hello/zipball/${SHA_MAIN}`);
    assert.equal(got.code.name, 'Hello from GitHub main');
    assert.equal(got.code.main, 'index.js');
    assert.deepEqual(got.archive.subarray(0, 2), Buffer.from('PK'));
  });

  it('GitHub tree, release tag, archive and commit links pin the named ref; a commit link needs no API call', async () => {
    for (const link of [
      'https://github.com/PostHog/hello/tree/v1.0',
      'https://github.com/PostHog/hello/releases/tag/v1.0',
      'https://github.com/PostHog/hello/archive/v1.0.zip',
    ]) {
      const got = await downloadPlugin(spec(link), opts);
      assert.equal(got.tag, SHA_V1, link);
      assert.equal(got.code.name, 'Hello from GitHub v1', link);
    }
    assert.equal(
      (await resolvePluginSource(spec('https://github.com/PostHog/hello/tree/feature/x'), opts)).tag,
      SHA_MAIN,
    );
    const before = forges.requests.length;
    const got = await downloadPlugin(spec(`https://github.com/PostHog/hello/commit/${SHA_V1}`), opts);
    assert.equal(got.tag, SHA_V1);
    assert.deepEqual(
      forges.requests.slice(before).map((r) => r.url),
      [`/repos/PostHog/hello/zipball/${SHA_V1}`, `codeload:/PostHog/hello/zip/${SHA_V1}`],
    );
  });

  it('a GitHub token goes to the API, never across the redirect to another origin', async () => {
    const before = forges.requests.length;
    await downloadPlugin(spec('https://github.com/PostHog/hello'), { ...opts, githubToken: 'secret-token' });
    const seen = forges.requests.slice(before);
    const api = seen.filter((r) => !r.url.startsWith('codeload:'));
    const codeload = seen.filter((r) => r.url.startsWith('codeload:'));
    assert.equal(api.length, 3);
    for (const r of api) assert.equal(r.headers.authorization, 'Bearer secret-token', r.url);
    assert.equal(codeload.length, 1);
    assert.equal(codeload[0]?.headers.authorization, undefined);
  });

  it('GitLab project link (default branch and /-/tree/REF): archive.zip of the pinned commit', async () => {
    for (const link of ['http://127.0.0.1/group/proj', 'http://127.0.0.1/group/proj/-/tree/dev']) {
      const got = await downloadPlugin(spec(link), opts);
      assert.equal(got.tag, SHA_GITLAB);
      assert.equal(got.url, 'http://127.0.0.1/group/proj');
      assert.equal(got.code.name, 'Hello from GitLab');
    }
  });

  it('npm: latest, an exact version, a dist-tag, and an npmjs.com link', async () => {
    const latest = await downloadPlugin(spec('@posthog/hello'), opts);
    assert.equal(latest.tag, '1.1.0');
    assert.equal(latest.url, 'https://www.npmjs.com/package/@posthog/hello');
    assert.equal(latest.code.name, 'Hello from npm 1.1.0');
    assert.equal((await downloadPlugin(spec('@posthog/hello@1.0.0'), opts)).code.name, 'Hello from npm 1.0.0');
    assert.equal((await downloadPlugin(spec('@posthog/hello@beta'), opts)).tag, '1.0.0');
    assert.equal(
      (await downloadPlugin(spec('https://www.npmjs.com/package/@posthog/hello/v/1.0.0'), opts)).tag,
      '1.0.0',
    );
  });

  it('a direct archive URL is stored with that URL and no tag', async () => {
    const got = await downloadPlugin(spec(`${forges.api}/files/plugin.tgz`), opts);
    assert.equal(got.url, `${forges.api}/files/plugin.tgz`);
    assert.equal(got.tag, null);
    assert.equal(got.code.name, 'Hello from a URL');
  });

  const refusals: Array<[string, string, RegExp]> = [
    [
      'a missing GitHub repository',
      'https://github.com/PostHog/missing',
      /GitHub repository PostHog\/missing not found \(a private repository needs GITHUB_TOKEN\)/,
    ],
    ['an unknown ref', 'https://github.com/PostHog/hello/tree/nope', /has no branch, tag or commit "nope"/],
    [
      'a repository without plugin.json',
      'https://github.com/PostHog/readme',
      /GitHub repository PostHog\/readme at a{12} is not a PostHog plugin: .*has no plugin\.json/,
    ],
    [
      'an HTML page instead of an archive',
      'https://github.com/PostHog/html',
      /is not a plugin archive: .* returned text\/html; charset=utf-8, not a zip or tar\.gz \(it starts with "<!DOCTYPE html>/,
    ],
    [
      'a body over the limit (streamed, no content-length)',
      'https://github.com/PostHog/huge',
      /response larger than 1048576 bytes \(the download limit\)/,
    ],
    ['a declared content-length over the limit', '/files/declared-huge.zip', /response larger than 1048576 bytes/],
    ['a 404 archive URL', '/files/missing.zip', /archive not found \(GET .*\/files\/missing\.zip returned 404\)/],
    ['a missing GitLab project', 'http://127.0.0.1/group/other', /GitLab project group\/other not found/],
    [
      'a missing npm package',
      'posthog-nothing-here',
      /npm package posthog-nothing-here not found in http:\/\/127\.0\.0\.1:\d+/,
    ],
    [
      'an unknown npm version',
      '@posthog/hello@9.9.9',
      /npm package @posthog\/hello has no version or dist-tag "9\.9\.9" \(latest versions: 1\.0\.0, 1\.1\.0\)/,
    ],
    ['a redirect loop', `https://github.com/PostHog/loop/commit/${SHA_MAIN}`, /more than 5 redirects/],
  ];
  for (const [what, link, message] of refusals) {
    it(`refuses ${what}`, async () => {
      const s = spec(link.startsWith('/') ? `${forges.api}${link}` : link);
      await assert.rejects(downloadPlugin(s, opts), (err: Error) => {
        assert.match(err.message, message);
        return true;
      });
    });
  }

  it('gives up at the deadline', async () => {
    await assert.rejects(
      downloadPlugin(spec(`${forges.api}/files/slow.zip`), { ...opts, timeoutMs: 300 }),
      /timed out after 300 ms/,
    );
  });

  it('a non-plugin error is a RemotePluginError', async () => {
    await assert.rejects(downloadPlugin(spec('https://github.com/PostHog/readme'), opts), RemotePluginError);
  });

  describe('through the CLI', () => {
    const dir = tempDir('pp-install-cli-');
    const dbUrl = `sqlite:${path.join(dir, 'plugins.sqlite3')}`;
    const flags = (): string[] => [
      '--database-url',
      dbUrl,
      '--github-api-url',
      forges.api,
      '--npm-registry',
      forges.api,
      '--log-level',
      'warn',
    ];

    it('install <github link> and <npm name>: list shows them, the stored archives load', async () => {
      await cli([
        'install',
        'https://github.com/PostHog/hello/tree/v1.0',
        '--team',
        '3',
        '--config',
        '{"propertyName":"via"}',
        ...flags(),
      ]);
      await cli(['install', '@posthog/hello', '--team', '3', ...flags()]);
      const listed = JSON.parse((await cli(['list', '--json', '--database-url', dbUrl])).stdout) as Array<
        Record<string, unknown>
      >;
      assert.deepEqual(
        listed.map((c) => [c.teamId, c.order, c.pluginName, c.pluginType, c.url, c.enabled]),
        [
          [3, 0, 'Hello from GitHub v1', 'custom', 'https://github.com/PostHog/hello', true],
          [3, 1, 'Hello from npm 1.1.0', 'custom', 'https://www.npmjs.com/package/@posthog/hello', true],
        ],
      );
      const db = openDatabase(dbUrl);
      try {
        const tags = (await db('posthog_plugin').select('name', 'tag', 'description').orderBy('id')) as Array<
          Record<string, unknown>
        >;
        assert.deepEqual(
          tags.map((t) => t.tag),
          [SHA_V1, '1.1.0'],
        );
        assert.match(String(tags[0]?.description), /Adds one property/);
        const loaded = await new PluginStore(db).loadEnabledConfigs();
        assert.equal(loaded.length, 2);
        for (const c of loaded) {
          const code = readPluginRowSource(c.plugin, { baseDir: REPO });
          assert.equal(code.main, 'index.js');
          assert.match(code.code, /processEvent/);
        }
        // plugin.json's default for the key not given is filled in, as PostHog's form did.
        assert.deepEqual(loaded[0]?.config, { propertyName: 'via', propertyValue: 'posthog-plugins' });
      } finally {
        await db.destroy();
      }
    });

    it('a link that is not a plugin: exit 1, one line saying why, nothing stored', async () => {
      const failed = await execFileAsync(BIN, ['install', 'https://github.com/PostHog/readme', ...flags()], {
        cwd: REPO,
      }).then(
        () => null,
        (err: { code: number; stderr: string }) => err,
      );
      assert.ok(failed, 'install should fail');
      assert.equal(failed.code, 1);
      assert.match(
        failed.stderr,
        /^posthog-plugins install: GitHub repository PostHog\/readme at a{12} is not a PostHog plugin: .*has no plugin\.json\n$/m,
      );
      const listed = JSON.parse((await cli(['list', '--json', '--database-url', dbUrl])).stdout) as unknown[];
      assert.equal(listed.length, 2);
    });
  });
});
