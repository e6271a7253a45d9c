import { createHash } from 'node:crypto';
import { ScheduleNotFoundError, type Client, type ScheduleDescription, type ScheduleOptions, type ScheduleUpdateOptions } from '@temporalio/client';
import { configuredTaskQueues, runbookTaskQueue, selectDatabases, type Config, type ScheduleConfig } from '../config/schema.js';
import { UsageError } from '../client/output.js';
import type { BackupInput } from '../workflows/backup-input.js';
import type { BasebackupInput } from '../workflows/basebackup-input.js';
import type { DrillInput } from '../workflows/drill-input.js';
import type { FleetInput } from '../workflows/fleet-input.js';
import type { PruneInput } from '../workflows/prune-input.js';
import { DATABASE_ATTRIBUTE, LABEL_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { describeSpec, overlapPolicy, scheduleSpec } from './spec.js';

// `pgrunbook schedules apply`: make the Temporal Schedules match the config. Schedules are
// created, updated and deleted by id; only schedules carrying pgrunbook's memo are ever updated
// or deleted, and running it twice changes nothing.

export type ScheduleKind = 'backup' | 'drill' | 'prune' | 'basebackup' | 'fleet';
/** The kinds every database has; `basebackup` belongs to a cluster (clusters.<id>.schedules.basebackup). */
export const SCHEDULE_KINDS: readonly DatabaseScheduleKind[] = ['backup', 'drill', 'prune'];
export type DatabaseScheduleKind = Exclude<ScheduleKind, 'basebackup' | 'fleet'>;

/** Schedule ids: pgrunbook-<kind>-<database>, pgrunbook-basebackup-<cluster> and pgrunbook-fleet-<fleet>. */
export const scheduleIdOf = (kind: ScheduleKind, database: string): string => `pgrunbook-${kind}-${database}`;

/** Where the config sets a schedule: databases.<id>.schedules.<kind>, or clusters.<id>.schedules.basebackup. */
export const scheduleField = (kind: ScheduleKind, id: string): string =>
  kind === 'basebackup' ? `clusters.${id}.schedules.basebackup` : kind === 'fleet' ? `fleets.${id}.schedule` : `databases.${id}.schedules.${kind}`;

/** Key of the schedule memo that marks a schedule as pgrunbook's. Set at creation; an update cannot change a schedule's memo. */
export const OWNER_MEMO_KEY = 'pgrunbook';
export interface OwnerMemo {
  managedBy: 'pgrunbook schedules apply';
  /** The database, the cluster of a basebackup schedule, or the fleet of a fleet schedule. */
  database: string;
  kind: ScheduleKind;
}

/**
 * Key in the start-workflow action's memo (which updates can change) recording what the schedule
 * was last applied from: hashes of spec, action and policies, and the config's `paused`.
 */
export const APPLIED_MEMO_KEY = 'pgrunbookSchedule';
export interface AppliedMemo {
  hashes: { spec: string; action: string; policies: string };
  paused: boolean;
}

/** What the config asks for, one per database and kind; `options` only when enabled. */
export interface DesiredSchedule {
  scheduleId: string;
  database: string;
  kind: ScheduleKind;
  enabled: boolean;
  /** Why a disabled schedule is, when not its own `enabled: false`. */
  disabledBecause?: string;
  /** The spec in words. */
  spec?: string;
  options?: ScheduleOptions;
  applied?: AppliedMemo;
}

export type ScheduleChangeAction = 'created' | 'updated' | 'deleted' | 'unchanged';

export interface ScheduleChange {
  scheduleId: string;
  database: string;
  kind: ScheduleKind | null;
  action: ScheduleChangeAction;
  /** Why, in words: "not in Temporal yet", "spec changed", "disabled in the config". */
  reason: string;
  spec?: string;
}

const WORKFLOW: Record<ScheduleKind, { type: string; idBase: (database: string) => string }> = {
  backup: { type: 'backupDatabase', idBase: (database) => `backup-${database}` },
  drill: { type: 'runRestoreDrill', idBase: (database) => `drill-${database}` },
  prune: { type: 'pruneBackups', idBase: (database) => `prune-${database}` },
  basebackup: { type: 'basebackupCluster', idBase: (cluster) => `basebackup-${cluster}` },
  fleet: { type: 'backupFleet', idBase: (fleet) => `backup-fleet-${fleet}` },
};

/** The workflow input a schedule of `kind` starts with. */
function scheduledInput(kind: ScheduleKind, database: string): BackupInput | DrillInput | PruneInput | BasebackupInput | FleetInput {
  if (kind === 'fleet') return { fleet: database, requestedBy: 'schedule' } satisfies FleetInput;
  if (kind === 'basebackup') return { cluster: database, requestedBy: 'schedule' } satisfies BasebackupInput;
  if (kind === 'backup') return { database, label: 'scheduled' } satisfies BackupInput;
  if (kind === 'drill') return { database, requestedBy: 'schedule' } satisfies DrillInput;
  return { database, requestedBy: 'schedule' } satisfies PruneInput;
}

/**
 * Every database's backup, drill and prune schedule as the config wants it (prune only with
 * retention configured), and every cluster's basebackup schedule (it prunes after each backup
 * when the cluster has retention).
 */
export function desiredSchedules(config: Config): DesiredSchedule[] {
  const desired: DesiredSchedule[] = [];
  // A database in a scheduled fleet is backed up by the fleet's schedule, not one of its own.
  const inScheduledFleet = new Map<string, string>();
  for (const [fleet, spec] of Object.entries(config.fleets)) {
    if (spec.schedule?.enabled) for (const database of selectDatabases(config, spec.select)) if (!inScheduledFleet.has(database)) inScheduledFleet.set(database, fleet);
  }
  for (const [database, db] of Object.entries(config.databases)) {
    for (const kind of SCHEDULE_KINDS) {
      const schedule = db.schedules[kind];
      const scheduleId = scheduleIdOf(kind, database);
      const fleet = kind === 'backup' ? inScheduledFleet.get(database) : undefined;
      if (fleet) {
        desired.push({ scheduleId, database, kind, enabled: false, disabledBecause: `backed up by fleet "${fleet}"'s schedule (fleets.${fleet}.schedule)` });
        continue;
      }
      if (!schedule.enabled || (kind === 'prune' && !db.retention)) {
        desired.push({ scheduleId, database, kind, enabled: false });
        continue;
      }
      desired.push({ scheduleId, database, kind, enabled: true, ...scheduleOptions(config, database, kind, schedule) });
    }
  }
  for (const [cluster, spec] of Object.entries(config.clusters)) {
    const schedule = spec.schedules.basebackup;
    const scheduleId = scheduleIdOf('basebackup', cluster);
    desired.push(schedule.enabled ? { scheduleId, database: cluster, kind: 'basebackup', enabled: true, ...scheduleOptions(config, cluster, 'basebackup', schedule) } : { scheduleId, database: cluster, kind: 'basebackup', enabled: false });
  }
  for (const [fleet, spec] of Object.entries(config.fleets)) {
    const scheduleId = scheduleIdOf('fleet', fleet);
    if (!spec.schedule) desired.push({ scheduleId, database: fleet, kind: 'fleet', enabled: false, disabledBecause: `fleet "${fleet}" has no schedule (on demand only)` });
    else desired.push(spec.schedule.enabled ? { scheduleId, database: fleet, kind: 'fleet', enabled: true, ...scheduleOptions(config, fleet, 'fleet', spec.schedule) } : { scheduleId, database: fleet, kind: 'fleet', enabled: false });
  }
  return desired;
}

function scheduleOptions(config: Config, database: string, kind: ScheduleKind, schedule: ScheduleConfig): { spec: string; options: ScheduleOptions; applied: AppliedMemo } {
  const spec = scheduleSpec(schedule);
  // The workflow id is a base: Temporal appends the scheduled time, e.g. backup-app-2026-11-21T02:00:00Z.
  const action = {
    type: 'startWorkflow' as const,
    workflowType: WORKFLOW[kind].type,
    workflowId: WORKFLOW[kind].idBase(database),
    // Fleets on the control queue; everything else on its database's site.
    taskQueue: kind === 'fleet' ? config.temporal.taskQueue : runbookTaskQueue(config, database),
    args: [scheduledInput(kind, database)],
    typedSearchAttributes: [
      { key: DATABASE_ATTRIBUTE, value: database },
      { key: OPERATION_ATTRIBUTE, value: kind === 'fleet' ? 'fleet-backup' : kind },
      ...(kind === 'backup' ? [{ key: LABEL_ATTRIBUTE, value: 'scheduled' }] : []),
    ],
  };
  const policies = { overlap: overlapPolicy(schedule.overlap), catchupWindow: Math.round(schedule.catchupWindowMinutes * 60_000) };
  const applied: AppliedMemo = {
    hashes: {
      spec: hashOf(spec),
      action: hashOf({ ...action, typedSearchAttributes: action.typedSearchAttributes.map((a) => [a.key.name, a.value]) }),
      policies: hashOf(policies),
    },
    paused: schedule.paused,
  };
  const owner: OwnerMemo = { managedBy: 'pgrunbook schedules apply', database, kind };
  return {
    spec: describeSpec(spec),
    applied,
    options: {
      scheduleId: scheduleIdOf(kind, database),
      spec,
      action: { ...action, memo: { [APPLIED_MEMO_KEY]: applied } },
      policies,
      memo: { [OWNER_MEMO_KEY]: owner },
      state: schedule.paused ? { paused: true, note: `paused by the config (${scheduleField(kind, database)}.paused)` } : {},
    },
  };
}

/** The pgrunbook memo of a schedule, or null for a schedule pgrunbook did not create. */
export function ownerOf(memo: Record<string, unknown> | undefined): OwnerMemo | null {
  const owner = memo?.[OWNER_MEMO_KEY] as Partial<OwnerMemo> | undefined;
  return owner?.managedBy === 'pgrunbook schedules apply' && typeof owner.database === 'string' ? (owner as OwnerMemo) : null;
}

function appliedOf(description: ScheduleDescription): AppliedMemo | null {
  return (description.action.memo?.[APPLIED_MEMO_KEY] as AppliedMemo | undefined) ?? null;
}

/** The described schedule, or null when there is none with that id. */
export async function describeIfExists(client: Client, scheduleId: string): Promise<ScheduleDescription | null> {
  try {
    return await client.schedule.getHandle(scheduleId).describe();
  } catch (error) {
    if (error instanceof ScheduleNotFoundError) return null;
    throw error;
  }
}

interface PlannedChange extends ScheduleChange {
  desired?: DesiredSchedule;
}

/**
 * Compares the config with Temporal and says what `apply` would do, changing nothing. Refuses,
 * before anything changes, when one of pgrunbook's ids is taken by a schedule it did not create.
 */
export async function planSchedules(client: Client, config: Config): Promise<PlannedChange[]> {
  const desired = desiredSchedules(config);
  const plan: PlannedChange[] = [];
  const conflicts: string[] = [];
  // The config's own ids, by id: strongly consistent, unlike listing.
  const existing = await Promise.all(desired.map((d) => describeIfExists(client, d.scheduleId)));
  desired.forEach((d, i) => {
    const current = existing[i] ?? null;
    const base = { scheduleId: d.scheduleId, database: d.database, kind: d.kind, desired: d, ...(d.spec ? { spec: d.spec } : {}) };
    if (current && !ownerOf(current.memo)) {
      // Not ours: refused if the config wants that id, otherwise left alone.
      if (d.enabled) conflicts.push(d.scheduleId);
      return;
    }
    if (!d.enabled) {
      const why = d.disabledBecause ?? (d.kind === 'prune' && !config.databases[d.database]?.retention ? `no retention configured (databases.${d.database}.retention)` : `disabled in the config (${scheduleField(d.kind, d.database)}.enabled: false)`);
      if (current) plan.push({ ...base, action: 'deleted', reason: why });
      return;
    }
    if (!current) {
      plan.push({ ...base, action: 'created', reason: 'not in Temporal yet' });
      return;
    }
    const changed = differences(d.applied!, appliedOf(current));
    // Ids are namespace-wide: a config on another task queue takes its database's schedules over.
    const wanted = d.options!.action.taskQueue;
    const moved = current.action.taskQueue !== wanted ? ` (task queue ${current.action.taskQueue} → ${wanted})` : '';
    plan.push(changed.length ? { ...base, action: 'updated', reason: `${changed.join(', ')} changed${moved}` } : { ...base, action: 'unchanged', reason: 'matches the config' });
  });
  if (conflicts.length) {
    throw new UsageError(
      `schedule${conflicts.length > 1 ? 's' : ''} ${conflicts.map((id) => `"${id}"`).join(', ')} already exist${conflicts.length > 1 ? '' : 's'} but ${conflicts.length > 1 ? 'were' : 'was'} not created by pgrunbook; nothing was changed`,
      `pgrunbook leaves other schedules alone: delete ${conflicts.length > 1 ? 'them' : 'it'} (temporal schedule delete --schedule-id ${conflicts[0]}), or set schedules.<kind>.enabled: false for that database`,
    );
  }
  // Schedules pgrunbook created for databases no longer in the config, on one of this config's
  // task queues (another deployment's config on other task queues owns its own).
  const ours = configuredTaskQueues(config);
  const known = new Set(desired.map((d) => d.scheduleId));
  for await (const summary of client.schedule.list()) {
    const owner = ownerOf(summary.memo);
    if (!owner || known.has(summary.scheduleId)) continue;
    const current = await describeIfExists(client, summary.scheduleId);
    if (!current || !ours.includes(current.action.taskQueue)) continue;
    const what = owner.kind === 'basebackup' ? 'cluster' : owner.kind === 'fleet' ? 'fleet' : 'database';
    plan.push({ scheduleId: summary.scheduleId, database: owner.database, kind: owner.kind, action: 'deleted', reason: `${what} "${owner.database}" is no longer in the config`, spec: describeSpec(current.spec) });
  }
  return plan;
}

function differences(desired: AppliedMemo, applied: AppliedMemo | null): string[] {
  if (!applied?.hashes) return ['spec', 'action', 'policies'];
  const changed: string[] = (['spec', 'action', 'policies'] as const).filter((part) => desired.hashes[part] !== applied.hashes[part]);
  if (desired.paused !== applied.paused) changed.push('paused');
  return changed;
}

/** Makes Temporal match the plan; with `dryRun`, only plans. */
export async function applySchedules(client: Client, config: Config, options: { dryRun?: boolean } = {}): Promise<ScheduleChange[]> {
  const plan = await planSchedules(client, config);
  if (!options.dryRun) {
    for (const change of plan) {
      const handle = client.schedule.getHandle(change.scheduleId);
      if (change.action === 'created') await client.schedule.create(change.desired!.options!);
      else if (change.action === 'updated') await handle.update((previous) => updateOf(change.desired!, previous));
      else if (change.action === 'deleted') await handle.delete();
    }
  }
  return plan.map(({ desired: _desired, ...change }) => change);
}

/**
 * The whole schedule as the config wants it. Its pause state stays as an operator left it,
 * unless the config's own `paused` changed since the last apply.
 */
function updateOf(desired: DesiredSchedule, previous: ScheduleDescription): ScheduleUpdateOptions {
  const { spec, action, policies } = desired.options!;
  const applied = appliedOf(previous);
  const configPausedChanged = applied !== null && applied.paused !== desired.applied!.paused;
  const state = configPausedChanged
    ? { paused: desired.applied!.paused, note: `${desired.applied!.paused ? 'paused' : 'unpaused'} by the config (${scheduleField(desired.kind, desired.database)}.paused)` }
    : { paused: previous.state.paused, note: previous.state.note, remainingActions: previous.state.remainingActions };
  return { spec, action, policies, state };
}

/** sha256 of a canonical JSON rendering (object keys sorted), shortened. */
function hashOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
