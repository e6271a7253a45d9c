import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import { describeIssues } from '../workflows/backup-input.js';
import type { PruneResult } from '../workflows/prune-backups.js';
import { PruneInput } from '../workflows/prune-input.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { assertConfigured } from './backup.js';
import { table, UsageError } from './output.js';

export const PRUNE_USAGE = 'pgrunbook backups prune --database ID [--repository R] [--dry-run] [--wait] [--json]';

/** Validates the request, then starts `pruneBackups` as `prune-<db>-<timestamp>`. */
export async function startPrune(client: Client, config: Config, raw: PruneInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: PruneInput) => Promise<PruneResult>>> {
  const parsed = PruneInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid prune request: ${describeIssues(parsed.error)}`, PRUNE_USAGE);
  const input = parsed.data;
  assertConfigured(config, input.database, input.repository);
  const workflowId = `prune-${input.database}-${compactTimestamp(new Date())}${input.dryRun ? '-dry-run' : ''}`;
  try {
    return await client.workflow.start('pruneBackups', {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: DATABASE_ATTRIBUTE, value: input.database },
        { key: OPERATION_ATTRIBUTE, value: 'prune' },
      ],
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      throw new UsageError(`a prune of ${input.database} started this very second is already running (${workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`');
    }
    throw error;
  }
}

/** The decision table: every backup, its state, keep or delete, and the rule(s) that decided it. */
export function describePruneResult(r: PruneResult): string {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  const count = r.dryRun ? r.decisions.filter((d) => d.action === 'delete').length : r.deleted.length;
  const head = `prune of ${r.database} in ${r.location}${r.dryRun ? ' (dry run: nothing was deleted)' : ''}: ${verb} ${count} of ${r.decisions.length} backup folder${r.decisions.length === 1 ? '' : 's'}`;
  if (!r.configured) return `${head}\nretention is not configured for ${r.database} (databases.${r.database}.retention): nothing is deleted`;
  if (r.decisions.length === 0) return `${head}\nno backups of ${r.database}`;
  const rows = r.decisions.map((d) => [d.id, d.state, d.action === 'delete' ? (r.dryRun ? 'delete' : 'DELETED') : 'keep', d.reasons.join('; ')]);
  const skipped = r.skipped.map((s) => `skipped ${s.backupId}: ${s.reason}`);
  return [head, table(['BACKUP', 'STATE', 'ACTION', 'RULE'], rows), ...skipped, ...(r.reportKey ? [`report: ${r.reportKey}`] : [])].join('\n');
}
