import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { describeIssues } from '../workflows/backup-input.js';
import type { PitrResult } from '../workflows/point-in-time-restore.js';
import { PitrInput, type ParsedPitrInput } from '../workflows/pitr-input.js';
import { UsageError } from './output.js';
import { operatorIdentity } from './restore.js';
import { startTaggedRunbook } from './start.js';

/** One point-in-time restore per cluster at a time: the workflow id says which cluster. */
export const pitrWorkflowId = (cluster: string): string => `pitr-${cluster}`;

export const PITR_USAGE = 'pgrunbook pitr [--cluster C] --time T|--lsn L|--restore-point NAME|--latest [--mode new|replace] [--base-backup ID] [--yes] [--wait]';

/**
 * Validates the input against the workflow's schema and the config, then starts
 * `pointInTimeRestore` as `pitr-<cluster>`; a second one for the same cluster is refused.
 */
export async function startPitr(client: Client, config: Config, raw: PitrInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: PitrInput) => Promise<PitrResult>>> {
  const parsed = PitrInput.safeParse({ requestedBy: operatorIdentity(), ...raw });
  if (!parsed.success) throw new UsageError(`invalid point-in-time restore request: ${describeIssues(parsed.error)}`, PITR_USAGE);
  const input: ParsedPitrInput = parsed.data;
  const cluster = config.clusters[input.cluster];
  if (!cluster) throw new UsageError(`unknown cluster "${input.cluster}"`, `clusters in the config: ${Object.keys(config.clusters).join(', ') || '(none: add a clusters: section)'}`);
  if (input.mode === 'replace' && !cluster.dataDirectory) {
    throw new UsageError(`--mode replace needs clusters.${input.cluster}.dataDirectory (the live data directory, as the worker on the database host sees it)`, 'set it in the config, or recover into a new data directory (the default, --mode new)');
  }
  const workflowId = pitrWorkflowId(input.cluster);
  return startTaggedRunbook<PitrInput, PitrResult>(client, config, {
    workflowType: 'pointInTimeRestore',
    workflowId,
    input,
    database: cluster.database,
    operation: 'pitr',
    alreadyRunning: new UsageError(
      `a point-in-time restore of cluster ${input.cluster} is already running (workflow ${workflowId}); only one runs per cluster at a time`,
      `see where it is with \`pgrunbook status ${workflowId}\`; finish it with \`pgrunbook pitr promote|discard ${workflowId}\`, or cancel it with \`temporal workflow cancel --workflow-id ${workflowId}\``,
    ),
  });
}
