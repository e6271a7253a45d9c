import { ApplicationFailure, isCancellation, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { BasebackupActivities } from '../activities/basebackup.js';
import type { RetentionDecision } from '../repository/retention.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { PruneBaseBackupsInput } from './basebackup-input.js';
import { keepSkipped, prunedForReport, whyNothingIsDeleted } from './prune-decisions.js';
import { Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type BasePruneStep = 'plan' | 'retire' | 'delete' | 'report';

export interface BasePruneResult {
  cluster: string;
  repository: string;
  location: string;
  dryRun: boolean;
  /** clusters.<id>.retention is set; without it nothing is deleted. */
  configured: boolean;
  /** Every base backup folder, newest first: keep or delete, and the rule(s) that decided it. */
  decisions: RetentionDecision[];
  deleted: string[];
  skipped: { backupId: string; reason: string }[];
  /** WAL numbered below this segment goes: the oldest kept base backup's start segment. */
  walCutoff: { segment: string; backupId: string } | null;
  /** Archived WAL files that go (a dry run: would go). */
  walToDelete: number;
  walDeleted: number;
  walKept: number;
  reportKey: string | null;
}

// Planning lists the repository and asks running workflows what they use: minutes at most.
const { planBasePrune } = proxyActivities<BasebackupActivities>({ startToCloseTimeout: '10 minutes', retry: { maximumAttempts: 3 } });

/**
 * Retention of base backups and their WAL: plan (which base backups go, by which rule, and the
 * WAL before the oldest kept one), retire (manifests first, so a half-deleted base backup is
 * incomplete, never verified), delete (the rest of each folder, then the WAL), report. Runs
 * after each base backup and on demand; every step is idempotent.
 */
export async function pruneBaseBackups(rawInput: PruneBaseBackupsInput): Promise<BasePruneResult> {
  const parsed = PruneBaseBackupsInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid pruneBaseBackups input: ${describeIssues(parsed.error)}\nHINT: e.g. {"cluster":"main","dryRun":true}`, 'InvalidInput');
  }
  const input = parsed.data;
  const info = workflowInfo();
  const runbook = new Runbook<BasePruneStep>('basebackup-prune');
  const { status } = runbook;
  status.details = { cluster: input.cluster, dryRun: input.dryRun };
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.cluster },
    { key: OPERATION_ATTRIBUTE, value: 'basebackup-prune' },
  ]);

  try {
    // 1. Plan: every base backup folder, the policy's decision, the WAL cutoff. Changes nothing.
    const plan = await runbook.step('plan', () => planBasePrune({ cluster: input.cluster }));
    const doomed = plan.decisions.filter((d) => d.action === 'delete');
    Object.assign(status.details, { repository: plan.repository, backups: plan.decisions.length, toDelete: doomed.length, walToDelete: plan.walToDelete.length });
    const result: BasePruneResult = {
      cluster: input.cluster,
      repository: plan.repository,
      location: plan.location,
      dryRun: input.dryRun,
      configured: plan.configured,
      decisions: plan.decisions,
      deleted: [],
      skipped: [],
      walCutoff: plan.walCutoff,
      walToDelete: plan.walToDelete.length,
      walDeleted: 0,
      walKept: plan.walKept,
      reportKey: null,
    };
    const { short, long } = activityProfiles<BasebackupActivities>(plan);
    const writes = !input.dryRun && plan.configured;
    if (!writes || (doomed.length === 0 && plan.walToDelete.length === 0)) {
      const why = whyNothingIsDeleted(input.dryRun, plan.configured);
      runbook.skip('retire', why);
      runbook.skip('delete', why);
      if (!writes) runbook.skip('report', why);
    } else {
      // 2. Retire: manifests first; what a restore started using since the plan stays.
      const retired = await runbook.step('retire', () => short.retireBaseBackups({ cluster: input.cluster, repository: plan.repository, backupIds: doomed.map((d) => d.id) }));
      result.skipped = retired.skipped;
      result.decisions = keepSkipped(plan.decisions, retired.skipped);
      // A skipped backup may be older than the planned cutoff: then its WAL must stay, so WAL is
      // left for the next prune this time.
      const walCutoff = retired.skipped.length === 0 ? (plan.walCutoff?.segment ?? null) : null;
      // 3. The rest of each retired folder, then the WAL before the oldest kept base backup.
      const removed = await runbook.step('delete', () => long.removeBaseBackupFiles({ cluster: input.cluster, repository: plan.repository, backupIds: retired.retired, walCutoff }));
      result.deleted = retired.retired;
      result.walDeleted = removed.walDeleted;
      Object.assign(status.details, { deleted: result.deleted.length, walDeleted: removed.walDeleted });
    }
    if (writes) {
      // 4. Report: pitr/<cluster>/reports/last-prune.json.
      const written = await runbook.step('report', () =>
        short.writeBasePruneReport({
          report: {
            report_version: 1,
            kind: 'basebackup-prune',
            workflow_id: info.workflowId,
            cluster: input.cluster,
            repository: plan.repository,
            planned_at: plan.plannedAt,
            requested_by: input.requestedBy ?? null,
            ...prunedForReport(plan.decisions, result.deleted, result.skipped),
            wal: { cutoff: plan.walCutoff?.segment ?? null, cutoff_backup: plan.walCutoff?.backupId ?? null, deleted: result.walDeleted },
          },
        }),
      );
      result.reportKey = written.key;
      status.details.report = written.location;
    }
    runbook.finish('completed');
    return result;
  } catch (error) {
    runbook.finish(isCancellation(error) ? 'cancelled' : 'failed');
    throw error;
  }
}
