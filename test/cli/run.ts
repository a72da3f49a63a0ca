/** Runs the real `bin/posthog-plugins` as an operator would, and reads what it stored. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { BIN, REPO } from '../helpers/worker';

const execFileAsync = promisify(execFile);

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The command's exit code and output (never throws on a non-zero exit). */
export async function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileAsync(BIN, args, {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env },
      maxBuffer: 16 * 1024 * 1024,
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as Error & { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** No stack trace: an expected error is one line, never `    at …` frames. */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+\(?.*:\d+:\d+\)?$/m.test(text);
}

/** Counts the messages published on the reload channel of a Redis server. */
export async function reloadCounter(
  url: string,
  channel = 'reload-plugins',
): Promise<{ messages: string[]; close(): void }> {
  const sub = new Redis(url);
  const messages: string[] = [];
  sub.on('message', (ch: string, m: string) => {
    if (ch === channel) messages.push(m);
  });
  await sub.subscribe(channel);
  return { messages, close: () => sub.disconnect() };
}
