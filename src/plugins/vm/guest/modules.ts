/** The plugin's `require`, `module` and `exports`: only the modules the host offers (filled by the entry). */
import { defineProperty, ErrorCtor, NullProto, ObjectCreate, strIndexOf, strSlice, StringFn } from './primordials';

export interface ModuleSystem {
  require(name: unknown): unknown;
  module: { exports: Record<string, unknown> };
  /** name → module: the only modules a plugin may import. */
  hostModules: Record<string, unknown>;
}

/** importMessage: the error message for any other module, `%s` standing for its name. */
export function createModuleSystem(importMessage: string): ModuleSystem {
  const importAt = strIndexOf(importMessage, '%s');
  const importBefore = strSlice(importMessage, 0, importAt);
  const importAfter = strSlice(importMessage, importAt + 2);
  const hostModules = ObjectCreate(null);
  function require(name: unknown): unknown {
    const m = hostModules[StringFn(name)];
    if (m !== undefined) return m;
    throw new ErrorCtor(importBefore + StringFn(name) + importAfter);
  }
  // esbuild renames any binding called `require` in a bundle: the name plugins see stays 'require'.
  defineProperty(require, 'name', { __proto__: null, value: 'require' } as NullProto & PropertyDescriptor);
  return { require, module: { exports: {} }, hostModules };
}
