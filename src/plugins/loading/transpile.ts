import crypto from 'node:crypto';
import {
  build,
  type BuildOptions,
  type BuildResult,
  buildSync,
  stop as stopEsbuild,
  transform,
  type TransformOptions,
  transformSync,
} from 'esbuild';

export interface TranspiledPlugin {
  /**
   * CommonJS code to run as a classic script (top-level functions stay global, as in PostHog's VM). Plain .js
   * scripts come back unchanged, so that their stack traces keep the original line numbers.
   */
  code: string;
  /** sha256 of loader + original source. */
  hash: string;
  /** Module specifiers the code requires/imports (type-only imports are gone). */
  imports: string[];
}

export class PluginCompileError extends Error {
  override name = 'PluginCompileError';
}

const cache = new Map<string, TranspiledPlugin>();
const CACHE_MAX = 1000;
/** transpilePluginAsync calls in progress (releaseTranspiler waits for none). */
let asyncCalls = 0;

function loaderFor(filename: string): 'ts' | 'js' {
  return /\.(ts|mts|cts)$/i.test(filename) ? 'ts' : 'js';
}

/** esbuild options that list the modules the (already CommonJS) code requires: its bundler's view, see importsOf. */
function importsBuild(code: string, filename: string): BuildOptions & { metafile: true; write: false } {
  return {
    stdin: { contents: code, loader: 'js', sourcefile: filename },
    bundle: true,
    write: false,
    metafile: true,
    platform: 'neutral',
    format: 'cjs',
    external: ['*'],
    logLevel: 'silent',
  };
}

function transformOptions(loader: 'ts' | 'js', filename: string): TransformOptions {
  return { loader, format: 'cjs', target: 'es2022', sourcefile: filename, logLevel: 'silent' };
}

/**
 * Modules the (already CommonJS) code requires or imports, as esbuild's bundler sees them: real `require("x")`
 * calls and `import()`s, not text inside strings or comments. ~1.5 ms warm; only runs on a cache miss.
 */
function importsOf(r: BuildResult<{ metafile: true }>): string[] {
  const out = new Set<string>();
  for (const input of Object.values(r.metafile?.inputs ?? {})) for (const imp of input.imports) out.add(imp.path);
  return [...out];
}

function compileError(err: unknown, filename: string): PluginCompileError {
  const e = err as {
    errors?: Array<{ text: string; location?: { line: number; column: number } | null }>;
    message?: string;
  };
  const first = e.errors?.[0];
  const where = first?.location ? `${filename}:${first.location.line}:${first.location.column}: ` : `${filename}: `;
  return new PluginCompileError(`cannot compile ${where}${first ? first.text : String(e.message ?? err)}`);
}

/**
 * esbuild reprints the code (comments dropped, lines moved). A plain script without import/export needs no
 * transform on Node 20's V8, so run it as written: stack traces then point at the plugin's own lines.
 */
function runnableCode(loader: 'ts' | 'js', source: string, transformed: string): string {
  return loader === 'js' && !/\b__toCommonJS\b|\b__toESM\b/.test(transformed) ? source : transformed;
}

function remember(out: TranspiledPlugin): TranspiledPlugin {
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(out.hash, out);
  return out;
}

function hashOf(loader: 'ts' | 'js', source: string): string {
  return crypto.createHash('sha256').update(loader).update('\0').update(source).digest('hex');
}

/** ESM and TypeScript → CommonJS (es2022) with esbuild, cached by content hash. */
export function transpilePlugin(source: string, filename: string): TranspiledPlugin {
  const loader = loaderFor(filename);
  const hash = hashOf(loader, source);
  const hit = cache.get(hash);
  if (hit) return hit;
  let code: string;
  try {
    code = runnableCode(loader, source, transformSync(source, transformOptions(loader, filename)).code);
  } catch (err) {
    throw compileError(err, filename);
  }
  try {
    return remember({ code, hash, imports: importsOf(buildSync(importsBuild(code, filename))) });
  } catch (err) {
    throw new PluginCompileError(`cannot compile ${filename}: ${(err as Error).message}`);
  }
}

/**
 * transpilePlugin through esbuild's service process on this thread (the sync calls keep a worker thread and a
 * service process of their own): releaseTranspiler then ends that process for good.
 */
export async function transpilePluginAsync(source: string, filename: string): Promise<TranspiledPlugin> {
  const loader = loaderFor(filename);
  const hash = hashOf(loader, source);
  const hit = cache.get(hash);
  if (hit) return hit;
  asyncCalls++;
  try {
    return await transpileWithService(loader, hash, source, filename);
  } finally {
    asyncCalls--;
  }
}

async function transpileWithService(
  loader: 'ts' | 'js',
  hash: string,
  source: string,
  filename: string,
): Promise<TranspiledPlugin> {
  let code: string;
  try {
    code = runnableCode(loader, source, (await transform(source, transformOptions(loader, filename))).code);
  } catch (err) {
    throw compileError(err, filename);
  }
  try {
    return remember({ code, hash, imports: importsOf(await build(importsBuild(code, filename))) });
  } catch (err) {
    throw new PluginCompileError(`cannot compile ${filename}: ${(err as Error).message}`);
  }
}

/**
 * End esbuild's service process (~12 MB) until the next transpilePluginAsync (which starts it again, ~20 ms): the
 * workers call this after each load round, the only time they transpile.
 */
export function releaseTranspiler(): void {
  if (asyncCalls === 0) void stopEsbuild(); // another load in this process (tests) may still be transpiling
}

/** The message for a module a plugin may not import (the allow-list comes later). */
export function importNotAvailable(name: string): string {
  return `Cannot import '${name}': modules are not available in posthog-plugins`;
}
