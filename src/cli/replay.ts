import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { derivedUuid } from '../../protocol/ids';
import { buildEnvelope, parseEnvelope } from '../../protocol/redis-envelope';
import type { Delivery } from '../brokers/broker';
import type { Logger } from '../log';
import { BatchProcessor, type ChainRunner } from '../pipeline/batch-processor';

export interface ReplayArgs {
  files: string[];
  out?: string;
  outputQueue: string;
  batchSize: number;
  /** Instant that `expires` is judged against (ISO); default: now. */
  now?: string;
  strict: boolean;
}

export interface ReplaySummary {
  read: number;
  published: number;
  dropped: number;
  expired: number;
  rejected: number;
}

/**
 * `posthog-plugins replay`: run captured Redis envelopes (one per line, as found in the queue list) through
 * the same batch processor as the worker, without a broker, and write the resulting `process_event`
 * envelopes as JSON lines. Output is byte-stable: ids and delivery tags derive from the input task ids, the
 * origin is fixed and eta is ignored (every task runs), so the same input and plugins give the same bytes.
 */
export async function runReplay(args: ReplayArgs, plugins: ChainRunner, logger: Logger): Promise<ReplaySummary> {
  const nowMs = args.now ? Date.parse(args.now) : Date.now();
  if (Number.isNaN(nowMs)) throw new Error(`--now must be an ISO-8601 date, got ${JSON.stringify(args.now)}`);
  const processor = new BatchProcessor({
    plugins,
    logger,
    origin: 'posthog-plugins-replay',
    outputQueue: args.outputQueue,
    now: () => nowMs,
    ignoreEta: true,
  });
  const out: Writable = args.out ? await openOutput(args.out) : process.stdout;
  const summary: ReplaySummary = { read: 0, published: 0, dropped: 0, expired: 0, rejected: 0 };
  let batch: Delivery[] = [];

  const flush = async (): Promise<void> => {
    const outcomes = await processor.process(batch);
    for (const o of outcomes) {
      if (o.kind === 'reject') {
        summary.rejected++;
        logger.warn(`line ${o.delivery.tag}: rejected: ${o.reason}`);
      } else if (o.kind === 'ack') {
        summary[o.result]++;
        for (const output of o.outputs) {
          const id = String(output.message.headers['id']);
          const envelope = buildEnvelope(
            { ...output.message, properties: { ...output.message.properties, priority: output.priority } },
            { deliveryTag: derivedUuid(`${id}:delivery_tag`), exchange: '', routingKey: output.queue },
          );
          await write(out, envelope + '\n');
        }
      }
    }
    batch = [];
  };

  for (const file of args.files) {
    const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    let lineNo = 0;
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue;
      summary.read++;
      const where = `${file}:${lineNo}`;
      const parsed = parseEnvelope(line);
      if (!parsed.ok) {
        summary.rejected++;
        logger.warn(`line ${where}: rejected: ${parsed.reason}`);
        continue;
      }
      batch.push({
        tag: where,
        queue: parsed.routingKey,
        message: parsed.message,
        redelivered: parsed.redelivered,
        rawText: line,
      });
      if (batch.length >= args.batchSize) await flush();
    }
  }
  if (batch.length) await flush();
  if (out !== process.stdout)
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  logger.info(`replayed ${summary.read} message(s)`, summary);
  return summary;
}

/**
 * The --out file, opened before any message is processed: a path that cannot be written is reported as an
 * error (exit 1) instead of an unhandled stream 'error' event crashing the process mid-replay.
 */
function openOutput(file: string): Promise<Writable> {
  return new Promise((resolve, reject) => {
    const stream = createWriteStream(file);
    stream.once('error', (err) => reject(new Error(`cannot write ${file}: ${err.message}`)));
    stream.once('open', () => resolve(stream));
  });
}

function write(stream: Writable, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.write(text)) resolve();
    else {
      stream.once('drain', resolve);
      stream.once('error', reject);
    }
  });
}
