import fs from 'node:fs';

/**
 * What a worker process has inside plugin isolates right now, written synchronously to a small file before
 * every isolate entry and after every exit. A V8 fatal OOM aborts the process from another thread, so no
 * message could leave it at that moment; the file can, because each write has reached the kernel before the
 * isolate is entered. The supervisor reads it after the death.
 *
 * The file is a short log, so that an entry or exit costs one small appending write (rewriting the whole set each
 * time cost a JSON of every flight, a write and a truncate per isolate call):
 *   `{"flights":[…],"gen":G,"tokens":[…]}\n`   the set when the log was last compacted (tokens: one per flight)
 *   `+G.token {"configId","taskIds","careful"}\n`   an entry
 *   `-G.token\n`                                  its exit
 * Only complete lines of the header's generation G count: a compaction rewrites the header in place and then
 * truncates, so lines left over from an older generation (or a torn last line) are ignored. The first line alone
 * (without "gen") is the whole set, as earlier versions wrote it.
 */
export interface Flight {
  configId: number;
  /** Celery task ids of the events in this call; empty while loading the plugin (code + setupPlugin). */
  taskIds: string[];
  /** A suspect event run alone (see src/pipeline/suspects.ts). */
  careful: boolean;
}

/**
 * Compact the log (rewrite the open set) once it is this long: a batch of 1,000 task ids is a ~40 KB line, so this
 * is one compaction per ~25 isolate calls of full batches, and still a small file to read after a crash.
 */
const COMPACT_AT_BYTES = 1024 * 1024;

export class FlightRecorder {
  private readonly fd: number;
  private readonly open = new Map<number, Flight>();
  private nextToken = 1;
  private gen = 0;
  /** Where the next line goes. */
  private offset = 0;
  private closed = false;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'w', 0o600);
    this.compact();
  }

  /** Record an entry; the returned function records its end. */
  enter(configId: number, taskIds: string[], careful = false): () => void {
    const token = this.nextToken++;
    const flight = { configId, taskIds, careful };
    this.open.set(token, flight);
    this.append(`+${this.gen}.${token} ${JSON.stringify(flight)}\n`);
    return () => {
      if (this.open.delete(token)) this.append(`-${this.gen}.${token}\n`);
    };
  }

  /** Nothing in flight any more: the record goes away (a clean exit leaves nothing to read). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.open.clear();
    this.compact();
    fs.closeSync(this.fd);
    fs.rmSync(this.file, { force: true });
  }

  private append(line: string): void {
    if (this.offset + line.length > COMPACT_AT_BYTES) {
      // The open set already has this entry (or no longer has this exit): the new header says it all. Later exits
      // carry the new generation (the closure in enter() reads this.gen when it runs).
      this.compact();
      return;
    }
    this.write(line, this.offset);
  }

  /** Rewrite the file as a header holding the open set, in a new generation. */
  private compact(): void {
    this.gen++;
    const tokens = [...this.open.keys()];
    const header = JSON.stringify({ flights: [...this.open.values()], gen: this.gen, tokens }) + '\n';
    this.offset = 0;
    this.write(header, 0);
    try {
      fs.ftruncateSync(this.fd, this.offset);
    } catch {
      // see write()
    }
  }

  private write(text: string, at: number): void {
    const buf = Buffer.from(text);
    try {
      fs.writeSync(this.fd, buf, 0, buf.length, at);
      this.offset = at + buf.length;
    } catch {
      // A full disk must not stop the worker; the supervisor then sees a stale or empty record.
    }
  }
}

function toFlight(f: unknown): Flight | null {
  if (typeof f !== 'object' || f === null) return null;
  const v = f as Flight;
  if (typeof v.configId !== 'number' || !Array.isArray(v.taskIds)) return null;
  return {
    configId: v.configId,
    taskIds: v.taskIds.filter((t): t is string => typeof t === 'string'),
    careful: v.careful === true,
  };
}

/** The flights recorded in `file`: [] when none, null when the file is missing or unreadable. */
export function readFlights(file: string): Flight[] | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const lines = text.split('\n');
  lines.pop(); // after the last newline: empty, or a torn line
  if (lines.length === 0) return null;
  let header: { flights?: unknown; gen?: unknown; tokens?: unknown };
  try {
    header = JSON.parse(lines[0]) as typeof header;
  } catch {
    return null;
  }
  if (!Array.isArray(header.flights)) return null;
  const flights = header.flights as unknown[];
  if (typeof header.gen !== 'number' || !Array.isArray(header.tokens)) {
    return flights.map(toFlight).filter((f): f is Flight => f !== null); // the whole set, in one line
  }
  const open = new Map<string, Flight>();
  const tokens = header.tokens as unknown[];
  flights.forEach((f, i) => {
    const flight = toFlight(f);
    if (flight) open.set(String(tokens[i]), flight);
  });
  const prefix = String(header.gen) + '.';
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const op = line[0];
    if ((op !== '+' && op !== '-') || !line.startsWith(prefix, 1)) continue; // another generation's leftovers
    const space = line.indexOf(' ');
    const token = line.slice(1 + prefix.length, space < 0 ? undefined : space);
    if (op === '-') {
      open.delete(token);
      continue;
    }
    if (space < 0) continue;
    try {
      const flight = toFlight(JSON.parse(line.slice(space + 1)));
      if (flight) open.set(token, flight);
    } catch {
      // not a complete entry line
    }
  }
  return [...open.values()];
}
