import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseKombuJson, stringifyForPython } from '../../protocol/json';
import { toPluginEvent, toProcessEventKwargs, type IngestionArgs } from '../../protocol/posthog';
import type { JsonObject } from '../../protocol/types';
import { closeHarness, type Harness, harness } from './helpers';

/**
 * Numbers JSON.parse would change (lossless-numbers.ts) through real plugin chains in real isolates: written
 * back as Python sent them wherever the plugins left them, as the plugin's JS number where one changed them.
 */
const PROPS =
  '"big": 1000000000000000000000000000000, "u64": 18446744073709551617, "i64": -9223372036854775808, "negz": -0.0, "one": 1.0, "e16": 1e+16, "small": 1.5e-07, "inf": Infinity, "nan": NaN, "f17": 0.30000000000000004, "nested": [[1.0, -0.0], {"x": 2.0}]';
const data = (event: string): string =>
  `{"event": "${event}", "uuid": "u-1", "properties": {${PROPS}, "change_me": 3.0}}`;
/** The properties as Python's json.dumps(separators=(',', ':')) writes them. */
const KEPT = PROPS.replace(/": /g, '":').replace(/, /g, ',');

function args(teamId: number, event = '$pageview'): IngestionArgs {
  return {
    distinct_id: 'd',
    ip: null,
    site_url: '',
    data: parseKombuJson(data(event)) as JsonObject,
    team_id: teamId,
    now: '2020-01-01T00:00:00+00:00',
    sent_at: null,
  };
}

async function dataTextAfter(h: Harness, teamId: number, event?: string): Promise<string> {
  const a = args(teamId, event);
  const [out] = await h.manager.runChain(teamId, [toPluginEvent(a)]);
  assert.ok(out, 'event dropped');
  return stringifyForPython(toProcessEventKwargs(out, a).data);
}

describe('lossless numbers through plugin chains', () => {
  let h: Harness;
  before(async () => {
    h = await harness([
      { url: 'file:numbers', name: 'identity', teamId: 2, order: 1, config: { mode: 'identity' } },
      { url: 'file:numbers', name: 'sibling', teamId: 3, order: 1, config: { mode: 'sibling' } },
      { url: 'file:numbers', name: 'identity first', teamId: 4, order: 1, config: { mode: 'identity' } },
      { url: 'file:process-event-batch.js', name: 'batch', teamId: 4, order: 2 },
      { url: 'file:numbers', name: 'sibling last', teamId: 4, order: 3, config: { mode: 'sibling' } },
      { url: 'file:hostile/throws.js', name: 'throws', teamId: 5, order: 1 },
    ]);
  });
  after(() => closeHarness(h));

  it('no plugin: every number as Python sent it', async () => {
    assert.equal(
      await dataTextAfter(h, 1),
      `{"event":"$pageview","uuid":"u-1","properties":{${KEPT},"change_me":3.0}}`,
    );
  });

  it('a plugin that gives back a copy of the event: every number as Python sent it', async () => {
    assert.equal(
      await dataTextAfter(h, 2),
      `{"event":"$pageview","uuid":"u-1","properties":{${KEPT},"change_me":3.0}}`,
    );
  });

  it('a plugin that changes a sibling: the others as Python sent them, the changed one as the plugin made it', async () => {
    assert.equal(
      await dataTextAfter(h, 3),
      `{"event":"$pageview","uuid":"u-1","properties":{${KEPT},"change_me":6,"plugin_touched":true}}`,
    );
  });

  it('a chain of three (processEventBatch in the middle) restores from the event that entered the chain', async () => {
    assert.equal(
      await dataTextAfter(h, 4),
      `{"event":"$pageview","uuid":"u-1","properties":{${KEPT},"change_me":6,"batch_size":1,"style":"batch","plugin_touched":true}}`,
    );
  });

  it('a plugin that throws leaves the event, numbers included, as it was', async () => {
    assert.equal(
      await dataTextAfter(h, 5, '$throw'),
      `{"event":"$throw","uuid":"u-1","properties":{${KEPT},"change_me":3.0}}`,
    );
  });

  it('what the plugin sees: JS numbers (nearest double, 0 for -0.0, null for inf and nan)', async () => {
    const a = args(2);
    const [out] = await h.manager.runChain(2, [toPluginEvent(a)]);
    const seen = JSON.parse(JSON.stringify(out)) as { properties: Record<string, unknown> };
    assert.deepEqual(
      { ...seen.properties },
      {
        big: 1e30,
        u64: 18446744073709552000,
        i64: -9223372036854775808,
        negz: 0,
        one: 1,
        e16: 1e16,
        small: 1.5e-7,
        inf: null,
        nan: null,
        f17: 0.30000000000000004,
        nested: [[1, 0], { x: 2 }],
        change_me: 3,
      },
    );
  });
});
