import type { Logger } from '../../log';
import { compilePlugin, hostModulesFor } from './compile';
import { createFetchOp, resolveFetchOptions } from '../api/fetch';
import { PluginVm } from '../vm/plugin-vm';
import type { PluginSourceCode } from './source';
import type { FetchOptions, SandboxLimits } from '../types';

/**
 * Load a plugin the way a worker does (transpile, import check, a fresh isolate with the same limits and host
 * APIs, the code run and its exports read) but without setupPlugin, which may need the config's secrets or the
 * network. Throws the compiler's or loader's error; the isolate is always disposed.
 */
export async function checkPluginLoads(
  src: PluginSourceCode,
  opts: { limits?: Partial<SandboxLimits>; fetch?: FetchOptions; logger: Logger },
): Promise<void> {
  const fetch = resolveFetchOptions(opts.fetch);
  const compiled = compilePlugin(src, hostModulesFor(fetch.enabled));
  const vm = new PluginVm({
    configId: 0,
    pluginId: 0,
    teamId: 0,
    name: src.name,
    code: compiled.code,
    filename: compiled.filename,
    config: {},
    attachments: [],
    limits: opts.limits,
    logger: opts.logger,
    ops: fetch.enabled ? new Map([['fetch', createFetchOp(fetch)]]) : new Map(),
    setup: false,
  });
  try {
    await vm.start();
  } finally {
    vm.dispose();
  }
}
