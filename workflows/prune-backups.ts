import { ApplicationFailure, isCancellation, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { PruneActivities } from '../activities/prune.js';
import type { RetentionDecision } from '../repository/retention.js';
import { activityProfiles } from './activity-profiles.js';
import { describeIssues } from './backup-input.js';
import { keepSkipped, prunedForReport, whyNothingIsDeleted } from './prune-decisions.js';
import { PruneInput } from './prune-input.js';
import { Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type PruneStep = 'plan' | 'retire' | 'delete' | 'report';

export interface PruneResult {
  database: string;
  repository: string;
  location: string;
  dryRun: boolean;
  /** databases.<id>.retention is set; without it nothing is deleted. */
  configured: boolean;
  /** Every backup folder, newest first: keep or delete, and the rule(s) that decided it. */
  decisions: RetentionDecision[];
  /** Deleted by this run (none on a dry run). */
  deleted: string[];
  /** Planned deletions left alone because a restore, drill or backup started using them meanwhile. */
  skipped: { backupId: string; reason: string }[];
  reportKey: string | null;
}

// Planning lists the repository and asks running workflows what they use: minutes at most.
const { planPrune } = proxyActivities<PruneActivities>({ startToCloseTimeout: '10 minutes', retry: { maximumAttempts: 3 } });

/**
 * Retention (seeds 000, 002, 003, 004): plan which backups go and why, retire them (their
 * manifests first, so none is ever listed as good while half-deleted), delete the rest of their
 * folders, report. Runs after each backup (a child of backupDatabase) and on its own schedule;
 * every step is idempotent, so a run that died is finished by the next one.
 */
export async function pruneBackups(rawInput: PruneInput): Promise<PruneResult> {
  const parsed = PruneInput.safeParse(rawInput ?? {});
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid pruneBackups input: ${describeIssues(parsed.error)}\nHINT: e.g. {"database":"app","dryRun":true}`, 'InvalidInput');
  }
  const input = parsed.data;
  const info = workflowInfo();
  const runbook = new Runbook<PruneStep>('prune');
  const { status } = runbook;
  status.details = { database: input.database, dryRun: input.dryRun };
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: input.database },
    { key: OPERATION_ATTRIBUTE, value: 'prune' },
  ]);

  try {
    // 1. Plan: every backup folder, the policy's decision and rule, and what running restores,
    //    drills and backups use (never deleted). Changes nothing.
    const plan = await runbook.step('plan', () => planPrune({ database: input.database, repository: input.repository }));
    const doomed = plan.decisions.filter((d) => d.action === 'delete');
    Object.assign(status.details, { repository: plan.repository, backups: plan.decisions.length, toDelete: doomed.length });
    const result: PruneResult = {
      database: input.database,
      repository: plan.repository,
      location: plan.location,
      dryRun: input.dryRun,
      configured: plan.configured,
      decisions: plan.decisions,
      deleted: [],
      skipped: [],
      reportKey: null,
    };

    const { short, long } = activityProfiles<PruneActivities>(plan);
    const writes = !input.dryRun && plan.configured;
    if (!writes || doomed.length === 0) {
      const why = whyNothingIsDeleted(input.dryRun, plan.configured);
      runbook.skip('retire', why);
      runbook.skip('delete', why);
      if (!writes) runbook.skip('report', why);
    } else {
      // 2. Retire: delete the manifests first. From here on these backups are incomplete, never
      //    "good"; whatever a restore or drill started using since the plan stays.
      const retired = await runbook.step('retire', () => short.retireBackups({ database: input.database, repository: plan.repository, backupIds: doomed.map((d) => d.id) }));
      result.skipped = retired.skipped;
      result.decisions = keepSkipped(plan.decisions, retired.skipped);
      // 3. Delete the rest of each retired folder; a retry resumes where the last attempt stopped.
      await runbook.step('delete', () => long.removeBackupFiles({ repository: plan.repository, backupIds: retired.retired }));
      result.deleted = retired.retired;
      status.details.deleted = result.deleted.length;
    }
    if (writes) {
      // 4. Report beside the drill reports: what went, which rule decided it, what was kept.
      const written = await runbook.step('report', () =>
        short.writePruneReport({
          report: {
            report_version: 1,
            kind: 'prune',
            workflow_id: info.workflowId,
            database: input.database,
            repository: plan.repository,
            planned_at: plan.plannedAt,
            requested_by: input.requestedBy ?? null,
            ...prunedForReport(plan.decisions, result.deleted, result.skipped),
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
