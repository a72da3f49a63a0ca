/**
 * How fast can RabbitMQ relay under our guarantee on this machine? Runs the broker-only relay (brokers.ts
 * amqpCeiling) in several shapes, taking turns round by round, and prints the median messages/s and RabbitMQ's CPU
 * per message of each: rounds of 250–2,000 messages, 1–4 rounds in flight, one connection or two, one multiple
 * ack per round or one ack per message. `make bench` reports the fastest shape (BEST_RELAY) as the ceiling.
 *
 *   node --no-node-snapshot dist/test/bench/amqp-relay.js [messages per run = 20000] [rounds = 3]
 *
 * Uses the RabbitMQ vhost `posthog-plugins-bench` (reset), like `make bench`.
 */
import { amqpUrl, BENCH_VHOST, deleteVhost, resetVhost } from '../helpers/services';
import { AmqpBench, amqpCeiling, type RelayOptions } from './brokers';
import { benchProducer, OUTPUT_QUEUE } from './envelopes';
import { findProcess, processCpu } from './procs';

const SHAPES: Array<{ name: string; o: RelayOptions }> = [
  {
    name: 'rounds of 1,000, 2 in flight (default)',
    o: { batch: 1000, depth: 2, twoConnections: false, ackEach: false },
  },
  { name: 'rounds of 250, 4 in flight', o: { batch: 250, depth: 4, twoConnections: false, ackEach: false } },
  { name: 'rounds of 500, 2 in flight', o: { batch: 500, depth: 2, twoConnections: false, ackEach: false } },
  { name: 'rounds of 2,000, 2 in flight', o: { batch: 2000, depth: 2, twoConnections: false, ackEach: false } },
  { name: 'rounds of 1,000, 1 in flight', o: { batch: 1000, depth: 1, twoConnections: false, ackEach: false } },
  { name: 'rounds of 1,000, 4 in flight', o: { batch: 1000, depth: 4, twoConnections: false, ackEach: false } },
  {
    name: 'rounds of 1,000, 2 in flight, two connections',
    o: { batch: 1000, depth: 2, twoConnections: true, ackEach: false },
  },
  {
    name: 'rounds of 1,000, 2 in flight, an ack per message',
    o: { batch: 1000, depth: 2, twoConnections: false, ackEach: true },
  },
];

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 20_000);
  const rounds = Number(process.argv[3] ?? 3);
  await resetVhost(BENCH_VHOST);
  const bench = new AmqpBench(amqpUrl(BENCH_VHOST));
  await bench.connect();
  const producer = benchProducer();
  const pid = findProcess('beam.smp');
  const rates = SHAPES.map(() => [] as number[]);
  const cpu = SHAPES.map(() => [] as number[]);
  try {
    for (let r = 1; r <= rounds; r++) {
      for (const [i, shape] of SHAPES.entries()) {
        await bench.purge();
        await bench.queue(n, { teamOf: () => 2, runTag: 0x20000 + r * 100 + i, producer });
        const before = pid ? processCpu(pid) : 0;
        const m = await amqpCeiling(bench.url, n, shape.o);
        if (pid) cpu[i]!.push(((processCpu(pid) - before) * 1e6) / n);
        if (m.moved !== n || (await bench.messageCount(OUTPUT_QUEUE)) !== n)
          throw new Error(`${shape.name}: moved ${m.moved} of ${n}`);
        rates[i]!.push(m.rate);
        process.stderr.write(`round ${r}/${rounds} ${shape.name}: ${Math.round(m.rate)} msg/s\n`);
      }
    }
  } finally {
    await bench.close();
    await deleteVhost(BENCH_VHOST);
  }
  process.stdout.write(`\n${n.toLocaleString('en-US')} messages per run, median of ${rounds} rounds taking turns\n\n`);
  process.stdout.write('| relay shape | msg/s | RabbitMQ CPU µs/msg | runs |\n|---|--:|--:|---|\n');
  for (const [i, shape] of SHAPES.entries()) {
    const runs = rates[i]!.map((x) => Math.round(x).toLocaleString('en-US')).join(', ');
    process.stdout.write(
      `| ${shape.name} | ${Math.round(median(rates[i]!)).toLocaleString('en-US')} | ${cpu[i]!.length ? Math.round(median(cpu[i]!)) : '—'} | ${runs} |\n`,
    );
  }
}

main().catch((err: Error) => {
  process.stderr.write(`amqp-relay: ${err.message}\n`);
  process.exit(1);
});
