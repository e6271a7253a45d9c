import { ApplicationFailure, CancellationScope, executeChild, isCancellation, log, patched, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { DrillActivities, DrillCheckResult, DrillPlan, ProvisionedTarget } from '../activities/drill.js';
import type { RestoreStepResult } from '../activities/restore.js';
import { restoreStamp } from '../postgres/database-names.js';
import type { DrillCheck, DrillCheckKind, DrillReport } from '../repository/reports.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { backupDatabase } from './backup-database.js';
import { DrillInput } from './drill-input.js';
import { progressSignal } from './restore-messages.js';
import { notifySafely } from './notify.js';
import { failureTypeOf, messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type DrillStepName = 'resolve' | 'canary' | 'backup' | 'checksum' | 'provision' | 'restore' | 'checks' | 'teardown' | 'report' | 'notify';

export interface DrillResult {
  report: DrillReport;
  reportKey: string | null;
}

// Reading the worker's config: quick, retried a few times at most.
const { planDrill } = proxyActivities<DrillActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 3 } });

const FALLBACK_SETTINGS = { heartbeatSeconds: 30, longStepSeconds: 3600, retry: { maximumAttempts: 3, initialIntervalSeconds: 1, maximumIntervalSeconds: 30 } };

const ALL_CHECKS: DrillCheckKind[] = ['checksum', 'row-counts', 'schema-version', 'canary', 'query-budget'];

/**
 * The monthly restore drill (seed 001 §5, seed 002 §3-4) as one durable workflow: pick the
 * backup (or, with the canary on, write a marker row and take a fresh one), verify the artifact,
 * provision a disposable target (its teardown registered first), restore, check, report, tear
 * down. Teardown runs on success, failure and cancellation alike. A failed drill notifies the
 * webhook and ends the workflow failed, so schedules and metrics show it.
 */
export async function runRestoreDrill(rawInput: DrillInput): Promise<DrillResult> {
  const parsed = DrillInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid runRestoreDrill input: ${describeIssues(parsed.error)}\nHINT: e.g. {"database":"app"}`, 'InvalidInput');
  }
  const input = parsed.data;
  const info = workflowInfo();
  const startedAt = info.startTime;
  const stamp = restoreStamp(startedAt);
  const runbook = new Runbook<DrillStepName>('drill');
  const { status } = runbook;
  status.details = { database: input.database, backup: input.backup };
  status.progress = null;
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.database },
    { key: OPERATION_ATTRIBUTE, value: 'drill' },
  ]);
  setHandler(progressSignal, (progress) => {
    status.progress = progress;
  });

  const checks: DrillCheck[] = [];
  let plan: DrillPlan | undefined;
  let provisioned: ProvisionedTarget | undefined;
  let restored: RestoreStepResult | undefined;
  let checked: DrillCheckResult | undefined;
  let rtoSeconds: number | null = null;
  let teardownRegistered = false;
  let error: DrillReport['error'] = null;
  let cancelled = false;
  let cancellation: unknown;

  // Until the plan brings the configured timeouts, report and notify use these.
  let { short, long } = activityProfiles<DrillActivities>(FALLBACK_SETTINGS);
  let failedAt: DrillStepName | null = null;

  try {
    // 1. Resolve: the backup (latest verified, or the given one; never a failed one) and the target.
    //    No backup to drill is itself a failed drill: it is reported and notified like any other.
    plan = await runbook.step('resolve', () => planDrill({ request: input, stamp, canaryToken: null }));
    ({ short, long } = activityProfiles<DrillActivities>(plan));

    // 2. Canary (seed 002): a marker row, then a fresh backup that must carry it.
    if (plan.needsFreshBackup) {
      const token = `${info.workflowId}/${info.runId}`;
      const database = plan.database;
      await runbook.step('canary', () => short.writeCanary({ database, table: plan!.canary.table, token }));
      const backup = await runbook.step('backup', () =>
        executeChild(backupDatabase, { args: [{ database, label: 'drill', repository: plan!.repository }], workflowId: `${info.workflowId}-backup` }),
      );
      plan = await planDrill({ request: { ...input, backup: backup.backupId }, stamp, canaryToken: token });
    }
    const restorePlan = plan.restore!;
    Object.assign(status.details, { backupId: restorePlan.backupId, repository: restorePlan.repository, target: plan.target.clusterDir ?? plan.target.server, targetDatabase: plan.target.database });

    // 3. Checksum: the artifact read back end to end; a broken one is not worth provisioning for.
    const checksum = await runbook.step('checksum', () => long.verifyDrillArtifact({ plan: restorePlan }));
    checks.push(checksum);
    if (checksum.outcome === 'fail') throw drillFailure((failedAt = 'checksum'), [checksum]);

    // 4. Provision the disposable target; its teardown is registered first (the teardown is
    //    idempotent, so it is safe even if provisioning never got anywhere).
    teardownRegistered = true;
    const drillPlan = plan;
    provisioned = await runbook.step('provision', () => long.provisionDrillTarget({ plan: drillPlan }));
    const target = provisioned;
    status.details.serverVersion = target.serverVersion;

    // 5. Restore, timed: the drill's RTO runs from here to the end of the checks.
    const restoreStarted = Date.now();
    restored = await runbook.step('restore', () => long.restoreDrillTarget({ plan: drillPlan, target }));

    // 6. Checks: row counts, schema version, canary, smoke queries, query-time budget.
    checked = await runbook.step('checks', () => long.checkDrillTarget({ plan: drillPlan, target }));
    rtoSeconds = (Date.now() - restoreStarted) / 1000;
    checks.push(...checked.checks);
    status.details.rtoSeconds = rtoSeconds;
    const failedChecks = checked.checks.filter((c) => c.outcome === 'fail');
    if (failedChecks.length > 0) throw drillFailure((failedAt = 'checks'), failedChecks);
  } catch (caught) {
    cancelled = isCancellation(caught);
    if (cancelled) cancellation = caught;
    const failedStep = failedAt ?? status.finished.findLast((s) => s.outcome !== 'ok')?.step ?? 'drill';
    error = { step: failedStep, type: cancelled ? 'Cancelled' : (failureTypeOf(caught) ?? 'Error'), message: messageOf(caught) };
    if (!cancelled) log.error('restore drill failed', { step: failedStep, error: error.message });
  }

  // 7. Teardown, report and notification happen whatever happened above, cancellation included.
  let report!: DrillReport;
  let reportKey: string | null = null;
  await CancellationScope.nonCancellable(async () => {
    let teardown: DrillReport['teardown'] = { state: 'not-needed', detail: null };
    if (teardownRegistered && plan) {
      const drillPlan = plan;
      try {
        const removed = await runbook.step('teardown', () => long.teardownDrillTarget({ plan: drillPlan }));
        teardown = { state: 'done', detail: `${removed.removed ? 'removed' : 'already gone'}: ${removed.what}` };
      } catch (teardownError) {
        teardown = { state: 'failed', detail: messageOf(teardownError) };
        error ??= { step: 'teardown', type: failureTypeOf(teardownError) ?? 'Error', message: `teardown failed, remove it by hand: ${messageOf(teardownError)}` };
      }
    }
    const outcome: DrillReport['outcome'] = cancelled ? 'cancelled' : error ? 'failed' : 'passed';
    report = buildReport({ outcome, teardown });
    try {
      const written = await runbook.step('report', () => short.writeDrillReport({ report }));
      report = written.report;
      reportKey = written.key;
      status.details.report = written.location;
    } catch (reportError) {
      log.error('drill report could not be written', { error: messageOf(reportError) });
    }
    if (outcome !== 'cancelled' && patched('notify-drill-result')) {
      // Every result is told (a passed drill is the good news a team waits for each month).
      // What went wrong: the failed checks with expected and actual, else the step's error.
      const failedChecks = report.checks.filter((c) => c.outcome === 'fail').map((c) => `${c.name}: expected ${JSON.stringify(c.expected)}, got ${JSON.stringify(c.actual)}`);
      const problems = failedChecks.length > 0 ? failedChecks : error ? [`${error.step}: ${error.message.split('\n')[0]}`] : [];
      status.details.notified = await runbook.step('notify', () => notifySafely({
        kind: 'drill-result', database: input.database, workflowId: info.workflowId, outcome: outcome === 'passed' ? 'passed' : 'failed', backupId: report.backup_id,
        rtoSeconds: report.rto_seconds, rpoSeconds: report.rpo_seconds, problems,
        reportLocation: (status.details.report as string | undefined) ?? null,
      }));
    } else if (outcome === 'failed') {
      try {
        const summary = error ? `${error.step}: ${error.message.split('\n')[0]}` : 'unknown';
        const notified = await runbook.step('notify', () =>
          short.notifyDrillFailure({ database: input.database, workflowId: info.workflowId, summary, reportLocation: (status.details.report as string | undefined) ?? null }),
        );
        status.details.notified = notified.sent ? notified.detail : `not sent: ${notified.detail}`;
      } catch (notifyError) {
        status.details.notified = `failed: ${messageOf(notifyError)}`;
      }
    }
  });

  if (report.outcome === 'passed') {
    runbook.finish('completed');
    return { report, reportKey };
  }
  runbook.finish(report.outcome === 'cancelled' ? 'cancelled' : 'failed');
  // Cancelled stays cancelled (the workflow's status says so), after the target was torn down.
  if (report.outcome === 'cancelled') throw cancellation;
  throw ApplicationFailure.create({ type: 'DrillFailed', nonRetryable: true, message: `restore drill of ${input.database} failed at ${error?.step}: ${error?.message}`, details: [{ reportKey }] });

  function buildReport(end: { outcome: DrillReport['outcome']; teardown: DrillReport['teardown'] }): DrillReport {
    const finishedAt = new Date();
    const restorePlan = plan?.restore ?? null;
    // Checks that never ran (an earlier step failed) are listed as skipped, not left out.
    const ran = new Set(checks.map((c) => c.kind));
    const skipped = ALL_CHECKS.filter((kind) => !ran.has(kind)).map(
      (kind): DrillCheck => ({ name: kind, kind, outcome: 'skipped', expected: null, actual: null, detail: `not run: the drill stopped at ${error?.step ?? 'an earlier step'}` }),
    );
    return {
      report_version: 1,
      kind: 'drill',
      pgrunbook_version: '',
      workflow_id: info.workflowId,
      run_id: info.runId,
      database: input.database,
      repository: restorePlan?.repository ?? plan?.repository ?? null,
      backup_id: restorePlan?.backupId ?? null,
      backup_started_at: restorePlan?.backupStartedAt ?? null,
      started_at: startedAt.toISOString(),
      finished_at: finishedAt.toISOString(),
      duration_seconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
      outcome: end.outcome,
      restore_success: end.outcome === 'passed',
      target: plan ? { type: plan.target.type, database: plan.target.database, server: provisioned?.server ?? plan.target.server ?? plan.target.clusterDir, server_version: provisioned?.serverVersion ?? null } : null,
      rto_seconds: rtoSeconds,
      restore_seconds: restored?.seconds ?? null,
      rpo_seconds: restorePlan ? Math.max(0, (startedAt.getTime() - new Date(restorePlan.backupStartedAt).getTime()) / 1000) : null,
      // The "before" values are the backup manifest's; the report activity fills them in.
      schema_version_before: null,
      schema_version_after: checked?.schemaVersionAfter ?? null,
      row_counts_before: null,
      row_counts_after: checked?.rowCountsAfter ?? null,
      canary_found: checked?.canaryFound ?? null,
      checks: [...checks, ...skipped],
      steps: status.finished.map((s) => ({ step: s.step, started_at: s.startedAt, finished_at: s.finishedAt, duration_ms: s.durationMs, outcome: s.outcome, ...(s.error ? { error: s.error } : {}) })),
      teardown: end.teardown,
      error,
      requested_by: input.requestedBy ?? null,
    };
  }
}

function drillFailure(step: DrillStepName, failed: DrillCheck[]): ApplicationFailure {
  const what = failed.map((c) => `${c.name} (expected ${JSON.stringify(c.expected)}, got ${JSON.stringify(c.actual)})`).join('; ');
  return ApplicationFailure.create({ type: 'DrillCheckFailed', nonRetryable: true, message: `${failed.length} check(s) failed at ${step}: ${what}` });
}
