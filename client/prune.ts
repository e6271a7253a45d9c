import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import type { PruneResult } from '../workflows/prune-backups.js';
import { PruneInput } from '../workflows/prune-input.js';
import { table } from './output.js';
import { checkRequest, startRunbook } from './start.js';

export const PRUNE_USAGE = 'pgrunbook backups prune --database ID [--repository R] [--dry-run] [--wait] [--json]';

/** Validates the request, then starts `pruneBackups` as `prune-<db>-<timestamp>`. */
export async function startPrune(client: Client, config: Config, raw: PruneInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: PruneInput) => Promise<PruneResult>>> {
  const input = checkRequest(PruneInput, raw, config, 'prune', PRUNE_USAGE);
  const workflowId = `prune-${input.database}-${compactTimestamp(new Date())}${input.dryRun ? '-dry-run' : ''}`;
  return startRunbook(client, config, { workflowType: 'pruneBackups', workflowId, input, operation: 'prune' });
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
