import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type proto from '@temporalio/proto';
import { startWorkerProcess, type WorkerProcess } from '../../bench/worker-process.js';
import { freezeAfterIo, procStat } from '../support/processes.js';

// Several `pgrunbook worker` processes on one task queue, and the /proc and history lookups that
// tell which of them ran (or runs) a step.

export type { WorkerProcess };

type HistoryEvent = proto.temporal.api.history.v1.IHistoryEvent;

let started = 0;

/** Starts `count` worker processes on `configPath` at once; each logs to its own file in `logDir`. */
export async function startWorkers(count: number, configPath: string, env: NodeJS.ProcessEnv, taskQueue: string, logDir: string): Promise<WorkerProcess[]> {
  const starting = Array.from({ length: count }, () => startWorkerProcess(configPath, env, join(logDir, `worker-${++started}.log`), taskQueue));
  const settled = await Promise.allSettled(starting);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await Promise.all(settled.map((s) => (s.status === 'fulfilled' ? s.value.stop() : undefined)));
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<WorkerProcess>).value);
}

/** The SDK's default worker identity is `<pid>@<hostname>`. */
export const isIdentityOf = (identity: string | null | undefined, worker: WorkerProcess): boolean => identity?.split('@')[0] === String(worker.pid);

/** Resolves with the exit code or signal once `worker` has exited (at once if it already has). */
export function exited(worker: WorkerProcess): Promise<number | NodeJS.Signals> {
  const { child } = worker;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode!);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal!)));
}

/** The worker whose process tree holds `pid`, if any. */
export function workerRunning(pid: number, workers: WorkerProcess[]): WorkerProcess | undefined {
  for (let p: number | undefined = pid; p && p > 1; p = procStat(p)?.ppid) {
    const worker = workers.find((w) => w.pid === p);
    if (worker) return worker;
  }
  return undefined;
}

/** SIGSTOPs every process `find` returns once they have written `bytes` together; returns their pids. */
export function freezeAfterWritten(what: string, find: () => number[], bytes: number, timeoutMs = 60_000): Promise<number[]> {
  return freezeAfterIo(what, find, bytes, 'written', timeoutMs);
}

/** Polls `describe` until `activityType` is a started pending activity that `accept` accepts; returns it. */
export async function pendingActivity(
  handle: WorkflowHandle,
  activityType: string,
  accept: (activity: proto.temporal.api.workflow.v1.IPendingActivityInfo) => boolean = () => true,
  timeoutMs = 60_000,
): Promise<proto.temporal.api.workflow.v1.IPendingActivityInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { raw } = await handle.describe();
    const found = raw.pendingActivities?.find((a) => a.activityType?.name === activityType && a.lastStartedTime && accept(a));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`${activityType} did not start within ${timeoutMs} ms: ${JSON.stringify(raw.pendingActivities ?? [])}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface ActivityRun {
  scheduled: HistoryEvent;
  /** Temporal records only the last attempt's start (its attempt number and the previous attempt's failure). */
  started: HistoryEvent;
  closed: HistoryEvent;
}

/** The one execution of `activityType` in a workflow's history: scheduled, (last) started, closed. */
export async function activityRun(handle: WorkflowHandle, activityType: string): Promise<ActivityRun> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activityType);
  if (scheduled.length !== 1) throw new Error(`expected one ${activityType} in the history, found ${scheduled.length}`);
  const id = asNumber(scheduled[0]!.eventId);
  const started = events.find((e) => asNumber(e.activityTaskStartedEventAttributes?.scheduledEventId) === id);
  const closed = events.find((e) => [e.activityTaskCompletedEventAttributes, e.activityTaskFailedEventAttributes, e.activityTaskTimedOutEventAttributes, e.activityTaskCanceledEventAttributes].some((a) => asNumber(a?.scheduledEventId) === id));
  if (!started || !closed) throw new Error(`${activityType} did not finish in the history`);
  return { scheduled: scheduled[0]!, started, closed };
}

/** An event's time in milliseconds since the epoch. */
export function eventMs(event: HistoryEvent): number {
  const { seconds, nanos } = event.eventTime ?? {};
  return asNumber(seconds) * 1000 + Math.floor((nanos ?? 0) / 1e6);
}

/** History ids and times are int64 (Long objects): Number() of one is NaN. */
const asNumber = (value: { toString(): string } | number | null | undefined): number => (value === null || value === undefined ? NaN : Number(value.toString()));
