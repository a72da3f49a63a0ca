/**
 * The worker's CPU per event without a broker: envelope text in (as the Redis pop returns it), envelope text
 * out (as the Redis settle sends it), through the real BatchProcessor and PluginManager with the bench plugin.
 * For profiling the event path in one process: `node --no-node-snapshot dist/test/bench/hotpath.js [events] [batch]`.
 */
import path from 'node:path';
import v8 from 'node:v8';
import { execFileSync } from 'node:child_process';
import { parseEnvelope, buildEnvelopeBytes } from '../../protocol/redis-envelope';
import { BatchProcessor } from '../../src/pipeline/batch-processor';
import { PluginManager } from '../../src/plugins/manager/plugin-manager';
import { openStore } from '../../src/store/open-store';
import { DEFAULT_LIMITS, DEFAULT_FETCH_OPTIONS } from '../../src/plugins/types';
import { createLogger } from '../../src/log';
import type { Delivery } from '../../src/brokers/broker';
import { benchProducer, benchTask, captureMessage, redisEnvelope, REPO_ROOT } from './envelopes';
import { BIN } from './procs';
import { tempDir } from '../helpers/temp';

async function main(): Promise<void> {
  const total = Number(process.argv[2] ?? 100_000);
  const batch = Number(process.argv[3] ?? 1000);
  const dir = tempDir('pp-hotpath-');
  const url = `sqlite:${path.join(dir, 'p.sqlite3')}`;
  execFileSync(
    BIN,
    [
      'install',
      'fixtures/plugins/bench/add-one',
      '--team',
      '2',
      '--config',
      JSON.stringify({ propertyName: 'bench_plugin', propertyValue: '1' }),
    ],
    { cwd: REPO_ROOT, env: { ...process.env, DATABASE_URL: url }, stdio: 'ignore' },
  );
  const logger = createLogger('warn');
  const { db, store } = await openStore(url, logger);
  const plugins = await PluginManager.create({
    store,
    baseDir: REPO_ROOT,
    limits: DEFAULT_LIMITS,
    fetch: DEFAULT_FETCH_OPTIONS,
    logger,
  });
  const processor = new BatchProcessor({ plugins, logger, origin: 'bench@host', outputQueue: 'celery' });
  const producer = benchProducer();
  const sentMs = Date.now();
  const texts = Array.from({ length: batch }, (_, i) =>
    redisEnvelope(captureMessage(benchTask(i, 2, 1, sentMs), producer)),
  );
  console.log(`input envelope ${texts[0]!.length} chars`);
  let outBytes = 0;
  const run = async (n: number): Promise<void> => {
    for (let done = 0; done < n; done += batch) {
      const deliveries: Delivery[] = texts.map((rawText) => {
        const p = parseEnvelope(rawText);
        if (!p.ok) throw new Error(p.reason);
        return { tag: p.deliveryTag, queue: 'posthog-plugins', message: p.message, redelivered: false, rawText };
      });
      const outcomes = await processor.process(deliveries);
      for (const o of outcomes) {
        if (o.kind !== 'ack' || o.outputs.length !== 1) throw new Error(`unexpected outcome ${o.kind}`);
        const out = o.outputs[0]!;
        // As the Redis settle sends it: UTF-8 bytes.
        const env = buildEnvelopeBytes(
          { ...out.message, properties: { ...out.message.properties, priority: 0 } },
          { deliveryTag: 'x', exchange: '', routingKey: 'celery' },
        );
        outBytes = env.length;
      }
    }
  };
  await run(20_000);
  const gcs = new v8.GCProfiler();
  gcs.start();
  const used0 = v8.getHeapStatistics().used_heap_size;
  const t0 = process.cpuUsage();
  const w0 = performance.now();
  await run(total);
  const cpu = process.cpuUsage(t0);
  const wall = performance.now() - w0;
  const allocated = hostBytesAllocated(used0, v8.getHeapStatistics().used_heap_size, gcs.stop());
  console.log(
    `output envelope ${outBytes} bytes; ${total} events: ${((cpu.user + cpu.system) / total).toFixed(1)} µs CPU/event (all threads), ${((wall * 1000) / total).toFixed(1)} µs wall/event, ${Math.round(allocated / total)} bytes allocated/event on the host heap`,
  );
  await plugins.close();
  await db.destroy();
}

/**
 * Bytes the host's V8 heap allocated in a span: what the heap grew by plus what every collection in between
 * freed. Isolates' own heaps and Buffers' backing stores (external memory) are not counted.
 */
function hostBytesAllocated(usedBefore: number, usedAfter: number, profile: v8.GCProfilerResult): number {
  let freed = 0;
  for (const gc of profile.statistics) {
    freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
  }
  return usedAfter - usedBefore + freed;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
