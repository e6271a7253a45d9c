import { ApplicationFailure, CancellationScope, isCancellation, log, ParentClosePolicy, proxyActivities, startChild, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { BaseManifestDraft, BasebackupActivities, BasebackupPlan, BaseVerification, ServerFacts, TakenBasebackup } from '../activities/basebackup.js';
import { baseBackupId } from '../pitr/layout.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { BasebackupInput } from './basebackup-input.js';
import { pruneBaseBackups } from './prune-base-backups.js';
import { notifySafely } from './notify.js';
import { messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type BasebackupStep = 'resolve' | 'probe' | 'basebackup' | 'verify' | 'manifest' | 'prune' | 'notify';

export interface BasebackupResult {
  backupId: string;
  cluster: string;
  repository: string;
  status: 'verified';
  startLsn: string;
  stopLsn: string;
  timeline: number;
  walRange: { start: string; stop: string };
  size: number;
  tarSize: number;
  sha256: string;
  durationSeconds: number;
  verification: BaseVerification;
  manifestKey: string;
  /** The pruneBaseBackups workflow started after this backup (retention configured). */
  prune: string | null;
}

// Resolving reads the worker's config and the repository's recipients: quick.
const { planBasebackup } = proxyActivities<BasebackupActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 3 } });

/**
 * A physical base backup of a cluster for point-in-time recovery: pg_basebackup (tar, WAL
 * included) streamed into the repository, read back, extracted and checked with stock
 * pg_verifybackup, then the manifest, written last. A backup that fails verification gets a
 * manifest saying `failed` (never chosen for a recovery) and fails the workflow.
 */
export async function basebackupCluster(rawInput: BasebackupInput): Promise<BasebackupResult> {
  const parsed = BasebackupInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid basebackupCluster input: ${describeIssues(parsed.error)}\nHINT: e.g. {"cluster":"main"}`, 'InvalidInput');
  }
  const input = parsed.data;
  const info = workflowInfo();
  const startedAt = info.startTime;
  const id = baseBackupId(input.cluster, startedAt);
  const runbook = new Runbook<BasebackupStep>('basebackup');
  const { status } = runbook;
  status.details = { cluster: input.cluster, backupId: id, requestedBy: input.requestedBy ?? null };
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.cluster },
    { key: OPERATION_ATTRIBUTE, value: 'basebackup' },
  ]);

  let plan: BasebackupPlan | undefined;
  try {
    // 1. Resolve: repository, compression, encryption recipients, timeouts from the worker's config.
    plan = await runbook.step('resolve', () => planBasebackup({ cluster: input.cluster }));
    Object.assign(status.details, { repository: plan.repository, compression: plan.compression, encrypted: plan.encryption !== null });
    const { short, long } = activityProfiles<BasebackupActivities>(plan);
    const planned = plan;
    // 2. Probe: version, system identifier, segment size; no extra tablespaces; a REPLICATION role.
    const server: ServerFacts = await runbook.step('probe', () => short.probeBasebackupServer({ cluster: input.cluster }));
    status.details.serverVersion = server.serverVersion;
    // 3. pg_basebackup streamed into the repository; nothing is visible until it completed.
    const taken: TakenBasebackup = await runbook.step('basebackup', () => long.takeBasebackup({ backupId: id, plan: planned, serverMajor: server.serverMajor, segmentSize: server.segmentSize }));
    Object.assign(status.details, { startLsn: taken.startLsn, stopLsn: taken.stopLsn, timeline: taken.timeline, size: taken.size });
    const draft = (verification: BaseVerification): BaseManifestDraft & { repository: string } => {
      const finishedAt = new Date();
      return {
        repository: planned.repository,
        id,
        cluster: input.cluster,
        status: verification.ok ? 'verified' : 'failed',
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        startLsn: taken.startLsn,
        stopLsn: taken.stopLsn,
        timeline: taken.timeline,
        walRange: taken.walRange,
        serverVersion: server.serverVersion,
        serverVersionNum: server.serverVersionNum,
        systemIdentifier: server.systemIdentifier,
        segmentSize: server.segmentSize,
        files: { [taken.file]: { size: taken.size, sha256: taken.sha256 } },
        tarSize: taken.tarSize,
        compression: planned.compression,
        ...(planned.encryption ? { encryption: planned.encryption } : {}),
        verification,
        error: verification.ok ? null : `verification failed: ${verification.detail ?? 'no detail'}`,
        workflowId: info.workflowId,
      };
    };
    // 4. Verify what is stored: sha256, decrypt, decompress, extract, stock pg_verifybackup.
    const verification = await runbook.step('verify', () =>
      long.verifyBasebackup({ draft: { id, cluster: input.cluster, files: { [taken.file]: { size: taken.size, sha256: taken.sha256 } }, compression: planned.compression, ...(planned.encryption ? { encryption: planned.encryption } : {}) }, repository: planned.repository, serverMajor: server.serverMajor }),
    );
    status.details.verification = verification.ok ? verification.tool : `FAILED (${verification.tool})`;
    if (!verification.ok) {
      // Recorded where the next reader looks: the manifest says failed, so no recovery picks it.
      await runbook.step('manifest', () => short.writeBaseManifest(draft(verification)));
      throw ApplicationFailure.nonRetryable(`base backup ${id} failed verification: ${verification.detail ?? 'unknown reason'}\nHINT: it is recorded as failed and never used for a recovery; take a new one with \`pgrunbook basebackup\``, 'VerificationFailed');
    }
    // 5. Manifest, written last: from now on this base backup is "verified".
    const { key } = await runbook.step('manifest', () => short.writeBaseManifest(draft(verification)));
    // 6. Retention as an abandoned child: this result never waits for it, and a prune that fails
    //    never fails a good backup (it shows up as its own workflow; the next one catches up).
    let prune: string | null = null;
    if (planned.retention) {
      try {
        await runbook.step('prune', () =>
          startChild(pruneBaseBackups, {
            args: [{ cluster: input.cluster, requestedBy: `basebackup ${info.workflowId}` }],
            workflowId: `${info.workflowId}-prune`,
            parentClosePolicy: ParentClosePolicy.ABANDON,
          }),
        );
        prune = `${info.workflowId}-prune`;
        status.details.prune = prune;
      } catch (error) {
        log.warn('could not start the prune after this base backup; the next one catches up', { backupId: id, error: messageOf(error) });
      }
    } else {
      runbook.skip('prune', `retention is not configured (clusters.${input.cluster}.retention)`);
    }
    runbook.finish('completed');
    return {
      backupId: id,
      cluster: input.cluster,
      repository: planned.repository,
      status: 'verified',
      startLsn: taken.startLsn,
      stopLsn: taken.stopLsn,
      timeline: taken.timeline,
      walRange: taken.walRange,
      size: taken.size,
      tarSize: taken.tarSize,
      sha256: taken.sha256,
      durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
      verification,
      manifestKey: key,
      prune,
    };
  } catch (error) {
    if (!isCancellation(error)) {
      // A weekly base backup that fails silently leaves point-in-time recovery without a starting point: say so.
      const step = status.finished.at(-1)?.step ?? 'resolve';
      status.details.notified = await CancellationScope.nonCancellable(() =>
        runbook.step('notify', () => notifySafely({ kind: 'backup-failed', database: input.cluster, workflowId: info.workflowId, backupId: id, step, error: messageOf(error) })),
      );
    }
    runbook.finish(isCancellation(error) ? 'cancelled' : 'failed');
    throw error;
  }
}
