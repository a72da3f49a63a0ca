import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { JsonObject, JsonValue } from '../../../protocol/types';
import { configFields, maskSecrets, resolveConfig } from '../../../src/plugins/loading/config-schema';

describe('plugin.json config schema', () => {
  const schema: JsonValue = [
    { markdown: '# Settings' },
    { key: 'name', type: 'string', required: true },
    { key: 'mode', type: 'choice', choices: ['a', 'b'], default: 'a' },
    { key: 'rules', type: 'json', default: '{}' },
    { key: 'key', type: 'attachment', required: true },
    { key: 'token', secret: true },
  ] as JsonObject[];

  test('both schema forms; markdown entries skipped; a missing type is a string', () => {
    const fields = configFields(schema);
    assert.deepEqual(
      fields.map((f) => [f.key, f.type]),
      [
        ['name', 'string'],
        ['mode', 'choice'],
        ['rules', 'json'],
        ['key', 'attachment'],
        ['token', 'string'],
      ],
    );
    assert.deepEqual(
      configFields({ x: { type: 'choice', choices: ['1'] }, y: { default: 'd' } }).map((f) => [
        f.key,
        f.type,
        f.default ?? null,
      ]),
      [
        ['x', 'choice', null],
        ['y', 'string', 'd'],
      ],
    );
    assert.deepEqual(configFields(null), []);
  });

  test('defaults are filled, attachments reported, changes merge over the stored config', () => {
    assert.deepEqual(resolveConfig(schema, { name: 'n' }), {
      config: { name: 'n', mode: 'a', rules: '{}' },
      problems: [],
      attachmentsNeeded: ['key'],
    });
    const r = resolveConfig(schema, { mode: 'b', token: null }, { name: 'n', token: 't', mode: 'a' });
    assert.deepEqual(r.config, { name: 'n', mode: 'b', rules: '{}' });
    assert.deepEqual(r.problems, []);
  });

  test('every problem is reported at once', () => {
    const r = resolveConfig(schema, { name: 5, mode: 'c', rules: '{', key: 'x', other: '1' });
    assert.deepEqual(r.problems, [
      '"key" is an attachment: it is uploaded as a file, not set in the config',
      'unknown key "other" (plugin.json config has: name, mode, rules, token)',
      '"name" must be a string (plugin.json type string; PostHog stores values as entered), got 5',
      '"mode" must be one of "a", "b", got "c"',
      '"rules" must be JSON text (plugin.json type json), got "{"',
    ]);
    assert.deepEqual(resolveConfig(schema, { name: '' }).problems, ['"name" is required']);
  });

  test('a plugin without a schema takes anything', () => {
    assert.deepEqual(resolveConfig({}, { n: 5 }), { config: { n: 5 }, problems: [], attachmentsNeeded: [] });
  });

  test('secret values are masked for display', () => {
    assert.deepEqual(maskSecrets(schema, { token: 't', name: 'n', empty: '' }), {
      token: '**************** POSTHOG SECRET FIELD ****************',
      name: 'n',
      empty: '',
    });
  });
});
