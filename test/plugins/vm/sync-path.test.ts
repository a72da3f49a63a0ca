import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { PluginVm } from '../../../src/plugins/vm/plugin-vm';
import { captureLogger } from '../helpers';

/**
 * processEvent runs through the driver's synchronous entry (applySync) while it returns plain values, and the
 * async driver takes over at the first promise. These check the hand-over: every event runs exactly once, in
 * order, and limits hit on the synchronous path are handled as on the async one.
 */
const CODE = `
let seq = 0;
const incarnation = Math.random();
exports.processEvent = (event) => {
  event.properties.seq = ++seq;
  event.properties.incarnation = incarnation;
  if (event.event === 'async') return Promise.resolve().then(() => { event.properties.late = true; return event; });
  if (event.event === 'reject') return Promise.reject(new RangeError('rejected on purpose'));
  if (event.event === 'throw') throw new TypeError('thrown on purpose');
  if (event.event === 'drop') return null;
  if (event.event === 'loop') for (;;) {}
  if (event.event === 'slow') { const until = Date.now() + 5; while (Date.now() < until) {} }
  if (event.event === 'micro') Promise.resolve().then(() => { for (;;) {} });
  return event;
};
`;

const ev = (name: string): string => JSON.stringify({ event: name, properties: {} });
const parsed = (s: string | null | undefined): { event: string; properties: Record<string, unknown> } =>
  JSON.parse(s as string);

describe('processEvent synchronous fast path', () => {
  const vms: PluginVm[] = [];
  const start = async (cpuTimeoutMs = 1000): Promise<PluginVm> => {
    const vm = new PluginVm({
      configId: 1,
      pluginId: 1,
      teamId: 1,
      name: 'sync',
      code: CODE,
      filename: 'sync.js',
      config: {},
      attachments: [],
      logger: captureLogger().logger,
      limits: { cpuTimeoutMs },
    });
    vms.push(vm);
    await vm.start();
    return vm;
  };
  after(() => {
    for (const vm of vms) vm.dispose();
  });

  it('switches to the async driver at the first promise and back per call: each event runs once, in order', async () => {
    const vm = await start();
    const names = ['a', 'b', 'async', 'c', 'async', 'drop', 'throw', 'reject', 'd'];
    const r = await vm.process(names.map(ev));
    assert.equal(r.recreated, 0);
    assert.deepEqual(
      r.errors.map((e) => [e.index, e.error.name, e.error.message]),
      [
        [6, 'TypeError', 'thrown on purpose'],
        [7, 'RangeError', 'rejected on purpose'],
      ],
    );
    assert.equal(r.outputs[5], null);
    assert.equal(r.outputs[6], undefined);
    assert.equal(r.outputs[7], undefined);
    const kept = [0, 1, 2, 3, 4, 8].map((i) => parsed(r.outputs[i]));
    assert.deepEqual(
      kept.map((e) => e.event),
      ['a', 'b', 'async', 'c', 'async', 'd'],
    );
    assert.deepEqual(
      kept.map((e) => e.properties.seq),
      [1, 2, 3, 4, 5, 9],
    );
    assert.deepEqual(
      kept.map((e) => e.properties.late === true),
      [false, false, true, false, true, false],
    );
    // The next call starts on the synchronous path again, with the plugin's state kept.
    const next = await vm.process([ev('e')]);
    assert.equal(parsed(next.outputs[0]).properties.seq, 10);
  });

  it('a synchronous loop hits the CPU limit: the isolate is recreated and only that event keeps its value', async () => {
    const vm = await start(100);
    assert.equal(vm.syncPath, true);
    const r = await vm.process(['a', 'loop', 'b'].map(ev));
    // It held the host thread for the whole limit once: from now on it runs on the async path.
    assert.equal(vm.syncPath, false);
    assert.ok(r.recreated >= 1);
    assert.deepEqual(
      r.errors.map((e) => [e.index, e.error.name]),
      [[1, 'TimeoutError']],
    );
    assert.equal(r.outputs[1], undefined);
    assert.equal(parsed(r.outputs[0]).event, 'a');
    assert.equal(parsed(r.outputs[2]).event, 'b');
    assert.equal(vm.state, 'ready');
    const next = await vm.process(['c', 'async'].map(ev));
    assert.deepEqual(next.errors, []);
    assert.deepEqual(
      next.outputs.map((o) => parsed(o).event),
      ['c', 'async'],
    );
  });

  it('a large call enters the isolate in slices: every result keeps its position, and a fatal event reruns only its own slice', async () => {
    const vm = await start(100);
    const names = Array.from({ length: 200 }, () => 'a');
    names[70] = 'throw';
    names[130] = 'drop';
    names[150] = 'async';
    names[190] = 'loop';
    const r = await vm.process(names.map(ev));
    assert.deepEqual(
      r.errors.map((e) => [e.index, e.error.name]),
      [
        [70, 'TypeError'],
        [190, 'TimeoutError'],
      ],
    );
    assert.ok(r.recreated >= 1);
    assert.equal(r.notRun, 0);
    assert.equal(r.outputs[70], undefined);
    assert.equal(r.outputs[130], null);
    assert.equal(r.outputs[190], undefined);
    assert.equal(parsed(r.outputs[150]).properties.late, true);
    // Slices of 64: the first two ran once, in order, in the first isolate. The loop's slice (128…191) failed as a
    // whole, so it was rerun event by event in a recreated isolate (its counter starts again), and the loop
    // recreated it once more for the rest. Without slices the whole call would have been rerun.
    const mark = (i: number): unknown => parsed(r.outputs[i]).properties.incarnation;
    for (let i = 0; i < 128; i++) {
      if (i === 70) continue;
      assert.deepEqual([parsed(r.outputs[i]).properties.seq, mark(i)], [i + 1, mark(0)], `event ${i}`);
    }
    assert.deepEqual([parsed(r.outputs[128]).properties.seq, parsed(r.outputs[189]).properties.seq], [1, 62]);
    assert.notEqual(mark(128), mark(0));
    for (let i = 191; i < 200; i++) assert.notEqual(mark(i), mark(128), `event ${i}`);
  });

  it('once an entry of a call hits a limit, the rest of the call runs event by event: one recreated isolate, not one per slice', async () => {
    // 5 ms per event: one event fits the 100 ms CPU limit, a slice of 64 does not.
    const vm = await start(100);
    const r = await vm.process(Array.from({ length: 200 }, () => ev('slow')));
    assert.equal(r.recreated, 1);
    assert.deepEqual(r.errors, []);
    assert.equal(r.notRun, 0);
    assert.equal(r.outputs.filter((o) => parsed(o).event === 'slow').length, 200);
  });

  it('a microtask queued by a synchronous processEvent is bounded by the CPU limit too', async () => {
    const vm = await start(100);
    const r = await vm.process(['a', 'micro', 'b'].map(ev));
    assert.deepEqual(
      r.errors.map((e) => [e.index, e.error.name]),
      [[1, 'TimeoutError']],
    );
    assert.equal(parsed(r.outputs[2]).event, 'b');
    const after = await vm.process([ev('c')]);
    assert.deepEqual(after.errors, []);
    assert.equal(parsed(after.outputs[0]).event, 'c');
  });
});
