import type { RetentionDecision } from '../repository/retention.js';

// What both prunes (a database's backups: pruneBackups; a cluster's base backups: pruneBaseBackups)
// make of the plan's decisions. Pure: no activity, timer or other workflow command here.

/** A planned deletion the retire step left alone because a workflow started using it meanwhile. */
export interface SkippedDeletion {
  backupId: string;
  reason: string;
}

/** Why the retire and delete steps do not run, in the words the status and the CLI show. */
export function whyNothingIsDeleted(dryRun: boolean, configured: boolean): string {
  return dryRun ? 'dry run' : !configured ? 'retention is not configured' : 'nothing to delete';
}

/** The plan's decisions after the retire step: a skipped deletion is kept, and says why first. */
export function keepSkipped(decisions: RetentionDecision[], skipped: SkippedDeletion[]): RetentionDecision[] {
  const reasons = new Map(skipped.map((s) => [s.backupId, s.reason]));
  return decisions.map((d) => (reasons.has(d.id) ? { ...d, action: 'keep', reasons: [reasons.get(d.id)!, ...d.reasons] } : d));
}

/** The prune report's deleted, skipped and kept fields (snake_case, as in the report files). */
export function prunedForReport(
  decisions: RetentionDecision[],
  deleted: string[],
  skipped: SkippedDeletion[],
): { deleted: { backup_id: string; state: string; reasons: string[] }[]; skipped: { backup_id: string; reason: string }[]; kept: number } {
  const decided = new Map(decisions.map((d) => [d.id, d]));
  return {
    deleted: deleted.map((id) => ({ backup_id: id, state: decided.get(id)!.state, reasons: decided.get(id)!.reasons })),
    skipped: skipped.map((s) => ({ backup_id: s.backupId, reason: s.reason })),
    kept: decisions.length - deleted.length,
  };
}
