// Bundles the in-isolate guest (src/plugins/vm/guest/main.ts) into the one script the host evaluates through
// `context.evalClosure` (see src/plugins/vm/contract.ts): an IIFE for ES2022, so that no down-levelling helper
// looks up builtins at run time, between a banner declaring `guestDriver` and a footer returning it.
// Run by `make build` after tsc; writes dist/src/plugins/vm/guest-bundle.js, which src/plugins/vm/guest-source.ts reads.
import { build } from 'esbuild';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/src/plugins/vm/guest-bundle.js');

const result = await build({
  entryPoints: [join(root, 'src/plugins/vm/guest/main.ts')],
  bundle: true,
  write: false,
  format: 'iife',
  platform: 'neutral',
  target: 'es2022',
  charset: 'utf8',
  legalComments: 'none',
  logLevel: 'warning',
  banner: { js: "'use strict';\nlet guestDriver;" },
  footer: { js: 'return guestDriver;' },
});
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, result.outputFiles[0].text);
