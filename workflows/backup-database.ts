import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { BackupActivities, BackupPlan, DumpResult, MetadataResult, ProbeResult } from '../activities/backup.js';
import type { Verification } from '../repository/manifest.js';
import { backupId as makeBackupId } from '../repository/layout.js';
import { activityProfiles } from './activity-profiles.js';
import { BackupInput, describeIssues } from './backup-input.js';
import { notifySafely } from './notify.js';
import { pruneBackups } from './prune-backups.js';
import { failureTypeOf, messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, LABEL_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type BackupStep = 'plan' | 'probe' | 'dump' | 'metadata' | 'verify' | 'manifest' | 'notify';

export interface BackupResult {
  backupId: string;
  database: string;
  repository: string;
  status: 'verified';
  format: string;
  size: number;
  sha256: string;
  databaseSizeBytes: number;
  durationSeconds: number;
  verification: Verification;
  manifestKey: string;
}

// Planning only reads the worker's config: quick, and retried a few times at most.
const { planBackup } = proxyActivities<BackupActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 3 },
});

/**
 * The nightly backup runbook (seeds 000-004): probe, pg_dump streamed into the repository,
 * metadata snapshot, verification, manifest. Only a verified backup is ever "good"; a failed one
 * still gets a manifest saying so, so nobody mistakes it for a restorable one.
 */
export async function backupDatabase(rawInput: BackupInput): Promise<BackupResult> {
  const parsed = BackupInput.safeParse(rawInput);
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid backupDatabase input: ${describeIssues(parsed.error)}\nHINT: e.g. {"database":"app","label":"pre-upgrade"}`, 'InvalidInput');
  }
  const input = parsed.data;
  const info = workflowInfo();
  const startedAt = info.startTime;
  const id = makeBackupId(input.database, startedAt, input.label);
  const runbook = new Runbook<BackupStep>('backup');
  runbook.status.details = { database: input.database, backupId: id, label: input.label ?? null };
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.database },
    { key: OPERATION_ATTRIBUTE, value: 'backup' },
    ...(input.label ? [{ key: LABEL_ATTRIBUTE, value: input.label }] : []),
  ]);

  const plan: BackupPlan = await runbook.step('plan', () => planBackup({ database: input.database, repository: input.repository }));
  runbook.status.details.repository = plan.repository;
  const { short, long } = activityProfiles<BackupActivities>(plan);

  let probe: ProbeResult | undefined;
  let dump: DumpResult | undefined;
  let metadata: MetadataResult | undefined;
  let verification: Verification | undefined;
  const manifestDraft = (status: 'verified' | 'failed' | 'cancelled', error: { step: string; type: string; message: string } | null) => {
    const finishedAt = new Date();
    return {
      id,
      database: input.database,
      label: input.label ?? null,
      repository: plan.repository,
      status,
      workflowId: info.workflowId,
      runId: info.runId,
      format: plan.format,
      compression: plan.format === 'custom' ? plan.compression : `gzip:${plan.compression.split(':')[1] ?? 6}`,
      dump: dump && probe ? { file: dump.file, size: dump.size, sha256: dump.sha256, databaseSizeBytes: probe.databaseSizeBytes } : null,
      files: {
        ...(metadata?.files ?? {}),
        ...(dump ? { [dump.file]: { size: dump.size, sha256: dump.sha256 } } : {}),
      },
      encryption: plan.encryption ?? null,
      serverVersion: metadata?.serverVersion ?? probe?.serverVersion ?? null,
      pgDumpVersion: probe?.pgDumpVersion ?? null,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
      rowCounts: dump?.rowCounts ?? null,
      schemaVersion: dump?.schemaVersion ?? null,
      verification: verification ?? null,
      error,
    };
  };

  try {
    // 1. Probe: reachable, exists, and a pg_dump on this worker can dump this server version.
    probe = await runbook.step('probe', () => short.probeDatabase({ database: input.database, format: plan.format, compression: plan.compression }));
    runbook.status.details.databaseSizeBytes = probe.databaseSizeBytes;
    // 2. Dump: streamed into the repository; nothing is visible until it completes.
    dump = await runbook.step('dump', () => long.dumpDatabase({ database: input.database, backupId: id, plan, serverMajor: probe!.serverMajor }));
    // 3/4. Metadata beside the dump (seed 003): schema, versions, extensions, view options, counts.
    metadata = await runbook.step('metadata', () =>
      long.snapshotMetadata({ database: input.database, backupId: id, repository: plan.repository, serverMajor: probe!.serverMajor, rowCounts: dump!.rowCounts, schemaVersion: dump!.schemaVersion, encryption: plan.encryption ?? null }),
    );
    // 5. Verify what is stored, not what we think we wrote.
    // A failed verification is kept (it goes into the failure manifest) before the step fails.
    await runbook.step('verify', async () => {
      verification = await long.verifyBackup({ backupId: id, repository: plan.repository, file: dump!.file, format: plan.format, expected: { size: dump!.size, sha256: dump!.sha256 }, encryption: plan.encryption ?? null });
      if (!verification.ok) throw ApplicationFailure.nonRetryable(`backup ${id} failed verification: ${verification.error ?? 'unknown reason'}`, 'VerificationFailed');
    });
  } catch (error) {
    // Record the failure where the next reader looks (the manifest), even when cancelled.
    const status = isCancellation(error) ? 'cancelled' : 'failed';
    const step = runbook.status.finished.at(-1)?.step ?? 'unknown';
    const type = failureTypeOf(error) ?? 'Error';
    try {
      await CancellationScope.nonCancellable(() => runbook.step('manifest', () => short.writeManifest(manifestDraft(status, { step, type, message: messageOf(error) }))));
    } catch (manifestError) {
      // Loud, but the original failure is what the operator must see.
      log.error('could not record the failed backup in its manifest', { backupId: id, error: messageOf(manifestError) });
    }
    if (status === 'failed' && patched('notify-backup-failure')) {
      const message = messageOf(error);
      runbook.status.details.notified = await CancellationScope.nonCancellable(() => runbook.step('notify', () => notifySafely({ kind: 'backup-failed', database: input.database, workflowId: info.workflowId, backupId: id, step, error: message })));
    }
    runbook.finish(status);
    throw error;
  }

  // 6. Manifest, written last: from now on this backup is "good". Once verified, a cancellation
  //    arriving now must not leave the backup without its manifest (it would stay "incomplete").
  const writeVerifiedManifest = () => runbook.step('manifest', () => short.writeManifest(manifestDraft('verified', null)));
  const { key } = patched('verified-manifest-not-cancellable') ? await CancellationScope.nonCancellable(writeVerifiedManifest) : await writeVerifiedManifest();
  // 7. Retention: a prune of this database as an abandoned child, so this result never waits
  //    for it and its failure never fails a good backup (it shows up as its own workflow).
  if (patched('prune-after-backup') && plan.retention) {
    try {
      await startChild(pruneBackups, {
        args: [{ database: input.database, repository: plan.repository, requestedBy: `backup ${info.workflowId}` }],
        workflowId: `${info.workflowId}-prune`,
        parentClosePolicy: ParentClosePolicy.ABANDON,
      });
      runbook.status.details.prune = `${info.workflowId}-prune`;
    } catch (error) {
      log.warn('could not start the prune after this backup; the prune schedule will catch up', { backupId: id, error: messageOf(error) });
    }
  }
  runbook.finish('completed');
  return {
    backupId: id,
    database: input.database,
    repository: plan.repository,
    status: 'verified',
    format: plan.format,
    size: dump.size,
    sha256: dump.sha256,
    databaseSizeBytes: probe.databaseSizeBytes,
    durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
    verification: verification!,
    manifestKey: key,
  };
}
