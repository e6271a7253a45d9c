import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import type { DrillReport } from '../repository/reports.js';
import { describeIssues } from '../workflows/backup-input.js';
import { DrillInput } from '../workflows/drill-input.js';
import type { DrillResult } from '../workflows/restore-drill.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { assertConfigured } from './backup.js';
import { formatDuration } from '../report/units.js';
import { UsageError } from './output.js';

/** Validates the request, then starts `runRestoreDrill` as `drill-<db>-<timestamp>`. */
export async function startDrill(client: Client, config: Config, raw: DrillInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: DrillInput) => Promise<DrillResult>>> {
  const parsed = DrillInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid drill request: ${describeIssues(parsed.error)}`, 'pgrunbook drill --database <id> [--backup ID|latest]');
  const input = parsed.data;
  assertConfigured(config, input.database, input.repository);
  const workflowId = `drill-${input.database}-${compactTimestamp(new Date())}`;
  try {
    return await client.workflow.start('runRestoreDrill', {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: DATABASE_ATTRIBUTE, value: input.database },
        { key: OPERATION_ATTRIBUTE, value: 'drill' },
      ],
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      throw new UsageError(`a drill of ${input.database} started this very second is already running (${workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`');
    }
    throw error;
  }
}

/** The human summary of a drill report: result, RTO/RPO, every check with expected and actual. */
export function describeDrillReport(r: DrillReport, reportKey?: string | null): string {
  const verdict = r.outcome === 'passed' ? 'PASSED' : r.outcome === 'cancelled' ? 'CANCELLED' : 'FAILED';
  const lines = [
    `restore drill of ${r.database}: ${verdict}${r.error ? ` at ${r.error.step}` : ''}`,
    `  backup        ${r.backup_id ?? '(none)'}`,
    `  target        ${r.target ? `${r.target.type} ${r.target.server ?? ''} ${r.target.server_version ? `(PostgreSQL ${r.target.server_version})` : ''}`.trim() : '(not provisioned)'}`,
    `  RTO           ${r.rto_seconds === null ? '-' : formatDuration(r.rto_seconds)}${r.restore_seconds !== null ? ` (pg_restore ${formatDuration(r.restore_seconds)})` : ''}`,
    `  RPO           ${r.rpo_seconds === null ? '-' : `${formatDuration(r.rpo_seconds)} (backup age when the drill started)`}`,
    `  schema        ${r.schema_version_before ?? '(none)'} -> ${r.schema_version_after ?? '(none)'}`,
    `  canary        ${r.canary_found === null ? 'not checked' : r.canary_found ? 'found' : 'MISSING'}`,
    `  teardown      ${r.teardown.state}${r.teardown.detail ? `: ${r.teardown.detail}` : ''}`,
    '  checks:',
    ...r.checks.map((c) => `    ${c.outcome === 'pass' ? 'pass' : c.outcome === 'fail' ? 'FAIL' : 'skip'}  ${c.name}${c.outcome === 'fail' ? `: expected ${JSON.stringify(c.expected)}, got ${JSON.stringify(c.actual)}` : ''}${c.detail && c.outcome !== 'pass' ? ` (${c.detail.split('\n')[0]})` : ''}`),
    ...(r.error ? [`  error         ${r.error.type}: ${r.error.message.split('\n')[0]}`] : []),
    ...(reportKey ? [`  report        ${reportKey}`] : []),
  ];
  return lines.join('\n');
}
