/**
 * What one isolate entry costs per event, by the number of events per entry: the bench events' JSON copied into
 * an isolate made like the sandbox makes them (isolated-vm, the default memory limit), parsed, given one property,
 * stringified and copied back. isolated-vm sizes an isolate's young generation from its memory limit, so past a
 * few dozen events per entry the entry's live data outgrows it and the cost per event jumps; the sandbox's
 * ENTRY_MAX_EVENTS comes from this table. The sizes take turns round by round, so machine noise hits them alike.
 * `node --no-node-snapshot dist/test/bench/isolate-slices.js [rounds]`
 */
import ivm from 'isolated-vm';
import { DEFAULT_LIMITS } from '../../src/plugins/types';
import { toPluginEvent } from '../../protocol/posthog';
import { benchTask, captureArgs } from './envelopes';

const SIZES = [16, 64, 128, 256, 500, 1000];

function main(): void {
  const rounds = Number(process.argv[2] ?? 20);
  const sentMs = Date.now();
  const events = Array.from({ length: Math.max(...SIZES) }, (_, i) =>
    JSON.stringify(toPluginEvent(captureArgs(benchTask(i, 2, 1, sentMs)))),
  );
  const lanes = SIZES.map((size) => {
    const isolate = new ivm.Isolate({ memoryLimit: DEFAULT_LIMITS.memoryLimitMb });
    const context = isolate.createContextSync();
    const fn = context.evalSync(
      `(function (inputs) {
        const out = new Array(inputs.length);
        for (let i = 0; i < inputs.length; i++) {
          const e = JSON.parse(inputs[i]);
          e.properties.bench_plugin = '1';
          out[i] = JSON.stringify(e);
        }
        return out;
      })`,
      { reference: true },
    ) as ivm.Reference<(inputs: string[]) => string[]>;
    return { size, isolate, fn, inputs: events.slice(0, size), cpuUs: 0, events: 0 };
  });
  const perRound = 20_000;
  for (let round = 0; round < rounds + 2; round++) {
    for (const lane of lanes) {
      const calls = Math.ceil(perRound / lane.size);
      const t0 = process.cpuUsage();
      for (let c = 0; c < calls; c++)
        lane.fn.applySync(undefined, [lane.inputs], { arguments: { copy: true }, result: { copy: true } });
      const t = process.cpuUsage(t0);
      if (round < 2) continue; // warm-up
      lane.cpuUs += t.user + t.system;
      lane.events += calls * lane.size;
    }
  }
  console.log(
    `isolate entries (memoryLimit ${DEFAULT_LIMITS.memoryLimitMb} MB), ~${events[0]!.length} B event JSON, ${rounds} rounds:`,
  );
  console.log('| events per entry | CPU µs/event (all threads) |');
  console.log('|-----------------:|---------------------------:|');
  for (const lane of lanes) {
    console.log(`| ${String(lane.size).padStart(16)} | ${(lane.cpuUs / lane.events).toFixed(1).padStart(26)} |`);
    lane.isolate.dispose();
  }
}

main();
