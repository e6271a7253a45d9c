import { ActivityCancellationType, ApplicationFailure, CancellationScope, isCancellation, log, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { AppSnapshot } from '../app-controllers/types.js';
import type { PitrActivities, PitrPlan, PitrReport, PitrVerification, RecoveredServer, RecoveryResult } from '../activities/pitr.js';
import type { RestoreActivities } from '../activities/restore.js';
import type { RecoveryState } from '../postgres/recovery.js';
import { restoreStamp } from '../postgres/database-names.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { compensationFailed, failureOf, OperatorControl, reportedFailure } from './operator-control.js';
import { describeTarget, PitrInput, recoveryProgressSignal, type ParsedPitrInput, type RecoveryProgress } from './pitr-input.js';
import { notifySafely } from './notify.js';
import { messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type PitrStep =
  | 'resolve'
  | 'approval'
  | 'provision'
  | 'scale-down'
  | 'stop-server'
  | 'move-aside'
  | 'extract'
  | 'configure'
  | 'start'
  | 'recover'
  | 'verify'
  | 'decide'
  | 'promote'
  | 'discard'
  | 'scale-up'
  | 'health'
  | 'report'
  | 'notify'
  | `undo:${string}`;

export interface PitrResult {
  cluster: string;
  mode: 'new' | 'replace';
  outcome: 'promoted' | 'discarded' | 'replaced';
  target: string;
  baseBackupId: string;
  /** The recovered data directory (mode new: removed again when discarded). */
  dataDir: string;
  port: number | null;
  socketDir: string | null;
  /** mode new, promoted: how to connect to the recovered cluster. */
  connect: string | null;
  /** Where recovery stopped. */
  recovered: RecoveryResult;
  /** After promotion: the writable server's position and timeline. */
  promoted: RecoveryState | null;
  verification: PitrVerification | null;
  /** replace: the old data directory, kept for the operator to delete. */
  movedAside: string | null;
  durationSeconds: number;
  reportKey: string | null;
}

// Reading the worker's config and the repository's catalog: quick, retried a few times at most.
const { planPitr, writePitrReport } = proxyActivities<PitrActivities>({ startToCloseTimeout: '5 minutes', retry: { maximumAttempts: 3 } });

/**
 * Point-in-time recovery (seed 001 §4B and its disaster scenario 1: "DELETE FROM organizations at
 * 14:31, we need 14:30") as one durable workflow.
 *
 * new (default, CloudNativePG's way): the newest verified base backup before the target is
 * extracted into a new data directory, started on its own port and private socket with
 * restore_command = `pgrunbook wal-fetch`, and replays the archived WAL up to the target, where it
 * pauses. After verification an operator promotes it (it becomes writable) or discards it.
 *
 * replace: the cluster itself goes back in time, behind the restore's approval gate and with the
 * application scaled down: the server is stopped, its data directory moved aside (never deleted),
 * the base backup extracted in its place, recovered to the target and promoted. Every step that
 * changes the world registers its undo first; on failure, abort or cancellation the undos run
 * newest-first and the old cluster runs again as before.
 */
export async function pointInTimeRestore(rawInput: PitrInput): Promise<PitrResult> {
  const parsed = PitrInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid pointInTimeRestore input: ${describeIssues(parsed.error)}\nHINT: e.g. {"cluster":"main","target":{"time":"2026-03-14T14:30:00Z"}}`, 'InvalidInput');
  }
  const input: ParsedPitrInput = parsed.data;
  const info = workflowInfo();
  const startedAt = info.startTime;
  const runbook = new Runbook<PitrStep>('pitr');
  const { status } = runbook;
  status.details = { cluster: input.cluster, target: describeTarget(input.target), mode: input.mode };
  status.progress = null;
  // Cluster operations (basebackup, basebackup-prune, pitr) carry the cluster id as their "database".
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.cluster },
    { key: OPERATION_ATTRIBUTE, value: 'pitr' },
  ]);

  let p: PitrPlan | undefined;
  setHandler(recoveryProgressSignal, (progress: RecoveryProgress) => {
    status.details.recovery = describeRecovery(progress);
    status.details.replayedLsn = progress.replayedLsn;
    if (progress.lastTransactionAt) status.details.lastReplayedTransaction = progress.lastTransactionAt;
  });

  // Operator decisions (approve/reject = promote/discard, resolveStep) and the undo stack (saga).
  const control = new OperatorControl<PitrStep>(runbook, { database: input.cluster, noun: 'point-in-time restore', skipRefusals: SKIP_REFUSAL });
  const registerUndo = (name: string, run: () => Promise<unknown>): void => control.registerUndo(name, run);

  let server: RecoveredServer | undefined;
  let recovered: RecoveryResult | undefined;
  let promoted: RecoveryState | null = null;
  let verification: PitrVerification | null = null;
  let outcome = 'failed' as PitrReport['outcome'];
  let failureInfo: PitrReport['error'] = null;
  let undoFailures: string[] = [];
  let reportKey: string | null = null;
  let movedAside: string | null = null;

  try {
    // 1. Resolve: the base backup, the archived WAL from it to the target (no gap), every setting.
    //    A target that cannot be reached is refused here, before anything is created.
    const plan = await runbook.step('resolve', () => planPitr({ request: input, stamp: restoreStamp(startedAt) }));
    p = plan;
    server = plan.server;
    Object.assign(status.details, {
      target: plan.target.description,
      baseBackupId: plan.baseBackup.id,
      repository: plan.repository,
      walSegments: plan.wal.segmentsNeeded,
      dataDir: plan.server.dataDir,
      app: plan.app.description,
      approvalRequired: plan.approval.required,
    });

    const { short, long } = activityProfiles<PitrActivities>(plan);
    const app = activityProfiles<RestoreActivities>(plan);
    // Replay may take hours: its own timeout (the plan's recoveryTimeoutMinutes, which the activity enforces itself), heartbeats as usual.
    const { waitForRecovery } = proxyActivities<PitrActivities>({
      startToCloseTimeout: (plan.recoveryTimeoutSeconds + 600) * 1000,
      heartbeatTimeout: plan.heartbeatSeconds * 1000,
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: { maximumAttempts: plan.retry.maximumAttempts, initialInterval: plan.retry.initialIntervalSeconds * 1000, maximumInterval: plan.retry.maximumIntervalSeconds * 1000, backoffCoefficient: 2 },
    });

    // A step that still fails after its retries waits for an operator (unless configured to abort at once).
    const step = <T>(name: PitrStep, run: () => Promise<T>, skippable = false): Promise<T | undefined> => control.step(name, run, plan, skippable);
    const required = async <T>(name: PitrStep, run: () => Promise<T>): Promise<T> => (await step(name, run))!;

    let appSnapshot: AppSnapshot | undefined;
    if (plan.mode === 'new') {
      // 2. Provision: a new directory and port beside the cluster. Undo (and "discard"): stop it, remove it.
      registerUndo('remove-recovered-cluster', () => short.removePitrCluster({ plan }));
      server = await required('provision', () => short.provisionPitrCluster({ plan }));
      Object.assign(status.details, { port: server.port, socketDir: server.socketDir });
    } else {
      // 2. Approval gate: replacing the cluster's data waits for a person (unless started with --yes).
      if (plan.approval.required) {
        await runbook.step('approval', async () => {
          const decision = await control.approval('approval', plan.approval.timeoutSeconds, `approval to replace cluster ${plan.cluster}'s data with its state at ${plan.target.description} (pgrunbook approve|reject ${info.workflowId})`);
          if (!decision) throw ApplicationFailure.create({ type: 'ApprovalTimedOut', nonRetryable: true, message: `nobody approved replacing cluster ${plan.cluster} within ${plan.approval.timeoutSeconds} s; nothing was changed` });
          if (decision.decision === 'rejected') {
            outcome = 'rejected';
            throw ApplicationFailure.create({ type: 'RestoreRejected', nonRetryable: true, message: `point-in-time restore rejected by ${decision.by}: ${decision.reason ?? ''}; nothing was changed` });
          }
        });
      }
      // 3. The application down, remembering how it ran; its undo brings it back to exactly that.
      await required('scale-down', async () => {
        if (!appSnapshot) {
          const snapshot = await app.short.captureApp({ database: plan.database });
          appSnapshot = snapshot;
          registerUndo('scale-up', () => app.long.startApp({ database: plan.database, snapshot }));
        }
        await app.long.stopApp({ database: plan.database, snapshot: appSnapshot });
      });
      // 4. The live server stopped (fast). Undo, registered first: start it again.
      registerUndo('start-server', () => long.startLiveServer({ plan }));
      await required('stop-server', () => long.stopLiveServer({ plan }));
      // 5. The live data directory moved aside, never deleted. Undo, registered first: move it back.
      registerUndo('move-back', () => long.moveDataDirectoryBack({ plan }));
      movedAside = (await required('move-aside', () => short.moveDataDirectoryAside({ plan }))).aside;
      status.details.movedAside = movedAside;
    }
    const recoveredServer = server;

    // 6. Extract the base backup (checksummed, decrypted, decompressed) into the data directory.
    status.progress = { step: 'extract', phase: 'download', bytes: 0, totalBytes: plan.baseBackup.storedBytes, at: new Date().toISOString() };
    await required('extract', () => long.extractPitrBase({ plan, server: recoveredServer }));
    // 7. Recovery settings: restore_command through wal-fetch, the target and what happens there.
    await required('configure', () => short.configurePitrRecovery({ plan, server: recoveredServer }));
    // 8. Start the server as the data directory's owner: it begins replaying.
    await required('start', () => long.startPitrServer({ plan, server: recoveredServer }));
    // 9. Wait for replay to reach the target (mode new: paused there; replace, latest: promoted).
    recovered = await required('recover', () => {
      const deadline = new Date(Date.now() + plan.recoveryTimeoutSeconds * 1000).toISOString();
      return waitForRecovery({ plan, server: recoveredServer, deadline });
    });
    status.details.recoveredLsn = recovered.replayedLsn;
    // 10. Verify: row counts of the database's tables and its smoke queries, on the recovered server.
    verification = (await step('verify', () => long.verifyPitrServer({ plan, server: recoveredServer }), true)) ?? null;
    if (verification) {
      status.details.verifiedRows = verification.totalRows;
      status.details.verifiedTables = Object.keys(verification.rowCounts).length;
    }

    if (plan.mode === 'new') {
      // 11. The operator looks at the recovered data and keeps it (promote) or throws it away.
      const connect = `psql -h ${recoveredServer.socketDir} -p ${recoveredServer.port} -U postgres ${plan.databaseName}`;
      status.details.connect = connect;
      const decision = await runbook.step('decide', () =>
        control.approval('decide', plan.promoteTimeoutSeconds, `promote or discard the recovered cluster (pgrunbook pitr promote|discard ${info.workflowId}); look at it first: ${connect}`, ['promote', 'discard']),
      );
      if (decision?.decision === 'approved') {
        // 12a. pg_wal_replay_resume(): recovery ends at the target and the copy becomes writable.
        promoted = await required('promote', () => long.promotePitrServer({ plan, server: recoveredServer }));
        control.forgetUndos();
        outcome = 'promoted';
      } else {
        // 12b. Discarded (or nobody decided in time): stopped and removed, like an undo.
        status.details.discarded = decision ? `by ${decision.by}: ${decision.reason ?? ''}` : `nobody decided within ${plan.promoteTimeoutSeconds} s`;
        await runbook.step('discard', async () => {
          const failures = await control.compensate();
          if (failures.length > 0) throw ApplicationFailure.create({ type: 'CompensationFailed', nonRetryable: true, message: `discarding the recovered cluster failed: ${failures.join('; ')}` });
        });
        outcome = 'discarded';
      }
    } else {
      // 12. The application back to its previous size, and ready. The old data stays aside.
      const snapshot = appSnapshot;
      if (snapshot) await required('scale-up', () => app.long.startApp({ database: plan.database, snapshot }));
      if (plan.app.health) await step('health', () => app.long.waitForAppHealth({ database: plan.database }), true);
      control.forgetUndos();
      outcome = 'replaced';
    }
  } catch (error) {
    if (outcome !== 'rejected') outcome = isCancellation(error) ? 'cancelled' : 'failed';
    failureInfo = failureOf(status, error);
    undoFailures = await control.compensate();
    // Moved back by the undo: nothing is left aside.
    if (status.undo?.some((u) => u.name === 'move-back' && u.state === 'done')) movedAside = null;
    await CancellationScope.nonCancellable(() => finish());
    runbook.finish(outcome === 'cancelled' ? 'cancelled' : 'failed');
    if (undoFailures.length > 0) throw compensationFailed(error, undoFailures);
    throw error;
  }

  // 13. Report: every step's timing and outcome, kept in the repository.
  await finish();
  runbook.finish('completed');
  const plan = p!;
  const kept = outcome !== 'discarded';
  return {
    cluster: plan.cluster,
    mode: plan.mode,
    outcome: outcome as PitrResult['outcome'],
    target: plan.target.description,
    baseBackupId: plan.baseBackup.id,
    dataDir: server!.dataDir,
    port: server!.port,
    socketDir: server!.socketDir,
    connect: plan.mode === 'new' && kept ? `psql -h ${server!.socketDir} -p ${server!.port} -U postgres ${plan.databaseName}` : null,
    recovered: recovered!,
    promoted,
    verification,
    movedAside,
    durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
    reportKey,
  };

  async function finish(): Promise<void> {
    const finishedAt = new Date();
    const report: PitrReport = {
      workflowId: info.workflowId,
      runId: info.runId,
      cluster: input.cluster,
      mode: input.mode,
      target: p?.target.description ?? describeTarget(input.target),
      baseBackupId: p?.baseBackup.id ?? null,
      outcome,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
      steps: status.finished,
      decisions: status.decisions ?? [],
      undo: status.undo ?? [],
      dataDir: server?.dataDir ?? null,
      movedAside,
      recovered: recovered ?? null,
      verification,
      error: reportedFailure(failureInfo, undoFailures),
      requestedBy: input.requestedBy ?? null,
    };
    try {
      const written = await runbook.step('report', () => writePitrReport({ report }));
      reportKey = written.key;
      status.details.report = written.location;
    } catch (error) {
      // The outcome stands either way; a lost report is logged, not a reason to undo.
      log.error('could not write the point-in-time restore report', { error: messageOf(error) });
    }
    status.details.notified = await runbook.step('notify', () =>
      notifySafely({
        kind: 'restore-finished',
        database: p?.database ?? input.cluster,
        workflowId: info.workflowId,
        outcome: outcome === 'promoted' || outcome === 'replaced' ? 'completed' : outcome === 'discarded' ? 'rejected' : outcome,
        backupId: p?.baseBackup.id ?? null,
        target: `${input.mode === 'new' ? 'new data directory' : `cluster ${input.cluster}`} at ${report.target}${outcome === 'discarded' ? ' (discarded)' : ''}`,
        durationSeconds: report.durationSeconds,
        downtimeSeconds: null,
        error: report.error?.message ?? null,
      }),
    );
  }
}

/** "replayed LSN 0/5000060 of target 0/5000100 (paused at the target)". */
export function describeRecovery(progress: RecoveryProgress): string {
  const replayed = progress.replayedLsn ?? 'nothing yet';
  const target = progress.targetLsn ? ` of target ${progress.targetLsn}` : '';
  const last = progress.lastTransactionAt ? `, last replayed transaction ${progress.lastTransactionAt}` : '';
  const state = !progress.inRecovery ? 'out of recovery (writable)' : progress.pauseState === 'paused' ? 'paused at the target' : 'replaying';
  return `replayed LSN ${replayed}${target}${last} (${state})`;
}

const SKIP_REFUSAL: Record<string, string> = {
  provision: 'there would be nowhere to recover into',
  'scale-down': 'replacing the cluster under a running application loses its writes',
  'stop-server': 'the data directory cannot be replaced under a running server',
  'move-aside': 'the live data would be overwritten',
  extract: 'there would be nothing to recover',
  configure: 'the server would not know its target',
  start: 'nothing would recover',
  recover: 'the target would not be reached',
  promote: 'the recovered cluster would stay read-only',
  'scale-up': 'the application would stay down',
};
