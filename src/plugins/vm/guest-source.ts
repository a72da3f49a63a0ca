import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The guest script (src/plugins/vm/guest/, bundled by scripts/build-guest.mjs at `make build`), evaluated through
 * `context.evalClosure` with $0..$3 as contract.ts describes; it returns the Driver.
 */
export const GUEST_SOURCE: string = readGuestSource();

function readGuestSource(): string {
  const file = join(__dirname, 'guest-bundle.js');
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`the sandbox guest script ${file} is missing (run \`make build\`): ${(err as Error).message}`);
  }
}
