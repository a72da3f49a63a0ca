import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Every directory made by tempDir in this process, removed when the process exits. */
const made: string[] = [];
let hooked = false;

/**
 * A fresh directory under the system temp dir, named `<prefix>XXXXXX`, removed with everything in it when the
 * test process exits (also when a test failed before its own cleanup). Prefixes start with `pp-`: the leftovers
 * check at the end of `make test` looks for those.
 */
export function tempDir(prefix = 'pp-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.push(dir);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const d of made) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}
