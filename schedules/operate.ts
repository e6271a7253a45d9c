import type { Client, ScheduleDescription, ScheduleHandle } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { UsageError } from '../client/output.js';
import { describeIfExists, desiredSchedules, ownerOf, type ScheduleKind } from './apply.js';
import { describeOverlap, describeSpec } from './spec.js';

// list, describe, pause, unpause, trigger and delete for pgrunbook's schedules. Mutations refuse
// schedules pgrunbook did not create: those belong to whoever made them (`temporal schedule`).

/** A schedule as the CLI shows it; plain JSON. */
export interface ScheduleView {
  scheduleId: string;
  exists: true;
  managedByPgrunbook: boolean;
  database: string | null;
  kind: ScheduleKind | null;
  /** The config wants this schedule (enabled); false: `schedules apply` deletes it. */
  inConfig: boolean;
  workflowType: string;
  /** Temporal appends the scheduled time to this base. */
  workflowId: string;
  taskQueue: string;
  spec: string;
  timezone: string;
  jitterSeconds: number;
  catchupWindowMinutes: number;
  overlap: string;
  paused: boolean;
  note: string | null;
  nextActionTimes: string[];
  recentActions: { scheduledAt: string; takenAt: string; workflowId: string }[];
  runningWorkflows: string[];
  actionsTaken: number;
  skippedOverlap: number;
  missedCatchupWindow: number;
  createdAt: string;
  lastUpdatedAt: string | null;
}

/** A schedule the config wants that Temporal does not have (yet). */
export interface MissingSchedule {
  scheduleId: string;
  exists: false;
  database: string;
  kind: ScheduleKind;
  inConfig: true;
  spec: string;
}

export function viewOf(description: ScheduleDescription, config: Config): ScheduleView {
  const owner = ownerOf(description.memo);
  const { info, state, policies, spec, action } = description;
  return {
    scheduleId: description.scheduleId,
    exists: true,
    managedByPgrunbook: owner !== null,
    database: owner?.database ?? null,
    kind: owner?.kind ?? null,
    inConfig: desiredSchedules(config).some((d) => d.enabled && d.scheduleId === description.scheduleId),
    workflowType: action.workflowType,
    workflowId: action.workflowId,
    taskQueue: action.taskQueue,
    spec: describeSpec(spec),
    timezone: spec.timezone || 'UTC',
    jitterSeconds: Math.round((spec.jitter ?? 0) / 1000),
    catchupWindowMinutes: Math.round(policies.catchupWindow / 60_000),
    overlap: describeOverlap(policies.overlap).split(' ')[0]!,
    paused: state.paused,
    note: state.note || null,
    nextActionTimes: info.nextActionTimes.map((t) => t.toISOString()),
    recentActions: info.recentActions.map((a) => ({ scheduledAt: a.scheduledAt.toISOString(), takenAt: a.takenAt.toISOString(), workflowId: a.action.workflow.workflowId })),
    runningWorkflows: info.runningActions.map((a) => a.workflow.workflowId),
    actionsTaken: info.numActionsTaken,
    skippedOverlap: info.numActionsSkippedOverlap,
    missedCatchupWindow: info.numActionsMissedCatchupWindow,
    createdAt: info.createdAt.toISOString(),
    lastUpdatedAt: info.lastUpdatedAt?.toISOString() ?? null,
  };
}

/**
 * The config's schedules (described by id, so a just-applied one shows at once) and any other
 * schedule pgrunbook created that the config no longer wants.
 */
export async function listSchedules(client: Client, config: Config): Promise<(ScheduleView | MissingSchedule)[]> {
  const wanted = desiredSchedules(config).filter((d) => d.enabled);
  const described = await Promise.all(wanted.map((d) => describeIfExists(client, d.scheduleId)));
  const entries: (ScheduleView | MissingSchedule)[] = wanted.map((d, i) => {
    const description = described[i];
    return description ? viewOf(description, config) : { scheduleId: d.scheduleId, exists: false, database: d.database, kind: d.kind, inConfig: true, spec: d.spec! };
  });
  const shown = new Set(wanted.map((d) => d.scheduleId));
  for await (const summary of client.schedule.list()) {
    if (shown.has(summary.scheduleId) || !ownerOf(summary.memo)) continue;
    const description = await describeIfExists(client, summary.scheduleId);
    if (description) entries.push(viewOf(description, config));
  }
  return entries;
}

/**
 * Finds a schedule by id (the `pgrunbook-` prefix may be left out). Unknown ids, and for
 * mutations schedules pgrunbook did not create, are refused with the ids it knows.
 */
export async function findSchedule(client: Client, config: Config, id: string | undefined, purpose: { mutating: boolean; usage: string }): Promise<{ handle: ScheduleHandle; description: ScheduleDescription }> {
  if (!id) throw new UsageError('expected a schedule id', `${purpose.usage}; ${await knownIdsHint(client, config)}`);
  const candidates = id.startsWith('pgrunbook-') ? [id] : [id, `pgrunbook-${id}`];
  for (const candidate of candidates) {
    const description = await describeIfExists(client, candidate);
    if (!description) continue;
    if (purpose.mutating && !ownerOf(description.memo)) {
      throw new UsageError(`schedule "${candidate}" was not created by pgrunbook; pgrunbook leaves it alone`, `use the temporal CLI for it, e.g. temporal schedule describe --schedule-id ${candidate}`);
    }
    return { handle: client.schedule.getHandle(candidate), description };
  }
  throw new UsageError(`no schedule "${id}" in namespace ${config.temporal.namespace}`, await knownIdsHint(client, config));
}

async function knownIdsHint(client: Client, config: Config): Promise<string> {
  const ids = (await listSchedules(client, config)).filter((s) => s.exists).map((s) => s.scheduleId);
  return ids.length ? `pgrunbook's schedules: ${ids.join(', ')}` : 'there are none yet: create them with `pgrunbook schedules apply`';
}

export async function pauseSchedule(handle: ScheduleHandle, note: string): Promise<void> {
  await handle.pause(note);
}

export async function unpauseSchedule(handle: ScheduleHandle, note: string): Promise<void> {
  await handle.unpause(note);
}

export interface TriggerResult {
  scheduleId: string;
  /** The workflow the trigger started, once the schedule reports it. */
  workflowId: string | null;
  /** The schedule's overlap policy skipped it: a previous run still runs. */
  skipped: boolean;
  runningWorkflows: string[];
}

/**
 * Starts the schedule's action now, under the schedule's own overlap policy (a backup is not
 * doubled up by a trigger either), and waits up to `waitMs` to say which workflow it started.
 */
export async function triggerSchedule(handle: ScheduleHandle, before: ScheduleDescription, waitMs = 10_000): Promise<TriggerResult> {
  await handle.trigger(before.policies.overlap);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const now = await handle.describe();
    if (now.info.numActionsTaken > before.info.numActionsTaken) {
      const newest = now.info.recentActions.at(-1);
      return { scheduleId: handle.scheduleId, workflowId: newest?.action.workflow.workflowId ?? null, skipped: false, runningWorkflows: now.info.runningActions.map((a) => a.workflow.workflowId) };
    }
    if (now.info.numActionsSkippedOverlap > before.info.numActionsSkippedOverlap || Date.now() > deadline) {
      return { scheduleId: handle.scheduleId, workflowId: null, skipped: now.info.numActionsSkippedOverlap > before.info.numActionsSkippedOverlap, runningWorkflows: now.info.runningActions.map((a) => a.workflow.workflowId) };
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export async function deleteSchedule(handle: ScheduleHandle): Promise<void> {
  await handle.delete();
}
