import fs from 'node:fs';

/**
 * What a worker process has inside plugin isolates right now, written synchronously to a small file before
 * every isolate entry and after every exit. A V8 fatal OOM aborts the process from another thread, so no
 * message could leave it at that moment; the file can, because each write has reached the kernel before the
 * isolate is entered. The supervisor reads it after the death.
 *
 * The file holds one JSON line (the whole current set), rewritten in place: `{"flights":[{"configId",
 * "taskIds","careful"}]}` then `\n`. Anything after the first newline is leftover from a longer earlier record.
 */
export interface Flight {
  configId: number;
  /** Celery task ids of the events in this call; empty while loading the plugin (code + setupPlugin). */
  taskIds: string[];
  /** A suspect event run alone (see src/pipeline/suspects.ts). */
  careful: boolean;
}

export class FlightRecorder {
  private readonly fd: number;
  private readonly open = new Map<number, Flight>();
  private nextToken = 1;
  private closed = false;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'w', 0o600);
    this.write();
  }

  /** Record an entry; the returned function records its end. */
  enter(configId: number, taskIds: string[], careful = false): () => void {
    const token = this.nextToken++;
    this.open.set(token, { configId, taskIds, careful });
    this.write();
    return () => {
      if (this.open.delete(token)) this.write();
    };
  }

  /** Nothing in flight any more: the record goes away (a clean exit leaves nothing to read). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.open.clear();
    this.write();
    fs.closeSync(this.fd);
    fs.rmSync(this.file, { force: true });
  }

  private write(): void {
    const buf = Buffer.from(JSON.stringify({ flights: [...this.open.values()] }) + '\n');
    try {
      fs.writeSync(this.fd, buf, 0, buf.length, 0);
      fs.ftruncateSync(this.fd, buf.length);
    } catch {
      // A full disk must not stop the worker; the supervisor then sees a stale or empty record.
    }
  }
}

/** The flights recorded in `file`: [] when none, null when the file is missing or unreadable. */
export function readFlights(file: string): Flight[] | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const nl = text.indexOf('\n');
  if (nl < 0) return null;
  try {
    const parsed = JSON.parse(text.slice(0, nl)) as { flights?: unknown };
    if (!Array.isArray(parsed.flights)) return null;
    return parsed.flights
      .filter((f): f is Flight => typeof f === 'object' && f !== null && typeof (f as Flight).configId === 'number' && Array.isArray((f as Flight).taskIds))
      .map((f) => ({ configId: f.configId, taskIds: f.taskIds.filter((t): t is string => typeof t === 'string'), careful: f.careful === true }));
  } catch {
    return null;
  }
}
