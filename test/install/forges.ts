import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { FIXTURES, makeArchive, tempDir } from '../plugins/helpers';

/**
 * Local stand-ins for GitHub (API + codeload, on two origins so credentials crossing a redirect show),
 * GitLab and an npm registry, serving real zip/tar.gz archives laid out as those services lay them out:
 * GitHub zipballs under `OWNER-REPO-SHA7/`, GitLab's under `PROJECT-SHA-SHA/`, npm tarballs under `package/`.
 */
export const SHA_MAIN = 'a'.repeat(40);
export const SHA_V1 = '1'.repeat(40);
export const SHA_GITLAB = 'b'.repeat(40);

export interface Request {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface Forges {
  /** GitHub API, GitLab and npm registry (one origin). */
  api: string;
  /** Where GitHub's zipball redirects go (another origin, like codeload.github.com). */
  codeload: string;
  requests: Request[];
  close(): Promise<void>;
}

/** The add-property fixture's files, with the plugin name changed so each source is recognisable. */
function pluginFiles(root: string, name: string): Record<string, string> {
  const dir = path.join(FIXTURES, 'add-property');
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'plugin.json'), 'utf8')) as Record<string, unknown>;
  return {
    [`${root}/plugin.json`]: JSON.stringify({ ...json, name }),
    [`${root}/index.js`]: fs.readFileSync(path.join(dir, 'index.js'), 'utf8'),
    [`${root}/README.md`]: `# ${name}\n`,
  };
}

function build(kind: 'zip' | 'tgz', files: Record<string, string>): Buffer {
  return fs.readFileSync(makeArchive(kind, files, tempDir('pp-forge-')));
}

export async function startForges(): Promise<Forges> {
  const requests: Request[] = [];
  const archives = {
    githubMain: build('zip', pluginFiles(`PostHog-hello-${SHA_MAIN.slice(0, 7)}`, 'Hello from GitHub main')),
    githubV1: build('zip', pluginFiles(`PostHog-hello-${SHA_V1.slice(0, 7)}`, 'Hello from GitHub v1')),
    notPlugin: build('zip', { 'PostHog-readme-aaaaaaa/README.md': '# just a readme\n' }),
    gitlab: build('zip', pluginFiles(`proj-${SHA_GITLAB}-${SHA_GITLAB}`, 'Hello from GitLab')),
    npm100: build('tgz', pluginFiles('package', 'Hello from npm 1.0.0')),
    npm110: build('tgz', pluginFiles('package', 'Hello from npm 1.1.0')),
    direct: build('tgz', pluginFiles('whatever-1', 'Hello from a URL')),
  };

  const codeload = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: `codeload:${req.url}`, headers: req.headers });
    const m = /^\/PostHog\/(hello|readme|html|huge)\/zip\/([0-9a-f]{40})$/.exec(req.url ?? '');
    if (!m) return send(res, 404, 'text/plain', 'Not Found');
    if (m[1] === 'readme') return send(res, 200, 'application/zip', archives.notPlugin);
    if (m[1] === 'html')
      return send(res, 200, 'text/html; charset=utf-8', '<!DOCTYPE html><html><body>Sign in to GitHub</body></html>');
    if (m[1] === 'huge') {
      // No content-length: the limit has to be enforced while the body streams in.
      res.writeHead(200, { 'content-type': 'application/zip' });
      const chunk = Buffer.alloc(64 * 1024, 0x50);
      let sent = 0;
      const pump = (): void => {
        while (sent < 8 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => undefined);
      return pump();
    }
    return send(res, 200, 'application/zip', m[2] === SHA_V1 ? archives.githubV1 : archives.githubMain);
  });
  await listen(codeload);
  const codeloadOrigin = `http://127.0.0.1:${(codeload.address() as AddressInfo).port}`;

  const api = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', 'http://x');
    const p = url.pathname;
    const origin = `http://${req.headers.host}`;
    const json = (v: unknown, status = 200): void => send(res, status, 'application/json', JSON.stringify(v));

    // ---- GitHub API
    let m = /^\/repos\/PostHog\/(hello|readme|html|huge)$/.exec(p);
    if (m) return json({ full_name: `PostHog/${m[1]}`, default_branch: 'main' });
    m = /^\/repos\/PostHog\/(hello|readme|html|huge)\/commits\/(.+)$/.exec(p);
    if (m) {
      const ref = decodeURIComponent(m[2] as string);
      if (ref === 'main' || ref === 'feature/x') return json({ sha: SHA_MAIN });
      if (ref === 'v1.0') return json({ sha: SHA_V1 });
      return json({ message: `No commit found for SHA: ${ref}` }, 422);
    }
    m = /^\/repos\/PostHog\/(hello|readme|html|huge)\/zipball\/([0-9a-f]{40})$/.exec(p);
    if (m) {
      res.writeHead(302, { location: `${codeloadOrigin}/PostHog/${m[1]}/zip/${m[2]}` });
      return res.end();
    }
    if (p === '/repos/PostHog/loop/zipball/' + SHA_MAIN || p === '/loop') {
      res.writeHead(302, { location: '/loop' });
      return res.end();
    }
    if (p.startsWith('/repos/')) return json({ message: 'Not Found' }, 404);

    // ---- GitLab API
    if (p === '/api/v4/projects/group%2Fproj')
      return json({ path_with_namespace: 'group/proj', default_branch: 'main' });
    m = /^\/api\/v4\/projects\/group%2Fproj\/repository\/commits\/(.+)$/.exec(p);
    if (m)
      return m[1] === 'main' || m[1] === 'dev'
        ? json({ id: SHA_GITLAB })
        : json({ message: '404 Commit Not Found' }, 404);
    if (p === '/api/v4/projects/group%2Fproj/repository/archive.zip' && url.searchParams.get('sha') === SHA_GITLAB) {
      return send(res, 200, 'application/zip', archives.gitlab);
    }
    if (p.startsWith('/api/v4/')) return json({ message: '404 Project Not Found' }, 404);

    // ---- npm registry
    if (p === '/@posthog%2fhello' || p === '/@posthog%2Fhello') {
      return json({
        name: '@posthog/hello',
        'dist-tags': { latest: '1.1.0', beta: '1.0.0' },
        versions: {
          '1.0.0': { dist: { tarball: `${origin}/@posthog/hello/-/hello-1.0.0.tgz` } },
          '1.1.0': { dist: { tarball: `${origin}/@posthog/hello/-/hello-1.1.0.tgz` } },
        },
      });
    }
    if (p === '/@posthog/hello/-/hello-1.0.0.tgz') return send(res, 200, 'application/octet-stream', archives.npm100);
    if (p === '/@posthog/hello/-/hello-1.1.0.tgz') return send(res, 200, 'application/octet-stream', archives.npm110);

    // ---- plain URLs
    if (p === '/files/plugin.tgz') return send(res, 200, 'application/gzip', archives.direct);
    if (p === '/files/declared-huge.zip') {
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': String(512 * 1024 * 1024) });
      res.on('error', () => undefined);
      return res.write(Buffer.alloc(1024));
    }
    if (p === '/files/slow.zip')
      return void setTimeout(() => send(res, 200, 'application/zip', archives.direct), 5_000).unref();
    return json({ error: 'not found' }, 404);
  });
  await listen(api);

  return {
    api: `http://127.0.0.1:${(api.address() as AddressInfo).port}`,
    codeload: codeloadOrigin,
    requests,
    close: async () => {
      for (const s of [api, codeload]) {
        s.closeAllConnections();
        await new Promise<void>((r) => s.close(() => r()));
      }
    },
  };
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function listen(server: http.Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
}
