import { planRetention, type RetentionDecision } from '../repository/retention.js';
import type { BaseBackupEntry } from './base-catalog.js';
import { DEFAULT_SEGMENT_SIZE, parseLsn, parseWalFileName, segmentFileName, segmentOf } from './wal-names.js';

// Retention of base backups and the WAL they need, decided together. Pure (no I/O, no clock):
// the prune activity feeds it the inventory, the time and what running workflows use.
//
// Base backups follow repository/retention.ts's rules (a verified one is kept if keepLast or
// maxAgeDays keeps it; the newest verified and those in use are never deleted; failed ones go
// after 7 days, incomplete folders after 24 hours). WAL is then cut at the oldest KEPT verified
// base backup's start segment: recovery from a base backup starting in segment S reads S and
// later segments only (on its timeline and the ones after it), so segments numbered below S on
// any timeline are needed by no kept backup. History files are tiny and say how timelines
// branched: they are always kept.

/** clusters.<id>.retention. */
export interface BaseRetentionPolicy {
  keepLast?: number;
  maxAgeDays?: number;
}

export const FAILED_MAX_AGE_DAYS = 7;
export const INCOMPLETE_MAX_AGE_HOURS = 24;

export interface BaseRetentionPlan {
  /** Every base backup folder, newest first: keep or delete, and the rule(s) that decided it. */
  decisions: RetentionDecision[];
  /**
   * WAL segments numbered below this one go (any timeline): the start segment of the oldest
   * kept verified base backup. Null: no WAL is deleted (no kept verified base backup, or
   * retention is not configured).
   */
  walCutoff: { segment: string; backupId: string } | null;
}

/** Which base backups go, and from which segment on WAL is kept. */
export function planBaseRetention(
  backups: readonly BaseBackupEntry[],
  policy: BaseRetentionPolicy | undefined,
  now: Date,
  protectedIds: ReadonlyMap<string, string> = new Map(),
): BaseRetentionPlan {
  const candidates = backups.map((b) => ({ id: b.id, label: null, timestamp: b.timestamp, state: b.state }));
  if (!policy) {
    return {
      decisions: candidates.sort((a, b) => b.timestamp.localeCompare(a.timestamp)).map((c) => ({ ...c, action: 'keep', reasons: ['retention is not configured (clusters.<id>.retention): nothing is deleted'] })),
      walCutoff: null,
    };
  }
  const decisions = planRetention(candidates, { ...policy, failedMaxAgeDays: FAILED_MAX_AGE_DAYS, incompleteMaxAgeHours: INCOMPLETE_MAX_AGE_HOURS }, now, protectedIds);
  const byId = new Map(backups.map((b) => [b.id, b]));
  let cutoff: { segment: bigint; name: string; backupId: string } | null = null;
  for (const d of decisions) {
    const manifest = byId.get(d.id)?.manifest;
    if (d.action !== 'keep' || d.state !== 'verified' || !manifest) continue;
    const segmentSize = manifest.segmentSize ?? DEFAULT_SEGMENT_SIZE;
    const segment = segmentOf(parseLsn(manifest.startLsn)!, segmentSize);
    if (!cutoff || segment < cutoff.segment) cutoff = { segment, name: segmentFileName(manifest.timeline, segment, segmentSize), backupId: d.id };
  }
  return { decisions, walCutoff: cutoff ? { segment: cutoff.name, backupId: cutoff.backupId } : null };
}

/**
 * Whether an archived WAL file (by its PostgreSQL name) lies wholly before the cutoff segment:
 * segments and .partial segments numbered below it, and backup labels (.backup) of such
 * segments. History files never are.
 */
export function walBeforeCutoff(name: string, cutoffSegment: string, segmentSize = DEFAULT_SEGMENT_SIZE): boolean {
  const file = parseWalFileName(name, segmentSize);
  const cutoff = parseWalFileName(cutoffSegment, segmentSize);
  if (!file || !cutoff || cutoff.segment === null || file.kind === 'history' || file.segment === null) return false;
  return file.segment < cutoff.segment;
}
