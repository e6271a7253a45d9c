import { ApplicationFailure } from '@temporalio/activity';
import { FleetConfig, fleetSelection, taskQueueOf } from '../config/schema.js';
import { serverAddress } from '../postgres/connection.js';
import type { FleetInput, FleetPlan } from '../workflows/fleet-input.js';
import { activitySupport, type ActivityDeps } from './support.js';

// The fleet's plan, read from the worker's config on the control task queue: which databases
// (a named fleet's selector, or the one given), the site each runs on, and each server once for
// its globals. Names and host:port only — credentials stay with each site's worker.

export function createFleetActivities(deps: ActivityDeps) {
  const { stepSettings, env } = activitySupport(deps);
  return {
    async resolveFleet(input: Omit<FleetInput, 'requestedBy'>): Promise<FleetPlan> {
      const config = deps.config;
      const { named, select, databases: ids } = fleetSelection(config, input);
      if (input.fleet && !named) {
        throw ApplicationFailure.nonRetryable(`unknown fleet "${input.fleet}"\nHINT: fleets in the worker's config: ${Object.keys(config.fleets).join(', ') || '(none: add a fleets: section, or give a selector)'}`, 'InvalidInput');
      }
      if (ids.length === 0) {
        throw ApplicationFailure.nonRetryable(
          `the selector ${JSON.stringify(select)} matches no database in the worker's config\nHINT: databases: ${Object.keys(config.databases).join(', ') || '(none)'}`,
          'InvalidInput',
        );
      }
      const databases = ids.map((database) => ({ database, taskQueue: taskQueueOf(config, database), server: serverAddress(config.databases[database]!, env) }));
      // A selection without a named fleet gets a fleet's defaults.
      const settings = named ?? FleetConfig.parse({});
      return {
        fleet: input.fleet ?? null,
        concurrency: input.concurrency ?? settings.concurrency,
        databases,
        servers: [...new Set(databases.map((d) => d.server))],
        globals: { ...settings.globals, enabled: input.globals ?? settings.globals.enabled },
        settings: stepSettings(),
      };
    },
  };
}

export type FleetActivities = ReturnType<typeof createFleetActivities>;
