import type { BackupState } from './catalog.js';

// Retention: which backups of one database a prune keeps and which it deletes, and the rule that
// decided each. Pure (no I/O, no clock): the prune activity feeds it the repository's inventory,
// the time and the backups running restores and drills use; tests feed it synthetic sets.
//
// Composition (restic's and pgBackRest's convention): a verified backup is kept if ANY keep rule
// of its series keeps it, and deleted only when every configured rule lets it go. A series with
// no keep rule keeps everything. Failed and incomplete backups are never "kept" by keep rules:
// they have ages of their own. Nothing is deleted that is the newest verified backup or in use.

/** databases.<id>.retention (config/schema.ts RetentionConfig, after defaults). */
export interface RetentionPolicy {
  keepLast?: number;
  maxAgeDays?: number;
  gfs?: GfsPolicy;
  /** A label's rule governs the backups with that label instead of the database-level rules. */
  labels?: Record<string, LabelRule>;
  failedMaxAgeDays: number;
  incompleteMaxAgeHours: number;
}

export interface GfsPolicy {
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

export interface LabelRule {
  keepLast?: number;
  maxAgeDays?: number;
}

/** What the policy needs to know about one backup folder. */
export interface RetentionCandidate {
  id: string;
  label: string | null;
  /** The backup's start, from its id (`20261121T020000Z`). */
  timestamp: string;
  state: BackupState;
}

export type RetentionAction = 'keep' | 'delete';

export interface RetentionDecision {
  id: string;
  label: string | null;
  state: BackupState;
  action: RetentionAction;
  /** Which rule kept or deleted it, in the config's words (`keepLast 7`, `gfs.monthly 2026-01`). */
  reasons: string[];
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/**
 * Decides, for every backup (newest first, as listBackups returns them), keep or delete.
 * `protectedIds` maps a backup id to why it must stay (a running restore or drill uses it, a
 * running backup writes it); those are kept whatever the policy says.
 */
export function planRetention(
  backups: readonly RetentionCandidate[],
  policy: RetentionPolicy | undefined,
  now: Date,
  protectedIds: ReadonlyMap<string, string> = new Map(),
): RetentionDecision[] {
  const ordered = [...backups].sort(newestFirst);
  const reasons = new Map<string, { action: RetentionAction; reasons: string[] }>();
  const decide = (id: string, action: RetentionAction, why: string[]): void => void reasons.set(id, { action, reasons: why });

  if (!policy) {
    for (const b of ordered) decide(b.id, 'keep', ['retention is not configured (databases.<id>.retention): nothing is deleted']);
  } else {
    // Verified backups: the keep rules of their series.
    const series = new Map<string, RetentionCandidate[]>();
    for (const b of ordered) {
      if (b.state !== 'verified') continue;
      const key = b.label !== null && policy.labels?.[b.label] ? `label:${b.label}` : 'database';
      series.set(key, [...(series.get(key) ?? []), b]);
    }
    for (const [key, members] of series) {
      const label = key.startsWith('label:') ? key.slice('label:'.length) : null;
      const rule = label !== null ? policy.labels![label]! : policy;
      const prefix = label !== null ? `labels.${label}.` : '';
      for (const [id, decision] of applyKeepRules(members, rule, label === null ? policy.gfs : undefined, prefix, now)) decide(id, decision.action, decision.reasons);
    }
    // Failed and cancelled backups: kept a while for the post-mortem, then deleted.
    // Incomplete folders (no manifest): a backup being written, a writer that died, or a prune
    // that died between the manifest and the rest; deleted once older than the threshold.
    for (const b of ordered) {
      const age = now.getTime() - timestampOf(b).getTime();
      if (b.state === 'failed' || b.state === 'cancelled') {
        const old = age > policy.failedMaxAgeDays * DAY_MS;
        decide(b.id, old ? 'delete' : 'keep', [`failedMaxAgeDays ${policy.failedMaxAgeDays}: ${b.state} ${old ? 'more' : 'not more'} than ${policy.failedMaxAgeDays} days ago`]);
      } else if (b.state === 'incomplete') {
        const old = age > policy.incompleteMaxAgeHours * HOUR_MS;
        decide(
          b.id,
          old ? 'delete' : 'keep',
          [old ? `incompleteMaxAgeHours ${policy.incompleteMaxAgeHours}: no manifest, started more than ${policy.incompleteMaxAgeHours} h ago (orphaned partial upload or half-deleted backup)` : `incompleteMaxAgeHours ${policy.incompleteMaxAgeHours}: no manifest yet, may still be written`],
        );
      }
    }
  }

  // Safety, whatever the rules say.
  const newestVerified = ordered.find((b) => b.state === 'verified');
  for (const b of ordered) {
    const decision = reasons.get(b.id)!;
    const guard = protectedIds.get(b.id);
    if (guard) {
      decision.reasons = [`protected: ${guard}`, ...decision.reasons];
      decision.action = 'keep';
    }
    if (policy && b.id === newestVerified?.id) {
      decision.reasons = ['newest verified backup (never deleted)', ...decision.reasons];
      decision.action = 'keep';
    }
  }
  return ordered.map((b) => ({ id: b.id, label: b.label, state: b.state, ...reasons.get(b.id)! }));
}

/** keepLast, maxAgeDays and (database level only) GFS over one series of verified backups, newest first. */
function applyKeepRules(members: RetentionCandidate[], rule: LabelRule, gfs: GfsPolicy | undefined, prefix: string, now: Date): Map<string, { action: RetentionAction; reasons: string[] }> {
  const kept = new Map<string, string[]>(members.map((b) => [b.id, []]));
  const configured: string[] = [];
  if (rule.keepLast !== undefined) {
    configured.push(`${prefix}keepLast ${rule.keepLast}`);
    members.slice(0, rule.keepLast).forEach((b, i) => kept.get(b.id)!.push(`${prefix}keepLast ${rule.keepLast} (#${i + 1})`));
  }
  if (rule.maxAgeDays !== undefined) {
    configured.push(`${prefix}maxAgeDays ${rule.maxAgeDays}`);
    for (const b of members) {
      if (now.getTime() - timestampOf(b).getTime() <= rule.maxAgeDays * DAY_MS) kept.get(b.id)!.push(`${prefix}maxAgeDays ${rule.maxAgeDays}`);
    }
  }
  for (const kind of GFS_KINDS) {
    const count = gfs?.[kind] ?? 0;
    if (count <= 0) continue;
    configured.push(`gfs.${kind} ${count}`);
    // The newest backup of each of the `count` newest buckets (restic's keep-daily & co.).
    const seen = new Set<string>();
    for (const b of members) {
      const bucket = BUCKET[kind](timestampOf(b));
      if (seen.has(bucket)) continue;
      if (seen.size >= count) break;
      seen.add(bucket);
      kept.get(b.id)!.push(`gfs.${kind} ${bucket}`);
    }
  }
  const out = new Map<string, { action: RetentionAction; reasons: string[] }>();
  for (const b of members) {
    const why = kept.get(b.id)!;
    if (configured.length === 0) out.set(b.id, { action: 'keep', reasons: [`${prefix ? prefix.slice(0, -1) : 'database level'}: no keep rule configured, everything is kept`] });
    else if (why.length > 0) out.set(b.id, { action: 'keep', reasons: why });
    else out.set(b.id, { action: 'delete', reasons: configured.map((r) => `outside ${r}`) });
  }
  return out;
}

const GFS_KINDS = ['daily', 'weekly', 'monthly', 'yearly'] as const;

/** GFS buckets, all in UTC: calendar day, ISO week, calendar month, calendar year. */
export const BUCKET: Record<(typeof GFS_KINDS)[number], (t: Date) => string> = {
  daily: (t) => t.toISOString().slice(0, 10),
  weekly: (t) => isoWeek(t),
  monthly: (t) => t.toISOString().slice(0, 7),
  yearly: (t) => t.toISOString().slice(0, 4),
};

/** ISO 8601 week of a UTC instant: `2026-W01`. Weeks start on Monday; week 1 holds the year's first Thursday. */
export function isoWeek(t: Date): string {
  const day = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()));
  const weekday = day.getUTCDay() || 7; // Monday 1 ... Sunday 7
  day.setUTCDate(day.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const year = day.getUTCFullYear();
  const week = Math.ceil(((day.getTime() - Date.UTC(year, 0, 1)) / DAY_MS + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** `20261121T020000Z` -> Date. */
export function timestampOf(b: { timestamp: string }): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(b.timestamp);
  if (!m) throw new Error(`not a backup timestamp: ${b.timestamp}`);
  return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

function newestFirst(a: RetentionCandidate, b: RetentionCandidate): number {
  return b.timestamp.localeCompare(a.timestamp) || b.id.localeCompare(a.id);
}

/** Counts for a summary line: how many kept, how many deleted, per state. */
export function summarize(decisions: readonly RetentionDecision[]): { keep: number; delete: number } {
  return { keep: decisions.filter((d) => d.action === 'keep').length, delete: decisions.filter((d) => d.action === 'delete').length };
}
