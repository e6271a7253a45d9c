import { ApplicationFailure, CancellationScope, executeChild, isCancellation, log, patched, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { AppSnapshot } from '../app-controllers/types.js';
import type { PreflightResult, RestoreActivities, RestorePlan, RestoreReport, RestoreStepResult } from '../activities/restore.js';
import type { RestoredCheck } from '../postgres/verify-restored.js';
import { restoreStamp } from '../postgres/database-names.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { backupDatabase } from './backup-database.js';
import { RestoreInput, type ParsedRestoreInput } from './restore-input.js';
import { compensationFailed, failureOf, OperatorControl, reportedFailure } from './operator-control.js';
import { progressSignal } from './restore-messages.js';
import { notifySafely } from './notify.js';
import { messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type RestoreStep =
  | 'resolve'
  | 'preflight'
  | 'approval'
  | 'safety-backup'
  | 'restore'
  | 'verify'
  | 'scale-down'
  | 'block-connections'
  | 'swap'
  | 'drop-and-recreate'
  | 'allow-connections'
  | 'scale-up'
  | 'health'
  | 'prune'
  | 'report'
  | 'notify'
  | `undo:${string}`;

export interface RestoreResult {
  database: string;
  backupId: string;
  target: string;
  strategy: 'swap' | 'in-place';
  /** swap: the old database, kept under this name until dropped on purpose. */
  preRestoreDatabase: string | null;
  safetyBackupId: string | null;
  restore: RestoreStepResult;
  verification: RestoredCheck;
  durationSeconds: number;
  /** From scale-down to the application answering ready again; null when no app was touched. */
  downtimeSeconds: number | null;
  reportKey: string | null;
}

// Reading the worker's config: quick, retried a few times at most.
const { planRestore } = proxyActivities<RestoreActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 3 } });

/**
 * The restore runbook (seeds 000 "Restore", 001 §4A, 002 §5, 004 "Restore Procedures") as one
 * durable workflow. Every step that changes the world registers its undo first; on failure,
 * cancellation or an operator's abort the undos run newest-first and cannot be cancelled.
 * A step that still fails after its retries waits for an operator: retry, skip or abort.
 *
 * swap (default): restore and verify into `<db>__restore_<ts>` while the application runs, then
 * scale down, drain, rename (one transaction), scale up: downtime does not grow with the data.
 * in-place: scale down, drain, drop and recreate, restore, verify, scale up (the seeds' way),
 * only ever after a verified safety backup.
 */
export async function restoreDatabase(rawInput: RestoreInput): Promise<RestoreResult> {
  const parsed = RestoreInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid restoreDatabase input: ${describeIssues(parsed.error)}\nHINT: e.g. {"database":"app","backup":"latest"}`, 'InvalidInput');
  }
  const input: ParsedRestoreInput = parsed.data;
  const info = workflowInfo();
  const startedAt = info.startTime;
  const runbook = new Runbook<RestoreStep>('restore');
  const { status } = runbook;
  status.details = { database: input.database, backup: input.backup };
  status.progress = null;
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.database },
    { key: OPERATION_ATTRIBUTE, value: 'restore' },
  ]);
  setHandler(progressSignal, (progress) => {
    status.progress = progress;
  });

  // Operator decisions (approve/reject, resolveStep) and the undo stack (saga).
  const control = new OperatorControl<RestoreStep>(runbook, { database: input.database, noun: 'restore', skipRefusals: SKIP_REFUSAL });
  const registerUndo = (name: string, run: () => Promise<unknown>): void => control.registerUndo(name, run);

  let preflight: PreflightResult | undefined;
  let restored: RestoreStepResult | undefined;
  let verification: RestoredCheck | undefined;
  let safetyBackupId: string | null = null;
  let preRestoreDatabase: string | null = null;
  let appDownAt: number | null = null;
  let appUpAt: number | null = null;

  // 1. Resolve: the backup (an id or the latest verified one) and every setting, from the worker's config.
  const p: RestorePlan = await runbook.step('resolve', () => planRestore({ request: input, stamp: restoreStamp(startedAt) }));
  Object.assign(status.details, {
    backupId: p.backupId, repository: p.repository, target: p.target, strategy: p.strategy,
    scratch: p.strategy === 'swap' ? p.scratch : null, app: p.app.description, approvalRequired: p.approval.required,
  });

  const { short, long } = activityProfiles<RestoreActivities>(p);

  // A step that still fails after its retries waits for an operator (unless configured to abort at once).
  const step = <T>(name: RestoreStep, run: () => Promise<T>, skippable = false): Promise<T | undefined> => control.step(name, run, p, skippable);
  const required = async <T>(name: RestoreStep, run: () => Promise<T>): Promise<T> => (await step(name, run))!;

  // Scale the application down, remembering how it ran; its undo brings it back to exactly that.
  let appSnapshot: AppSnapshot | undefined;
  async function stopApplication(): Promise<void> {
    if (!p.targetIsLive) return;
    appDownAt = Date.now();
    await required('scale-down', async () => {
      if (!appSnapshot) {
        const snapshot = await short.captureApp({ database: p.database });
        appSnapshot = snapshot;
        registerUndo('scale-up', () => long.startApp({ database: p.database, snapshot }));
      }
      await long.stopApp({ database: p.database, snapshot: appSnapshot });
    });
  }
  // Block new sessions and drain existing ones; its undo re-allows them.
  async function blockConnections(): Promise<void> {
    if (!preflight!.target) return;
    registerUndo('allow-connections', () => short.allowConnections({ database: p.database, names: [p.target] }));
    await required('block-connections', () => long.blockConnections({ database: p.database, name: p.target, timeoutSeconds: p.drainTimeoutSeconds }));
  }
  async function startApplication(): Promise<void> {
    if (!p.targetIsLive || !appSnapshot) return;
    const snapshot = appSnapshot;
    await required('scale-up', () => long.startApp({ database: p.database, snapshot }));
    if (p.app.health) await step('health', () => long.waitForAppHealth({ database: p.database }), true);
    appUpAt = Date.now();
  }

  let outcome = 'completed' as RestoreReport['outcome'];
  let failureInfo: RestoreReport['error'] = null;
  let undoFailures: string[] = [];
  let reportKey: string | null = null;
  try {
    // 2. Preflight: verify the artifact, reach the server, pg_restore compatibility, free space.
    //    Nothing destructive happens before it passes; a failure here ends the restore untouched.
    preflight = await runbook.step('preflight', () => long.preflightRestore({ plan: p }));
    if (preflight.warnings.length > 0) status.details.warnings = preflight.warnings.join('; ');
    const like = preflight.target;

    // 3. Approval gate: a restore over an existing database waits for a person.
    if (p.approval.required && preflight.target) {
      await runbook.step('approval', async () => {
        const decision = await control.approval('approval', p.approval.timeoutSeconds);
        if (!decision) throw ApplicationFailure.create({ type: 'ApprovalTimedOut', nonRetryable: true, message: `nobody approved the restore of ${p.target} within ${p.approval.timeoutSeconds} s; nothing was changed` });
        if (decision.decision === 'rejected') {
          outcome = 'rejected';
          throw ApplicationFailure.create({ type: 'RestoreRejected', nonRetryable: true, message: `restore rejected by ${decision.by}: ${decision.reason ?? ''}; nothing was changed` });
        }
      });
    }

    // 4. Safety backup of the current data, as a child backupDatabase labelled pre-restore.
    if (p.safetyBackup && preflight.target) {
      let attempt = 0;
      const child = await step(
        'safety-backup',
        () => executeChild(backupDatabase, { args: [{ database: p.database, label: 'pre-restore', repository: p.repository }], workflowId: `${info.workflowId}-safety-backup-${++attempt}` }),
        p.strategy === 'swap',
      );
      safetyBackupId = child?.backupId ?? null;
      status.details.safetyBackupId = safetyBackupId;
    }

    if (p.strategy === 'swap') {
      // 7a. Restore and verify beside the live database, while the application still runs.
      registerUndo('drop-scratch', () => short.dropScratchDatabase({ plan: p }));
      restored = await required('restore', () => long.restoreIntoScratch({ plan: p, like }));
      verification = (await step('verify', () => long.verifyRestoredDatabase({ plan: p, database: p.scratch }), true)) ?? undefined;
      // 5-6. Only now: the application down, sessions drained.
      await stopApplication();
      await blockConnections();
      // 7b. One short transaction: live -> <db>__pre_restore_<ts>, scratch -> live. Undo: rename back.
      registerUndo('swap-back', () => long.unswapDatabases({ plan: p, timeoutSeconds: p.drainTimeoutSeconds }));
      const swap = await required('swap', () => long.swapDatabases({ plan: p, timeoutSeconds: p.drainTimeoutSeconds }));
      preRestoreDatabase = swap.preRestore;
      status.details.preRestoreDatabase = preRestoreDatabase;
      // 9. Sessions allowed again on both: the old one stays readable for writes made meanwhile.
      await required('allow-connections', () => short.allowConnections({ database: p.database, names: [p.target, ...(preRestoreDatabase ? [preRestoreDatabase] : [])] }));
    } else {
      // 5-6. in-place: the application down and sessions drained before anything is dropped.
      await stopApplication();
      await blockConnections();
      // 7. Drop and recreate (seeds 000, 001, 004). Undo, registered first: the safety backup back.
      if (preflight.target) {
        const safety = safetyBackupId!;
        registerUndo('restore-safety-backup', () => long.restoreSafetyBackup({ plan: p, like, safetyBackupId: safety }));
      }
      await required('drop-and-recreate', () => short.dropAndRecreateTarget({ plan: p, like, safetyBackupId }));
      restored = await required('restore', () => long.restoreIntoTarget({ plan: p, like }));
      verification = (await step('verify', () => long.verifyRestoredDatabase({ plan: p, database: p.target }), true)) ?? undefined;
      await required('allow-connections', () => short.allowConnections({ database: p.database, names: [p.target] }));
    }
    // 9. The application back to its previous size, and ready.
    await startApplication();

    if (p.keepPreRestoreDays !== null && p.targetIsLive) {
      const keepDays = p.keepPreRestoreDays;
      const pruned = await step('prune', () => short.prunePreRestoreDatabases({ database: p.database, olderThanDays: keepDays, keep: preRestoreDatabase ? [preRestoreDatabase] : [] }), true);
      if (pruned?.dropped.length) status.details.pruned = pruned.dropped.join(', ');
    }
    // Done: nothing to undo any more.
    control.forgetUndos();
  } catch (error) {
    if (outcome !== 'rejected') outcome = isCancellation(error) ? 'cancelled' : 'failed';
    failureInfo = failureOf(status, error);
    undoFailures = await control.compensate();
    await CancellationScope.nonCancellable(() => writeReport());
    runbook.finish(outcome === 'cancelled' ? 'cancelled' : 'failed');
    if (undoFailures.length > 0) throw compensationFailed(error, undoFailures);
    throw error;
  }

  // 10. Report: every step's timing and outcome, kept in the repository.
  await writeReport();
  runbook.finish('completed');
  return {
    database: p.database,
    backupId: p.backupId,
    target: p.target,
    strategy: p.strategy,
    preRestoreDatabase,
    safetyBackupId,
    restore: restored!,
    verification: verification ?? skippedVerification(p),
    durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
    downtimeSeconds: downtimeSeconds(),
    reportKey,
  };

  function downtimeSeconds(): number | null {
    return appDownAt !== null && appUpAt !== null ? (appUpAt - appDownAt) / 1000 : null;
  }

  async function writeReport(): Promise<void> {
    const finishedAt = new Date();
    const report: RestoreReport = {
      workflowId: info.workflowId,
      runId: info.runId,
      database: p.database,
      backupId: p.backupId,
      repository: p.repository,
      target: p.target,
      strategy: p.strategy,
      outcome,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
      downtimeSeconds: downtimeSeconds(),
      steps: status.finished,
      decisions: status.decisions ?? [],
      undo: status.undo ?? [],
      verification: verification ?? null,
      preRestoreDatabase,
      safetyBackupId,
      error: reportedFailure(failureInfo, undoFailures),
      requestedBy: input.requestedBy ?? null,
    };
    try {
      const written = await runbook.step('report', () => short.writeRestoreReport({ repository: p.repository, report }));
      reportKey = written.key;
      status.details.report = written.location;
    } catch (error) {
      // The restore's outcome stands either way; a lost report is logged, not a reason to undo.
      log.error('could not write the restore report', { error: messageOf(error) });
    }
    if (patched('notify-restore-finished')) {
      status.details.notified = await runbook.step('notify', () => notifySafely({
        kind: 'restore-finished', database: p.database, workflowId: info.workflowId, outcome, backupId: p.backupId, target: p.target,
        durationSeconds: report.durationSeconds, downtimeSeconds: report.downtimeSeconds, error: report.error?.message ?? null,
      }));
    }
  }
}

const SKIP_REFUSAL: Record<string, string> = {
  restore: 'nothing would have been restored',
  swap: 'the restored copy would never take the live name',
  'drop-and-recreate': 'the restore needs an empty database',
  'scale-down': 'restoring under a running application loses its writes',
  'block-connections': 'the rename fails while sessions remain',
  'allow-connections': 'the application could not connect',
  'scale-up': 'the application would stay down',
  'safety-backup': 'an in-place restore drops the live database; without a safety backup nothing could undo it',
};

/** Verification skipped by an operator: recorded as such, never as a pass. */
function skippedVerification(plan: RestorePlan): RestoredCheck {
  return {
    ok: false,
    database: plan.target,
    tablesChecked: null,
    rowCountMismatches: [],
    rowCounts: null,
    queryTimings: [],
    schemaVersion: { expected: null, actual: null, ok: false },
    smokeQueries: [],
    analyzed: false,
    problems: ['verification was skipped by an operator'],
  };
}
