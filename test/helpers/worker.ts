import { type ChildProcess, execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { needsServices } from './needs-services';

needsServices('a posthog-plugins worker process and its broker (test/helpers/worker)');

const execFileAsync = promisify(execFile);

/** Whether a process with this pid still exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Direct children of a process (e.g. the worker processes of `start`); [] when there are none. */
export async function childrenOf(pid: number): Promise<number[]> {
  try {
    const { stdout } = await execFileAsync('pgrep', ['-P', String(pid)]);
    return stdout.split('\n').filter(Boolean).map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** The real CLI, as an operator runs it (bin script adds --no-node-snapshot). */
export const BIN = path.resolve(__dirname, '../../../bin/posthog-plugins');
export const REPO = path.resolve(__dirname, '../../..');

/** Run a one-shot CLI command (migrate, install, list, replay); rejects with its stderr on failure. */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ stdout: string; stderr: string }> {
  try {
    // Commands that change plugins announce it on reload-plugins; on the shared Redis that would reach the workers
    // of other test files, so it is off here unless a test asks for it (test/cli/ does, on private Redis servers).
    return await execFileAsync(BIN, args, {
      cwd: REPO,
      env: { ...process.env, PLUGINS_RELOAD_PUBSUB_CHANNEL: '', ...env },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`posthog-plugins ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}`);
  }
}

export interface WorkerProcess {
  readonly child: ChildProcess;
  /** JSON log lines so far. */
  logs(): Array<Record<string, unknown>>;
  logText(): string;
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<Record<string, unknown>>;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** `posthog-plugins start` with JSON logs; resolves once it says it is consuming. */
export async function startWorker(args: string[], env: Record<string, string> = {}): Promise<WorkerProcess> {
  const child = spawn(BIN, ['start', '--log-format', 'json', '--log-level', 'debug', ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let text = '';
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let pending = '';
  const onData = (chunk: Buffer): void => {
    text += chunk.toString();
    pending += chunk.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ message: line, level: 'raw' });
      }
    }
    waiters.splice(0).forEach((w) => w());
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      live.delete(child);
      waiters.splice(0).forEach((w) => w());
      resolve(code);
    }),
  );

  const proc: WorkerProcess = {
    child,
    logs: () => lines,
    logText: () => text,
    waitForLog: (match, timeoutMs, what) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`timed out waiting for worker log: ${what}\n${text.slice(-4000)}`)),
          timeoutMs,
        );
        const check = (): void => {
          const found = lines.find(match);
          if (found) {
            clearTimeout(timer);
            resolve(found);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer);
            reject(new Error(`worker exited while waiting for: ${what}\n${text.slice(-4000)}`));
          } else waiters.push(check);
        };
        check();
      }),
    stop: async (timeoutMs = 30_000) => {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
  await proc.waitForLog(
    (l) => typeof l.message === 'string' && l.message.startsWith('consuming '),
    60_000,
    'consuming',
  );
  return proc;
}
