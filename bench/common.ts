// Shared by the benchmarks: logging with elapsed time, timers, units and rounding.
import { existsSync, readFileSync } from 'node:fs';
import { hrtime } from 'node:process';
import type { WorkflowHandle } from '@temporalio/client';
import { describeError } from '../client/output.js';
import { startPostgresCluster, type PostgresCluster } from '../stack/postgres-cluster.js';
import { startS3Server, type S3Server } from '../stack/seaweedfs.js';
import { startTemporalDevServer } from '../stack/temporal-dev-server.js';
import { statusQuery, type RunbookStatus } from '../workflows/runbook.js';

export const MB = 1024 * 1024;
export const GB = 1024 * MB;

const t0 = Date.now();
export function log(line: string): void {
  const elapsed = ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stdout.write(`[${elapsed}s] ${line}\n`);
}

export function secondsSince(start: bigint): number {
  return Number(hrtime.bigint() - start) / 1e9;
}

export const mb = (bytes: number): number => Math.round((bytes / MB) * 10) / 10;
export const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * Teardown for a benchmark: steps run newest-first exactly once, on the normal path or on
 * SIGINT/SIGTERM; a failing step is logged and the others still run.
 */
export function teardownStack(): { add: (name: string, run: () => Promise<void>) => void; cleanup: () => Promise<void> } {
  const steps: { name: string; run: () => Promise<void> }[] = [];
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      for (const step of steps.reverse()) {
        try {
          await step.run();
        } catch (error) {
          log(`cleanup of ${step.name} failed: ${(error as Error).message}`);
        }
      }
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: tearing down ...`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { add: (name, run) => steps.push({ name, run }), cleanup };
}

/** Prints, next to the verdicts, how many runs shared the CPUs with other processes; returns that count. */
export function warnAboutNoise(runs: { seconds: number; cpu: { other: number } }[]): number {
  const noisy = runs.filter((r) => r.cpu.other > 0.1 * r.seconds);
  if (noisy.length > 0) {
    const worst = Math.max(...noisy.map((r) => r.cpu.other / r.seconds)) * 100;
    process.stdout.write(
      `\nWARNING: ${noisy.length} of ${runs.length} runs shared the CPUs with other processes (> 10% of a CPU on average; worst ${worst.toFixed(0)}%): ` +
        'the time ratios are unreliable; rerun on a quiet machine.\n',
    );
  }
  return noisy.length;
}

/** --keep: everything stays up for a look (`where` says what is where) until Ctrl-C tears it down. */
export async function stayUpIfKept(keep: boolean, where: string): Promise<void> {
  if (!keep) return;
  log(`--keep: everything stays up (${where}); Ctrl-C tears it down`);
  await new Promise<void>(() => undefined); // until a signal
}

/** Prints a failed benchmark's error (with its hint) and the end of the worker's log. */
export function reportBenchFailure(error: unknown, workerLog: string | undefined): void {
  const described = describeError(error);
  process.stderr.write(`bench failed: ${described.type}: ${described.message}${described.hint ? `\nHINT: ${described.hint}` : ''}\n`);
  if (workerLog && existsSync(workerLog)) process.stderr.write(`--- worker log (tail) ---\n${readFileSync(workerLog, 'utf8').slice(-4000)}\n`);
}

/**
 * Waits for a workflow's result; after `timeoutMs` it is stuck, not slow: terminate it and say where
 * it stood. `describeSteps` renders the steps from its status query into the error.
 */
export async function resultOrStuck<T>(handle: WorkflowHandle, what: string, timeoutMs: number, describeSteps: (status: RunbookStatus | undefined) => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('stuck')), timeoutMs);
  });
  try {
    return (await Promise.race([handle.result(), stuck])) as T;
  } catch (error) {
    const status = await handle.query(statusQuery).catch(() => undefined);
    if ((error as Error).message !== 'stuck') {
      const d = describeError(error);
      throw new Error(`${what} (${handle.workflowId}) failed: ${d.type}: ${d.message}${d.hint ? `\nHINT: ${d.hint}` : ''}${describeSteps(status)}`);
    }
    const pending = (await handle.describe().catch(() => undefined))?.raw.pendingActivities?.[0];
    await handle.terminate('bench: no result in time').catch(() => undefined);
    throw new Error(
      `${what} (${handle.workflowId}) had no result after ${timeoutMs / 1000} s (terminated); current step ${status?.currentStep ?? '?'}, waiting for ${status?.waitingFor ?? '-'}, ` +
        `pending activity ${pending?.activityType?.name ?? '-'} (attempt ${pending?.attempt ?? '-'}${pending?.lastFailure?.message ? `, last failure: ${pending.lastFailure.message}` : ''})${describeSteps(status)}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a benchmark's main and exits with its code. */
export function runBench(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exit(1);
    },
  );
}

/** A command-line number that must be positive (and whole, when `integer`), or a clear error. */
export function positiveFlag(flag: string, value: string | undefined, integer = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`--${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${value}`);
  return n;
}

export interface BenchStack {
  cluster: PostgresCluster;
  temporal: Awaited<ReturnType<typeof startTemporalDevServer>>;
  s3: S3Server | undefined;
}

/**
 * The real components a benchmark runs against, started side by side; whatever did start is
 * registered for teardown even if another one failed. The cluster gets a `warmup` database with
 * a small table, for the warm-up run that pays the first workflow's loading costs.
 */
export async function startBenchStack(addCleanup: (name: string, run: () => Promise<void>) => void, options: { s3?: boolean } = {}): Promise<BenchStack> {
  const [pgStart, temporalStart, s3Start] = await Promise.allSettled([
    startPostgresCluster({ settings: { max_wal_size: "'4GB'", checkpoint_timeout: "'30min'" } }),
    startTemporalDevServer(),
    options.s3 ? startS3Server({ bucket: 'pgrunbook-bench' }) : Promise.resolve(undefined),
  ] as const);
  if (pgStart.status === 'fulfilled') addCleanup('PostgreSQL cluster', () => pgStart.value.stop());
  if (temporalStart.status === 'fulfilled') addCleanup('Temporal dev server', () => temporalStart.value.teardown());
  if (s3Start.status === 'fulfilled' && s3Start.value) {
    const s3 = s3Start.value;
    addCleanup('SeaweedFS', () => s3.stop());
  }
  for (const s of [pgStart, temporalStart, s3Start]) if (s.status === 'rejected') throw s.reason;
  const stack = {
    cluster: (pgStart as PromiseFulfilledResult<PostgresCluster>).value,
    temporal: (temporalStart as PromiseFulfilledResult<BenchStack['temporal']>).value,
    s3: (s3Start as PromiseFulfilledResult<S3Server | undefined>).value,
  };
  log(`  PostgreSQL ${await stack.cluster.sql('SHOW server_version')} on 127.0.0.1:${stack.cluster.port}${stack.s3 ? `; S3 ${stack.s3.endpoint}` : ''}; Temporal ${stack.temporal.address}`);
  await stack.cluster.sql('CREATE DATABASE warmup');
  await stack.cluster.sql('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g', 'warmup');
  return stack;
}
