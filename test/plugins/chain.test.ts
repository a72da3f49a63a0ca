import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { JsonObject } from '../../protocol/types';
import { closeHarness, Harness, harness, makeEvent, props } from './helpers';

describe('chains', () => {
  let h: Harness;
  before(async () => {
    h = await harness([
      // Team 1: inserted out of order on purpose; order column decides (3, 1, 2 → b, c, a by id).
      { url: 'file:trail.js', name: 'trail a', teamId: 1, order: 3, config: { tag: 'a' } },
      { url: 'file:trail.js', name: 'trail b', teamId: 1, order: 1, config: { tag: 'b' } },
      { url: 'file:trail.js', name: 'trail c', teamId: 1, order: 2, config: { tag: 'c' } },
      // Team 2: drop in the middle ends the chain for that event.
      { url: 'file:trail.js', name: 'trail first', teamId: 2, order: 1, config: { tag: 'first' } },
      { url: 'file:drop-events', name: 'drop', teamId: 2, order: 2, config: { eventToDrop: '$drop_me' } },
      { url: 'file:hostile/throws.js', name: 'throws', teamId: 2, order: 3 },
      { url: 'file:trail.js', name: 'trail last', teamId: 2, order: 4, config: { tag: 'last' } },
      // Team 3: a config whose plugin fails to load does not take the team's other configs down.
      { url: 'file:hostile/setup-throws.js', name: 'bad setup', teamId: 3, order: 1 },
      { url: 'file:trail.js', name: 'trail ok', teamId: 3, order: 2, config: { tag: 'ok' } },
      // Disabled config and a config without team are ignored.
      { url: 'file:trail.js', name: 'disabled', teamId: 4, order: 1, config: { tag: 'disabled' }, enabled: false },
      { url: 'file:trail.js', name: 'no team', teamId: null, order: 1, config: { tag: 'x' } },
      { url: 'file:hostile/tamper.js', name: 'tamper', teamId: 5, order: 1 },
      { url: 'file:trail.js', name: 'after tamper', teamId: 5, order: 2, config: { tag: 'after' } },
    ]);
  });
  after(() => closeHarness(h));

  it('runs configs in ascending order, not id order; stable across calls (no in-place reverse)', async () => {
    assert.deepEqual(
      h.manager.configsFor(1).map((c) => c.order),
      [1, 2, 3],
    );
    for (let i = 0; i < 3; i++) {
      const r = await h.manager.runChain(1, [makeEvent('x'), makeEvent('y')]);
      for (const e of r) assert.deepEqual(props(e).trail, ['b', 'c', 'a']);
    }
  });

  it('a falsy return drops the event and ends its chain; a throw keeps the previous value', async () => {
    const input = [makeEvent('keep'), makeEvent('$drop_me'), makeEvent('$throw'), makeEvent('keep2')];
    const r = await h.manager.runChain(2, input);
    assert.equal(r.length, 4);
    assert.equal(r[1], null);
    assert.deepEqual(props(r[0]).trail, ['first', 'last']);
    assert.equal(props(r[0]).survived, true);
    assert.deepEqual(props(r[2]).trail, ['first', 'last']);
    assert.equal(props(r[2]).survived, undefined);
    assert.equal(r[3]?.event, 'keep2');
    const err = await h.store.getError(h.ids[5].configId);
    assert.equal(err?.message, 'plugin exploded on purpose');
    assert.equal(err?.name, 'TypeError');
    assert.equal((err?.event as JsonObject).event, '$throw');
    assert.deepEqual((err?.event as JsonObject & { properties: JsonObject }).properties.trail, ['first']);
  });

  it('the caller’s event objects are never mutated', async () => {
    const input = [makeEvent('x')];
    const snapshot = JSON.parse(JSON.stringify(input));
    const r = await h.manager.runChain(1, input);
    assert.deepEqual(input, snapshot);
    assert.notEqual(r[0], input[0]);
  });

  it('a failing config is skipped, the rest of the team chain runs; error row written', async () => {
    assert.deepEqual(
      h.manager.configsFor(3).map((c) => c.state),
      ['failed', 'ready'],
    );
    const [e] = await h.manager.runChain(3, [makeEvent('x')]);
    assert.deepEqual(props(e).trail, ['ok']);
    assert.equal(props(e).should_not_happen, undefined);
    const err = await h.store.getError(h.ids[7].configId);
    assert.match(err?.message ?? '', /setupPlugin failed: setup failed on purpose/);
    assert.equal(typeof err?.time, 'string');
  });

  it('disabled configs and configs without team are not loaded', async () => {
    assert.deepEqual(h.manager.configsFor(4), []);
    assert.deepEqual(h.manager.teams().sort(), [1, 2, 3, 5]);
    const input = [makeEvent('x', {}, 4)];
    assert.deepEqual(await h.manager.runChain(4, input), input);
  });

  it('plugins cannot break the driver, change team_id, or the host through builtins; detached rejections cost only their event', async () => {
    const r = await h.manager.runChain(5, [makeEvent('a', {}, 5), makeEvent('$detach', {}, 5), makeEvent('c', {}, 5)]);
    assert.equal(props(r[0]).tampered, true);
    assert.deepEqual(props(r[0]).trail, ['after']);
    assert.equal(r[0]?.team_id, 5);
    assert.equal(props(r[1]).tampered, undefined); // detached rejection → error, previous value kept
    assert.deepEqual(props(r[1]).trail, ['after']);
    assert.equal(props(r[2]).tampered, true);
    const err = await h.store.getError(h.ids[11].configId);
    assert.equal(err?.message, 'detached rejection');
  });

  it('concurrent calls for the same and different teams', async () => {
    const calls = [];
    for (let i = 0; i < 20; i++)
      calls.push(h.manager.runChain(1 + (i % 2), [makeEvent(`e${i}`), makeEvent('$drop_me')]));
    const results = await Promise.all(calls);
    results.forEach((r, i) => {
      if (i % 2 === 0) assert.deepEqual(props(r[0]).trail, ['b', 'c', 'a']);
      else assert.equal(r[1], null);
    });
  });

  it('reload keeps isolates of unchanged configs and swaps changed ones atomically', async () => {
    const vmBefore = h.manager.vmFor(h.ids[0].configId);
    const vmC = h.manager.vmFor(h.ids[2].configId);
    await h.store
      .db('posthog_pluginconfig')
      .where('id', h.ids[2].configId)
      .update({ config: JSON.stringify({ tag: 'C2' }), order: 0 });
    // A reload racing with chain calls: every call sees either the old or the new chain, never a mix.
    const racing = [];
    for (let i = 0; i < 10; i++) racing.push(h.manager.runChain(1, [makeEvent('x')]));
    const reload = h.manager.reload();
    for (let i = 0; i < 10; i++) racing.push(h.manager.runChain(1, [makeEvent('x')]));
    await reload;
    for (const r of await Promise.all(racing)) {
      const trail = props(r[0]).trail;
      assert.ok(
        JSON.stringify(trail) === '["b","c","a"]' || JSON.stringify(trail) === '["C2","b","a"]',
        JSON.stringify(trail),
      );
    }
    assert.equal(h.manager.vmFor(h.ids[0].configId), vmBefore);
    assert.notEqual(h.manager.vmFor(h.ids[2].configId), vmC);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(vmC?.state, 'closed');
    assert.deepEqual(props((await h.manager.runChain(1, [makeEvent('x')]))[0]).trail, ['C2', 'b', 'a']);
    // The failed config is retried by a reload (and fails again, still skipped).
    assert.deepEqual(
      h.manager.configsFor(3).map((c) => c.state),
      ['failed', 'ready'],
    );
  });
});
