/**
 * Prints the test files `make test-unit` runs: every dist/test/**\/*.test.js that needs no service, one per line.
 * A file needs services when it, or a test-side module it requires (directly or through others), requires
 * test/helpers/needs-services (which every helper that reaches a service calls) or a service client itself.
 * Picked from the compiled files, so type-only imports do not count and the selection never goes stale as tests
 * are added or moved.
 */
import fs from 'node:fs';
import path from 'node:path';

/** dist/test: only modules under it are followed; src/ and protocol/ touch no service by being loaded. */
const TEST_ROOT = path.resolve(__dirname, '..');
const SERVICE_CLIENTS = new Set(['ioredis', 'amqplib', 'knex', 'pg']);
const REQUIRE = /\brequire\("([^"]+)"\)/g;
const GUARD = path.join(__dirname, 'needs-services.js');

function testFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return testFiles(file);
    return entry.name.endsWith('.test.js') ? [file] : [];
  });
}

function resolveLocal(from: string, spec: string): string {
  const base = path.resolve(path.dirname(from), spec);
  for (const file of [base, `${base}.js`, path.join(base, 'index.js')]) {
    if (fs.existsSync(file) && fs.statSync(file).isFile()) return file;
  }
  throw new Error(`${path.relative(process.cwd(), from)} requires ${spec}, which is not in dist/`);
}

const verdicts = new Map<string, boolean>();

function needsServices(file: string): boolean {
  const known = verdicts.get(file);
  if (known !== undefined) return known;
  verdicts.set(file, false); // a require cycle adds nothing new
  let needs = false;
  for (const [, spec] of fs.readFileSync(file, 'utf8').matchAll(REQUIRE)) {
    if (needs) break;
    if (spec === undefined) continue;
    if (!spec.startsWith('.')) {
      needs = SERVICE_CLIENTS.has(spec);
      continue;
    }
    const target = resolveLocal(file, spec);
    if (target === GUARD) needs = true;
    else if (target.startsWith(TEST_ROOT + path.sep)) needs = needsServices(target);
  }
  verdicts.set(file, needs);
  return needs;
}

const unit = testFiles(TEST_ROOT)
  .filter((file) => !needsServices(file))
  .map((file) => path.relative(process.cwd(), file))
  .sort();
if (unit.length === 0) throw new Error(`no service-free test files under ${TEST_ROOT}: build first`);
process.stdout.write(`${unit.join('\n')}\n`);
