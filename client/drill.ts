import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import type { DrillReport } from '../repository/reports.js';
import { DrillInput } from '../workflows/drill-input.js';
import type { DrillResult } from '../workflows/restore-drill.js';
import { formatDuration } from '../report/units.js';
import { checkRequest, startRunbook } from './start.js';

/** Validates the request, then starts `runRestoreDrill` as `drill-<db>-<timestamp>`. */
export async function startDrill(client: Client, config: Config, raw: DrillInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: DrillInput) => Promise<DrillResult>>> {
  const input = checkRequest(DrillInput, raw, config, 'drill', 'pgrunbook drill --database <id> [--backup ID|latest]');
  return startRunbook(client, config, { workflowType: 'runRestoreDrill', workflowId: `drill-${input.database}-${compactTimestamp(new Date())}`, input, operation: 'drill' });
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
