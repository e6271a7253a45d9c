import { ApplicationFailure, CancellationScope, executeChild, isCancellation, ParentClosePolicy, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { FleetActivities } from '../activities/fleet.js';
import type { GlobalsActivities } from '../activities/globals.js';
import { compactTimestamp } from '../repository/layout.js';
import { activityProfiles } from './activity-profiles.js';
import { backupDatabase } from './backup-database.js';
import { describeIssues } from './backup-input.js';
import { FleetInput, type FleetDatabaseOutcome, type FleetGlobalsOutcome, type FleetPlan, type FleetResult } from './fleet-input.js';
import { messageOf, Runbook } from './runbook.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from './search-attributes.js';

export type FleetStep = 'plan' | 'backups' | 'globals';

// Reading the config is quick: a few attempts at most.
const { resolveFleet } = proxyActivities<FleetActivities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 3 } });

/**
 * Backs up many databases (seed 004's loop over every database of a server, for a whole estate):
 * each database is its own backupDatabase child workflow on its site's task queue, at most
 * `concurrency` at once, and each server's roles and tablespaces are dumped once. One database
 * failing does not stop the others: the result lists every outcome.
 */
export async function backupFleet(rawInput: FleetInput): Promise<FleetResult> {
  const parsed = FleetInput.safeParse(rawInput);
  if (!parsed.success) {
    throw ApplicationFailure.nonRetryable(`invalid backupFleet input: ${describeIssues(parsed.error)}\nHINT: e.g. {"fleet":"nightly"} or {"select":{"labels":{"tier":"prod"}},"concurrency":4}`, 'InvalidInput');
  }
  const { requestedBy, ...request } = parsed.data;
  const info = workflowInfo();
  const started = Date.now();
  const runbook = new Runbook<FleetStep>('fleet-backup');
  upsertSearchAttributes([
    { key: DATABASE_ATTRIBUTE, value: request.fleet ?? 'fleet' },
    { key: OPERATION_ATTRIBUTE, value: 'fleet-backup' },
  ]);
  const plan = await runbook.step('plan', () => resolveFleet(request));
  const label = request.label ?? (requestedBy === 'schedule' ? 'scheduled' : undefined);
  const stamp = compactTimestamp(info.startTime);
  const details = runbook.status.details;
  Object.assign(details, { fleet: plan.fleet, databases: plan.databases.length, servers: plan.servers.length, concurrency: plan.concurrency, done: 0, failed: 0, running: '' });
  const running = new Set<string>();
  const finishedOne = (name: string, ok: boolean): void => {
    running.delete(name);
    details.done = Number(details.done) + 1;
    if (!ok) details.failed = Number(details.failed) + 1;
    details.running = [...running].join(',');
  };

  const databaseJobs = plan.databases.map((target) => () => backupOne(target, { label, workflowId: `backup-${target.database}-${stamp}-${plan.fleet ?? 'fleet'}` }, running, finishedOne));
  const databases = await runbook.step('backups', () => inPool(databaseJobs, plan.concurrency));
  // Then each server's roles and tablespaces, through one of its databases that was just backed
  // up (so known reachable), by a worker of that database's site.
  const serverOf = new Map(plan.databases.map((d) => [d.database, d.server]));
  const globalsJobs = plan.globals.enabled
    ? plan.servers.map((server) => () => {
        const through = databases.find((d) => d.status === 'succeeded' && serverOf.get(d.database) === server);
        return globalsOf(server, through, plan, info.startTime, running, finishedOne);
      })
    : [];
  const globals = globalsJobs.length > 0 ? await runbook.step('globals', () => inPool(globalsJobs, plan.concurrency)) : [];
  const failed = databases.filter((d) => d.status !== 'succeeded').length + globals.filter((g) => g.status !== 'succeeded').length;
  runbook.finish('completed');
  return { fleet: plan.fleet, databases, globals, succeeded: databases.filter((d) => d.status === 'succeeded').length, failed, durationMs: Date.now() - started };
}

/** One database's backup as a child workflow on its site; its failure is an outcome, not the fleet's. */
async function backupOne(
  target: FleetPlan['databases'][number],
  options: { label: string | undefined; workflowId: string },
  running: Set<string>,
  finishedOne: (name: string, ok: boolean) => void,
): Promise<FleetDatabaseOutcome> {
  const started = Date.now();
  running.add(target.database);
  const base = { database: target.database, taskQueue: target.taskQueue, workflowId: options.workflowId };
  try {
    const result = await executeChild(backupDatabase, {
      args: [{ database: target.database, ...(options.label ? { label: options.label } : {}) }],
      workflowId: options.workflowId,
      taskQueue: target.taskQueue,
      // Cancelling the fleet cancels its backups, which clean up after themselves.
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
    });
    finishedOne(target.database, true);
    return { ...base, status: 'succeeded', backupId: result.backupId, bytes: result.size, durationMs: Date.now() - started };
  } catch (error) {
    finishedOne(target.database, false);
    if (isCancellation(error) && CancellationScope.current().consideredCancelled) throw error;
    return { ...base, status: isCancellation(error) ? 'cancelled' : 'failed', durationMs: Date.now() - started, error: innermostMessage(error) };
  }
}

/** A server's roles and tablespaces, through `through` (one of its databases) on that database's site. */
async function globalsOf(
  server: string,
  through: FleetDatabaseOutcome | undefined,
  plan: FleetPlan,
  startedAt: Date,
  running: Set<string>,
  finishedOne: (name: string, ok: boolean) => void,
): Promise<FleetGlobalsOutcome> {
  const name = `globals@${server}`;
  if (!through) {
    finishedOne(name, false);
    const first = plan.databases.find((d) => d.server === server)!;
    return { server, database: first.database, taskQueue: first.taskQueue, status: 'failed', error: `no database on ${server} was backed up, so none is known to connect; globals not dumped` };
  }
  running.add(name);
  const base = { server, database: through.database, taskQueue: through.taskQueue };
  const { long } = activityProfiles<GlobalsActivities>(plan.settings, { taskQueue: through.taskQueue });
  try {
    const result = await long.backupGlobals({ database: through.database, startedAt: startedAt.toISOString(), rolePasswords: plan.globals.rolePasswords, keepLast: plan.globals.keepLast });
    finishedOne(name, true);
    return { ...base, status: 'succeeded', key: result.key, roles: result.roles, tablespaces: result.tablespaces };
  } catch (error) {
    finishedOne(name, false);
    if (isCancellation(error) && CancellationScope.current().consideredCancelled) throw error;
    return { ...base, status: isCancellation(error) ? 'cancelled' : 'failed', error: messageOf(error) };
  }
}

/** A child's failure wraps its step's (ChildWorkflowFailure → ActivityFailure → the step's own): that one says what went wrong. */
function innermostMessage(error: unknown): string {
  let e = error as { cause?: unknown; message?: string } | undefined;
  while (e?.cause) e = e.cause as typeof e;
  return e?.message ?? messageOf(error);
}

/**
 * Runs the jobs at most `limit` at a time, in order; results in the jobs' order. Deterministic.
 * Jobs report their own failures; one that throws (the fleet was cancelled) ends its lane, and
 * the pool still waits for the other lanes' running jobs (their children finish cancelling)
 * before it throws, so the fleet never closes with a child still running.
 */
async function inPool<T>(jobs: Array<() => Promise<T>>, limit: number): Promise<T[]> {
  const results: T[] = new Array<T>(jobs.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < jobs.length) {
      const at = next++;
      results[at] = await jobs[at]!();
    }
  };
  const lanes = await Promise.allSettled(Array.from({ length: Math.min(limit, jobs.length) }, lane));
  const stopped = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
  if (stopped) throw stopped.reason;
  return results;
}
