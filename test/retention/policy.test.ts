import { describe, expect, it } from 'vitest';
import { RetentionConfig } from '../../config/schema.js';
import type { BackupState } from '../../repository/catalog.js';
import { compactTimestamp } from '../../repository/layout.js';
import { isoWeek, planRetention, type RetentionCandidate, type RetentionDecision } from '../../repository/retention.js';

// Table-driven tests of the pure retention policy over synthetic backup sets: which backups a
// prune keeps, which it deletes, and the rule that decided each.

const DAY = 86_400_000;
const HOUR = 3_600_000;

/** A synthetic backup folder of database `app`, started at `at`. */
function backup(at: string | Date, state: BackupState = 'verified', label: string | null = null): RetentionCandidate {
  const timestamp = compactTimestamp(new Date(at));
  return { id: `app/${timestamp}${label ? `_${label}` : ''}`, label, timestamp, state };
}

/** Daily backups at 02:00 UTC from `first` to `last` inclusive (ISO dates). */
function daily(first: string, last: string, label: string | null = null): RetentionCandidate[] {
  const out: RetentionCandidate[] = [];
  for (let t = Date.parse(`${first}T02:00:00Z`); t <= Date.parse(`${last}T02:00:00Z`); t += DAY) out.push(backup(new Date(t), 'verified', label));
  return out;
}

const policy = (raw: Record<string, unknown>) => RetentionConfig.parse(raw);
const kept = (decisions: RetentionDecision[]) => decisions.filter((d) => d.action === 'keep').map((d) => d.id);
const deleted = (decisions: RetentionDecision[]) => decisions.filter((d) => d.action === 'delete').map((d) => d.id);
const day = (id: string) => `${id.slice(4, 8)}-${id.slice(8, 10)}-${id.slice(10, 12)}`;
const reasonsOf = (decisions: RetentionDecision[], id: string) => decisions.find((d) => d.id === id)?.reasons;

describe('ISO weeks (UTC), the weekly GFS bucket', () => {
  it.each([
    ['2026-01-01T00:00:00Z', '2026-W01'], // Thursday: week 1 of its own year
    ['2027-01-01T12:00:00Z', '2026-W53'], // Friday: still the last week of 2026
    ['2026-12-31T23:59:59Z', '2026-W53'],
    ['2024-12-30T00:00:00Z', '2025-W01'], // Monday of the week holding 2 January 2025
    ['2024-12-29T23:59:59Z', '2024-W52'], // the Sunday before
    ['2021-01-03T10:00:00Z', '2020-W53'], // Sunday 3 January belongs to 2020
    ['2008-12-29T00:00:00Z', '2009-W01'],
    ['2026-03-15T02:00:00Z', '2026-W11'],
  ])('%s is in %s', (at, week) => {
    expect(isoWeek(new Date(at))).toBe(week);
  });
});

describe('planRetention', () => {
  const now = new Date('2026-03-15T12:00:00Z');

  it('deletes nothing when retention is not configured', () => {
    const set = [...daily('2025-01-01', '2026-03-15'), backup('2025-01-01T00:00:00Z', 'failed'), backup('2024-01-01T00:00:00Z', 'incomplete')];
    const plan = planRetention(set, undefined, now);
    expect(deleted(plan)).toEqual([]);
    expect(plan[0]!.reasons[0]).toMatch(/retention is not configured/);
  });

  it.each<{ name: string; backups: RetentionCandidate[]; rules: Record<string, unknown>; keep: string[]; at?: Date }>([
    {
      name: 'keepLast 7 (seed 002) keeps the 7 newest verified backups',
      backups: daily('2026-03-01', '2026-03-15'),
      rules: { keepLast: 7 },
      keep: ['2026-03-15', '2026-03-14', '2026-03-13', '2026-03-12', '2026-03-11', '2026-03-10', '2026-03-09'],
    },
    {
      name: 'maxAgeDays 30 (seed 004) keeps backups up to exactly 30 days old',
      backups: [backup(new Date(now.getTime() - 29 * DAY)), backup(new Date(now.getTime() - 30 * DAY)), backup(new Date(now.getTime() - 30 * DAY - 1000)), backup(new Date(now.getTime() - 45 * DAY))],
      rules: { maxAgeDays: 30 },
      keep: ['2026-02-14', '2026-02-13'],
    },
    {
      name: 'composition: a backup is kept if ANY rule keeps it (keepLast 3 OR maxAgeDays 5)',
      backups: daily('2026-02-01', '2026-03-15'),
      rules: { keepLast: 3, maxAgeDays: 5 },
      keep: ['2026-03-15', '2026-03-14', '2026-03-13', '2026-03-12', '2026-03-11'],
    },
    {
      name: 'composition: keepLast reaches past maxAgeDays when backups are sparse',
      backups: [backup('2026-03-14T02:00:00Z'), backup('2026-01-01T02:00:00Z'), backup('2025-06-01T02:00:00Z'), backup('2025-01-01T02:00:00Z')],
      rules: { keepLast: 3, maxAgeDays: 30 },
      keep: ['2026-03-14', '2026-01-01', '2025-06-01'],
    },
    {
      name: 'gfs.daily keeps the newest backup of each of the N newest days',
      backups: [backup('2026-03-15T01:00:00Z'), backup('2026-03-15T09:00:00Z'), backup('2026-03-14T23:00:00Z'), backup('2026-03-14T05:00:00Z'), backup('2026-03-13T12:00:00Z'), backup('2026-03-12T12:00:00Z')],
      rules: { gfs: { daily: 3 } },
      keep: ['2026-03-15', '2026-03-14', '2026-03-13'],
    },
    {
      name: 'gfs.daily: 23:59:59 on 31 December and 00:00:00 on 1 January are different days',
      backups: [backup('2026-01-01T00:00:00Z'), backup('2025-12-31T23:59:59Z'), backup('2025-12-31T00:00:01Z')],
      rules: { gfs: { daily: 2 } },
      keep: ['2026-01-01', '2025-12-31'],
      at: new Date('2026-01-01T06:00:00Z'),
    },
    {
      name: 'gfs.monthly: the month boundary is midnight UTC, and a month keeps its newest backup',
      backups: [backup('2026-02-01T00:30:00Z'), backup('2026-01-31T23:30:00Z'), backup('2026-01-15T02:00:00Z'), backup('2025-12-31T23:59:59Z'), backup('2025-12-01T00:00:00Z'), backup('2025-11-30T23:59:59Z')],
      rules: { gfs: { monthly: 3 } },
      keep: ['2026-02-01', '2026-01-31', '2025-12-31'],
      at: new Date('2026-02-02T00:00:00Z'),
    },
    {
      name: 'gfs.yearly: 31 December and 1 January are different years',
      backups: [backup('2026-01-01T00:00:00Z'), backup('2025-12-31T23:59:59Z'), backup('2025-06-01T00:00:00Z'), backup('2024-12-31T23:00:00Z'), backup('2023-12-31T23:00:00Z')],
      rules: { gfs: { yearly: 3 } },
      keep: ['2026-01-01', '2025-12-31', '2024-12-31'],
      at: new Date('2026-01-02T00:00:00Z'),
    },
    {
      name: 'gfs.weekly: an ISO week spanning two years is one bucket (2024-12-30 .. 2025-01-05 is 2025-W01)',
      backups: [backup('2025-01-05T02:00:00Z'), backup('2025-01-01T02:00:00Z'), backup('2024-12-30T02:00:00Z'), backup('2024-12-29T02:00:00Z'), backup('2024-12-23T02:00:00Z')],
      rules: { gfs: { weekly: 2 } },
      keep: ['2025-01-05', '2024-12-29'],
      at: new Date('2025-01-06T00:00:00Z'),
    },
    {
      name: 'gfs.weekly: 2026-12-31 (Thursday) and 2027-01-01 (Friday) are both 2026-W53',
      backups: [backup('2027-01-01T02:00:00Z'), backup('2026-12-31T02:00:00Z'), backup('2026-12-27T02:00:00Z')],
      rules: { gfs: { weekly: 2 } },
      keep: ['2027-01-01', '2026-12-27'],
      at: new Date('2027-01-02T00:00:00Z'),
    },
    {
      name: 'seed 000 GFS (7 daily, 4 weekly, 6 monthly) plus 2 yearly over 439 nightly backups',
      backups: daily('2025-01-01', '2026-03-15'),
      rules: { gfs: { daily: 7, weekly: 4, monthly: 6, yearly: 2 } },
      keep: [
        // daily: the last 7 days
        '2026-03-15', '2026-03-14', '2026-03-13', '2026-03-12', '2026-03-11', '2026-03-10', '2026-03-09',
        // weekly: Sundays ending the 3 ISO weeks before (2026-W11 is already kept by daily)
        '2026-03-08', '2026-03-01', '2026-02-22',
        // monthly: the last backup of the 5 months before March; yearly: 2025's last (also monthly)
        '2026-02-28', '2026-01-31', '2025-12-31', '2025-11-30', '2025-10-31',
      ].sort().reverse(),
    },
  ])('$name', ({ backups, rules, keep, at }) => {
    const plan = planRetention(backups, policy(rules), at ?? now);
    expect(kept(plan).map(day)).toEqual(keep);
    expect(plan).toHaveLength(backups.length);
    // Every decision names the rule behind it.
    for (const d of plan) expect(d.reasons.length).toBeGreaterThan(0);
  });

  it('names the rule that kept or deleted each backup', () => {
    const plan = planRetention(daily('2026-03-01', '2026-03-15'), policy({ keepLast: 2, maxAgeDays: 3, gfs: { monthly: 1 } }), now);
    expect(reasonsOf(plan, 'app/20260315T020000Z')).toEqual(['newest verified backup (never deleted)', 'keepLast 2 (#1)', 'maxAgeDays 3', 'gfs.monthly 2026-03']);
    expect(reasonsOf(plan, 'app/20260314T020000Z')).toEqual(['keepLast 2 (#2)', 'maxAgeDays 3']);
    expect(reasonsOf(plan, 'app/20260313T020000Z')).toEqual(['maxAgeDays 3']);
    expect(reasonsOf(plan, 'app/20260312T020000Z')).toEqual(['outside keepLast 2', 'outside maxAgeDays 3', 'outside gfs.monthly 1']);
    expect(reasonsOf(plan, 'app/20260301T020000Z')).toEqual(['outside keepLast 2', 'outside maxAgeDays 3', 'outside gfs.monthly 1']);
  });

  it('applies per-label rules (seed 003: pre-upgrade keeps 2, on-demand keeps 5); other labels follow the database-level rules', () => {
    const set = [
      ...daily('2026-03-01', '2026-03-04', 'pre-upgrade'),
      ...daily('2026-03-01', '2026-03-07', 'on-demand'),
      ...daily('2026-03-08', '2026-03-12', 'scheduled'),
      backup('2026-03-13T05:00:00Z'),
      backup('2026-03-13T06:00:00Z', 'verified', 'drill'),
    ];
    const plan = planRetention(set, policy({ keepLast: 3, labels: { 'pre-upgrade': { keepLast: 2 }, 'on-demand': { keepLast: 5 } } }), now);
    const keptIds = kept(plan);
    expect(keptIds.filter((id) => id.endsWith('_pre-upgrade')).map(day)).toEqual(['2026-03-04', '2026-03-03']);
    expect(keptIds.filter((id) => id.endsWith('_on-demand')).map(day)).toEqual(['2026-03-07', '2026-03-06', '2026-03-05', '2026-03-04', '2026-03-03']);
    // The database-level series: scheduled, unlabelled and labels without a rule (drill), together.
    expect(keptIds.filter((id) => !/_(pre-upgrade|on-demand)$/.test(id))).toEqual(['app/20260313T060000Z_drill', 'app/20260313T050000Z', 'app/20260312T020000Z_scheduled']);
    expect(reasonsOf(plan, 'app/20260303T020000Z_pre-upgrade')).toEqual(['labels.pre-upgrade.keepLast 2 (#2)']);
    expect(reasonsOf(plan, 'app/20260302T020000Z_pre-upgrade')).toEqual(['outside labels.pre-upgrade.keepLast 2']);
    expect(reasonsOf(plan, 'app/20260311T020000Z_scheduled')).toEqual(['outside keepLast 3']);
  });

  it('keeps every backup of a label whose rule is empty, and of a database level without keep rules', () => {
    const set = [...daily('2025-01-01', '2025-01-10', 'pre-upgrade'), ...daily('2025-01-01', '2025-01-10')];
    const plan = planRetention(set, policy({ labels: { 'pre-upgrade': {} } }), now);
    expect(deleted(plan)).toEqual([]);
    expect(reasonsOf(plan, 'app/20250101T020000Z_pre-upgrade')).toEqual(['labels.pre-upgrade: no keep rule configured, everything is kept']);
    expect(reasonsOf(plan, 'app/20250101T020000Z')).toEqual(['database level: no keep rule configured, everything is kept']);
  });

  it('never deletes the newest verified backup, whatever the rules say', () => {
    const set = [backup('2026-03-14T00:00:00Z', 'failed'), backup('2026-01-10T02:00:00Z', 'verified', 'on-demand'), backup('2026-01-09T02:00:00Z'), backup('2026-01-08T02:00:00Z')];
    const plan = planRetention(set, policy({ maxAgeDays: 30, labels: { 'on-demand': { maxAgeDays: 1 } } }), now);
    expect(kept(plan)).toEqual(['app/20260314T000000Z', 'app/20260110T020000Z_on-demand']);
    expect(reasonsOf(plan, 'app/20260110T020000Z_on-demand')).toEqual(['newest verified backup (never deleted)', 'outside labels.on-demand.maxAgeDays 1']);
    expect(deleted(plan)).toEqual(['app/20260109T020000Z', 'app/20260108T020000Z']);
  });

  it('keeps protected backups (in use by a running restore or drill) with the reason', () => {
    const set = daily('2026-03-01', '2026-03-15');
    const guards = new Map([['app/20260302T020000Z', 'restore restore-app is running']]);
    const plan = planRetention(set, policy({ keepLast: 2 }), now, guards);
    expect(kept(plan).map(day)).toEqual(['2026-03-15', '2026-03-14', '2026-03-02']);
    expect(reasonsOf(plan, 'app/20260302T020000Z')).toEqual(['protected: restore restore-app is running', 'outside keepLast 2']);
  });

  it.each<{ name: string; backup: RetentionCandidate; rules?: Record<string, unknown>; action: 'keep' | 'delete'; reason: RegExp; protectedBy?: string }>([
    { name: 'a failed backup 8 days old is deleted (failedMaxAgeDays default 7)', backup: backup(new Date(now.getTime() - 8 * DAY), 'failed'), action: 'delete', reason: /^failedMaxAgeDays 7: failed more than 7 days ago$/ },
    { name: 'a failed backup 6 days old is kept for the post-mortem', backup: backup(new Date(now.getTime() - 6 * DAY), 'failed'), action: 'keep', reason: /^failedMaxAgeDays 7: failed not more than 7 days ago$/ },
    { name: 'a cancelled backup is treated like a failed one', backup: backup(new Date(now.getTime() - 3 * DAY), 'cancelled'), rules: { failedMaxAgeDays: 2 }, action: 'delete', reason: /^failedMaxAgeDays 2: cancelled more than 2 days ago$/ },
    { name: 'an incomplete folder 25 h old is an orphan (incompleteMaxAgeHours default 24)', backup: backup(new Date(now.getTime() - 25 * HOUR), 'incomplete'), action: 'delete', reason: /^incompleteMaxAgeHours 24: no manifest, started more than 24 h ago/ },
    { name: 'an incomplete folder 23 h old may still be written', backup: backup(new Date(now.getTime() - 23 * HOUR), 'incomplete'), action: 'keep', reason: /may still be written/ },
    { name: 'an old incomplete folder a running backup writes is kept', backup: backup(new Date(now.getTime() - 30 * HOUR), 'incomplete'), action: 'keep', reason: /^protected: backup backup-app-1 is running$/, protectedBy: 'backup backup-app-1 is running' },
  ])('$name', ({ backup: b, rules, action, reason, protectedBy }) => {
    const set = [backup(now), b];
    const plan = planRetention(set, policy({ keepLast: 1, ...rules }), now, new Map(protectedBy ? [[b.id, protectedBy]] : []));
    const decision = plan.find((d) => d.id === b.id)!;
    expect(decision.action).toBe(action);
    expect(decision.reasons[0]).toMatch(reason);
  });

  it('does not count failed or incomplete backups against keepLast', () => {
    const set = [backup('2026-03-15T06:00:00Z', 'incomplete'), backup('2026-03-15T02:00:00Z', 'failed'), ...daily('2026-03-10', '2026-03-14')];
    const plan = planRetention(set, policy({ keepLast: 2 }), now);
    expect(kept(plan)).toEqual(['app/20260315T060000Z', 'app/20260315T020000Z', 'app/20260314T020000Z', 'app/20260313T020000Z']);
  });

  it('gives the same plan whatever the input order', () => {
    const set = [...daily('2025-11-01', '2026-03-15'), ...daily('2026-01-01', '2026-03-01', 'pre-upgrade'), backup('2026-02-01T00:00:00Z', 'failed')];
    const rules = policy({ keepLast: 3, gfs: { daily: 3, weekly: 2, monthly: 2 }, labels: { 'pre-upgrade': { keepLast: 2 } } });
    const shuffled = [...set].sort((a, b) => ((a.id.charCodeAt(10) * 31 + a.id.length) % 7) - ((b.id.charCodeAt(10) * 31 + b.id.length) % 7));
    expect(planRetention(shuffled, rules, now)).toEqual(planRetention(set, rules, now));
  });

  it('reads retention defaults from the config schema: failed 7 days, incomplete 24 hours, no keep rule', () => {
    expect(RetentionConfig.parse({})).toEqual({ labels: {}, failedMaxAgeDays: 7, incompleteMaxAgeHours: 24 });
    expect(RetentionConfig.parse({ gfs: { daily: 7 } }).gfs).toEqual({ daily: 7, weekly: 0, monthly: 0, yearly: 0 });
    expect(RetentionConfig.safeParse({ keepLast: 0 }).success).toBe(false);
    expect(RetentionConfig.safeParse({ labels: { 'bad label': { keepLast: 1 } } }).success).toBe(false);
    expect(RetentionConfig.safeParse({ keepLst: 7 }).success).toBe(false);
  });
});
