import type { AccessRule } from './schema';

/** One posthog_pluginconfig row with what decides whether it runs (absent columns are undefined). */
export interface ConfigFacts {
  enabled: boolean;
  /** posthog_pluginconfig.deleted (0361 on); NULL or absent counts as false. */
  deleted?: boolean | null;
  teamId: number | null;
  /** Whether the team row exists (posthog_team), when that table does. */
  teamExists?: boolean;
  /** The team's organization's plugins_access_level (0133 on). */
  accessLevel?: number | null;
  teamOrganizationId?: string | null;
  pluginOrganizationId?: string | null;
  pluginIsGlobal?: boolean | null;
  /** Whether the posthog_plugin row exists. */
  pluginExists: boolean;
}

/**
 * Why a config does not run, or null when it does: `enabled`, `deleted IS NOT TRUE`, a team, and PostHog's access
 * rule where its columns exist (the organization's plugins_access_level > 0; on 2021–2023 schemas also the
 * plugin belonging to the team's organization or being global).
 */
export function whyConfigDoesNotRun(c: ConfigFacts, rule: AccessRule): string | null {
  if (!c.enabled) return 'disabled';
  if (c.deleted === true) return 'deleted';
  if (c.teamId === null) return 'no team (team_id is NULL: an old global default config, PostHog skipped these)';
  if (!c.pluginExists) return 'its posthog_plugin row is missing';
  if (c.teamExists === false) return `team ${c.teamId} does not exist in posthog_team`;
  if (rule.level) {
    const level = c.accessLevel ?? null;
    if (level === null)
      return `team ${c.teamId} has no organization (posthog_organization.plugins_access_level unknown)`;
    if (!(level > 0)) return `plugins are off for the team's organization (plugins_access_level ${level})`;
  }
  if (rule.sameOrganization && c.pluginIsGlobal !== true && c.pluginOrganizationId !== c.teamOrganizationId) {
    return 'the plugin belongs to another organization and is not global (is_global false)';
  }
  return null;
}
