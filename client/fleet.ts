import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { fleetSelection, selectDatabases, taskQueueOf, type Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import { describeIssues } from '../workflows/backup-input.js';
import { FleetInput, type FleetResult } from '../workflows/fleet-input.js';
import { UsageError } from './output.js';
import { startTaggedRunbook } from './start.js';

export const GLOBALS_USAGE = 'pgrunbook globals list [--repository R] [--json]';
export const FLEET_USAGE = 'pgrunbook fleet backup [FLEET] [--select KEY=VALUE]... [--databases GLOB,...] [--concurrency N] [--no-globals] [--label L] [--wait] [--json] | fleet list [--json]';

/**
 * Starts backupFleet on the control task queue, after checking the request against the config:
 * an unknown fleet, or a selector that picks no database, is refused before anything starts.
 */
export async function startFleetBackup(client: Client, config: Config, raw: FleetInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: FleetInput) => Promise<FleetResult>>> {
  const parsed = FleetInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid fleet backup request: ${describeIssues(parsed.error)}`, FLEET_USAGE);
  const input = parsed.data;
  const databases = fleetDatabases(config, input);
  if (databases.length === 0) throw new UsageError(`the selector matches no configured database`, `databases in the config: ${Object.keys(config.databases).join(', ') || '(none)'}`);
  const name = input.fleet ?? 'adhoc';
  const workflowId = `backup-fleet-${name}-${compactTimestamp(new Date())}`;
  return startTaggedRunbook<FleetInput, FleetResult>(client, config, {
    workflowType: 'backupFleet',
    workflowId,
    input,
    database: name,
    operation: 'fleet-backup',
    // Fleets run on the control queue; each database's backup then runs on its own site.
    taskQueue: config.temporal.taskQueue,
    alreadyRunning: new UsageError(`a backup of fleet ${name} started this very second is already running (${workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`'),
  });
}

/** The databases a fleet request picks, as the worker will resolve them from the same config. */
export function fleetDatabases(config: Config, input: Pick<FleetInput, 'fleet' | 'select'>): string[] {
  const { named, databases } = fleetSelection(config, input);
  if (input.fleet && !named) {
    throw new UsageError(`unknown fleet "${input.fleet}"`, `fleets in the config: ${Object.keys(config.fleets).join(', ') || '(none: add a fleets: section, or select databases with --select/--databases)'}`);
  }
  return databases;
}

/** Every configured fleet with its databases and the sites they run on. */
export function describeFleets(config: Config): { fleet: string; concurrency: number; globals: boolean; schedule: boolean; databases: { database: string; taskQueue: string }[] }[] {
  return Object.entries(config.fleets).map(([fleet, spec]) => ({
    fleet,
    concurrency: spec.concurrency,
    globals: spec.globals.enabled,
    schedule: spec.schedule?.enabled ?? false,
    databases: selectDatabases(config, spec.select).map((database) => ({ database, taskQueue: taskQueueOf(config, database) })),
  }));
}
