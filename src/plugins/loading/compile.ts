import path from 'node:path';
import { SandboxError } from '../vm/errors';
import type { PluginSourceCode } from './source';
import { importNotAvailable, type TranspiledPlugin, transpilePlugin, transpilePluginAsync } from './transpile';

/** A plugin's code ready for an isolate. */
export interface CompiledPlugin {
  code: string;
  /** For stack traces: "<plugin name>/<main file>". */
  filename: string;
  /** sha256 of the source (what a reload compares). */
  hash: string;
}

/** The modules plugins may import: the sandbox's guest script provides exactly these. */
export function hostModulesFor(fetchEnabled: boolean): ReadonlySet<string> {
  return new Set(['@posthog/plugin-scaffold', ...(fetchEnabled ? ['node-fetch'] : [])]);
}

/**
 * Transpile a plugin's main file and refuse imports the sandbox cannot serve: the step every load takes
 * (`start`, reloads, `replay`, and `install`'s check) before the code enters an isolate.
 */
export function compilePlugin(src: PluginSourceCode, hostModules: ReadonlySet<string>): CompiledPlugin {
  return checked(src, transpilePlugin(src.code, src.main), hostModules);
}

/** compilePlugin on esbuild's async API (see transpilePluginAsync): what the workers' loads use. */
export async function compilePluginAsync(
  src: PluginSourceCode,
  hostModules: ReadonlySet<string>,
): Promise<CompiledPlugin> {
  return checked(src, await transpilePluginAsync(src.code, src.main), hostModules);
}

function checked(src: PluginSourceCode, t: TranspiledPlugin, hostModules: ReadonlySet<string>): CompiledPlugin {
  const missing = t.imports.find((m) => !hostModules.has(m));
  if (missing !== undefined) throw new SandboxError('load', importNotAvailable(missing));
  return {
    code: t.code,
    filename: `${src.name.replace(/[^\w@.-]+/g, '_')}/${path.posix.basename(src.main)}`,
    hash: t.hash,
  };
}
