import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Our Redis Lua scripts are `.lua` files beside the code that sends them, each with a header listing its KEYS and
 * ARGV. tsc copies no .lua files: the compiled modules (dist/src/…) read them from the source tree they were built
 * from, so a clone built with `make build`, `npm run build` or plain `tsc` finds them. Read once, at start: a
 * missing file fails there.
 */
const SRC_DIR = path.resolve(__dirname, '../../../src');

/** The text of src/<dir>/<name>.lua, sent to Redis as it is (no substitution). */
export function luaScript(dir: string, name: string): string {
  const file = path.join(SRC_DIR, dir, `${name}.lua`);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read Redis script ${file}: ${(err as Error).message}`);
  }
}
