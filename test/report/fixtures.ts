import type { DrillCheck, DrillReport, DrillStep } from '../../repository/reports.js';

/**
 * A drill report as the drill workflow writes it (repository/reports.ts DrillReport): restore of
 * `backupId` into a scratch database, checks, teardown. `failedCheck` makes that check fail and the
 * drill with it, the way a row-count mismatch fails a real drill.
 */
export function drillReport(options: {
  database: string;
  startedAt: Date;
  backupId: string;
  backupStartedAt: Date;
  restoreSeconds: number;
  checksSeconds?: number;
  failedCheck?: DrillCheck['kind'];
  error?: DrillReport['error'];
}): DrillReport {
  const { database, startedAt } = options;
  const checksSeconds = options.checksSeconds ?? 4;
  const plan: [string, number][] = [
    ['preflight', 1.2],
    ['create-scratch', 0.8],
    ['restore', options.restoreSeconds],
    ['checks', checksSeconds],
    ['teardown', 1.5],
    ['report', 0.3],
  ];
  let at = startedAt.getTime();
  const steps: DrillStep[] = plan.map(([step, seconds]) => {
    const started = at;
    at += seconds * 1000;
    const failed = step === 'checks' && options.failedCheck !== undefined;
    return {
      step,
      started_at: new Date(started).toISOString(),
      finished_at: new Date(at).toISOString(),
      duration_ms: Math.round(seconds * 1000),
      outcome: failed ? 'failed' : 'ok',
      ...(failed ? { error: `${options.failedCheck} check failed` } : {}),
    };
  });
  const kinds: DrillCheck['kind'][] = ['checksum', 'row-counts', 'schema-version', 'canary', 'smoke-query'];
  const checks: DrillCheck[] = kinds.map((kind) =>
    kind === options.failedCheck
      ? { name: kind, kind, outcome: 'fail', expected: { 'public.users': 1200 }, actual: { 'public.users': 1187 }, detail: 'public.users: 13 rows missing' }
      : { name: kind, kind, outcome: 'pass', expected: null, actual: null },
  );
  const passed = options.failedCheck === undefined && !options.error;
  return {
    report_version: 1,
    kind: 'drill',
    pgrunbook_version: '0.1.0',
    workflow_id: `drill-${database}-${startedAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')}`,
    run_id: '00000000-0000-4000-8000-000000000000',
    database,
    repository: 'local',
    backup_id: options.backupId,
    backup_started_at: options.backupStartedAt.toISOString(),
    started_at: startedAt.toISOString(),
    finished_at: new Date(at).toISOString(),
    duration_seconds: (at - startedAt.getTime()) / 1000,
    outcome: passed ? 'passed' : 'failed',
    restore_success: passed,
    target: { type: 'cluster', database: `${database}__drill_x`, server: null, server_version: '15.14' },
    rto_seconds: options.restoreSeconds + checksSeconds,
    restore_seconds: options.restoreSeconds,
    rpo_seconds: (startedAt.getTime() - options.backupStartedAt.getTime()) / 1000,
    schema_version_before: '42',
    schema_version_after: '42',
    row_counts_before: { 'public.users': 1200 },
    row_counts_after: { 'public.users': options.failedCheck === 'row-counts' ? 1187 : 1200 },
    canary_found: true,
    checks,
    steps,
    teardown: { state: 'done', detail: null },
    error: options.error ?? (options.failedCheck ? { step: 'checks', type: 'DrillCheckFailed', message: `${options.failedCheck} check failed` } : null),
    requested_by: 'schedule',
  };
}
