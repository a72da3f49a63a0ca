import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { whyConfigDoesNotRun, type ConfigFacts } from '../../src/store/config-rules';

const base: ConfigFacts = { enabled: true, teamId: 2, pluginExists: true };
const none = { level: false, sameOrganization: false };
const level = { level: true, sameOrganization: false };
const both = { level: true, sameOrganization: true };
const org = { accessLevel: 9, teamOrganizationId: 'A', pluginOrganizationId: 'A', pluginIsGlobal: false };

describe('whyConfigDoesNotRun', () => {
  it('runs an enabled config with a team where no access columns exist (2020)', () => {
    assert.equal(whyConfigDoesNotRun(base, none), null);
    assert.equal(whyConfigDoesNotRun({ ...base, deleted: null }, none), null, 'deleted NULL counts as false');
  });
  it('disabled, deleted, NULL team, missing plugin or team', () => {
    assert.equal(whyConfigDoesNotRun({ ...base, enabled: false }, none), 'disabled');
    assert.equal(whyConfigDoesNotRun({ ...base, deleted: true }, none), 'deleted');
    assert.match(String(whyConfigDoesNotRun({ ...base, teamId: null }, none)), /no team/);
    assert.match(String(whyConfigDoesNotRun({ ...base, pluginExists: false }, none)), /posthog_plugin row is missing/);
    assert.match(String(whyConfigDoesNotRun({ ...base, teamExists: false }, none)), /team 2 does not exist/);
  });
  it("plugins_access_level > 0 of the team's organization (0133 on)", () => {
    assert.equal(whyConfigDoesNotRun({ ...base, ...org }, level), null);
    assert.match(String(whyConfigDoesNotRun({ ...base, ...org, accessLevel: 0 }, level)), /plugins_access_level 0/);
    assert.match(String(whyConfigDoesNotRun({ ...base, ...org, accessLevel: null }, level)), /no organization/);
  });
  it("2021–2023: the plugin is the team's organization's, or global", () => {
    assert.equal(whyConfigDoesNotRun({ ...base, ...org }, both), null);
    assert.match(
      String(whyConfigDoesNotRun({ ...base, ...org, pluginOrganizationId: 'B' }, both)),
      /another organization/,
    );
    assert.equal(whyConfigDoesNotRun({ ...base, ...org, pluginOrganizationId: 'B', pluginIsGlobal: true }, both), null);
    assert.equal(
      whyConfigDoesNotRun({ ...base, ...org, pluginOrganizationId: 'B' }, level),
      null,
      'the 2024 server dropped that rule',
    );
  });
});
