import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import proto from '@temporalio/proto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startRestore } from '../../client/restore.js';
import { listBackups } from '../../repository/catalog.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import { contentFingerprint, type ContentFingerprint } from '../support/content.js';
import { freezeAfterRead, processesMatching } from '../support/processes.js';
import { demoApp } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { activityRun, eventMs, exited, freezeAfterWritten, isIdentityOf, pendingActivity, startWorkers, workerRunning, type WorkerProcess } from './worker-processes.js';

// Two `pgrunbook worker` processes poll one task queue. The one running a backup's dump, or a
// restore's pg_restore, dies (kill -9) or is stopped (SIGTERM, short grace time): the step runs
// again on the other worker and the runbook ends as if nothing had happened.

const BULK_ROWS = 20_000;
const { TimeoutType } = proto.temporal.api.enums.v1;

let stack: TestStack;
let app: Awaited<ReturnType<typeof demoApp>>;
let source: ContentFingerprint;
let workers: WorkerProcess[] = [];
/** The backup case 1 made (case 2 restores it). */
let backupId: string | undefined;

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  // ~19 MB of poorly compressible rows: pg_dump and pg_restore run long enough to be caught mid-way.
  await stack.cluster.sql(`CREATE TABLE public.bulk AS SELECT g AS id, encode(gen_random_bytes(700), 'base64') AS payload FROM generate_series(1, ${BULK_ROWS}) g`, 'app');
  // Before the workers start: they get its URL variable from workerEnv.
  app = await demoApp(stack, 'app');
  source = await contentFingerprint(stack.cluster.url('app'));
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await app?.stop().catch(() => undefined);
  await stack?.teardown();
});

const databases = () => ({ app: { url: stack.databaseUrl('app'), repository: 'local', app: app.config, restore: { onStepFailure: 'abort' } } });
/** A dead worker's step is retried 3 s after its last heartbeat. */
const quickRetry = { timeouts: { heartbeatSeconds: 3 } };
let quickRetryFile: string | undefined;
/** One config file for the SIGKILL cases, so the second reuses the first one's survivor. */
const quickRetryConfigFile = (): string => (quickRetryFile ??= stack.writeConfig(databases(), quickRetry));
const taskQueue = (): string => stack.config({}).temporal.taskQueue;
const alive = (): WorkerProcess[] => workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null);

/** Two live workers on `configFile`: those already running on it, plus new ones. */
async function twoWorkers(configFile: string): Promise<[WorkerProcess, WorkerProcess]> {
  const running = alive().filter((w) => w.child.spawnargs.includes(configFile));
  await Promise.all(alive().filter((w) => !running.includes(w)).map((w) => w.stop()));
  workers = [...running, ...(await startWorkers(2 - running.length, configFile, stack.workerEnv, taskQueue(), stack.workDir))];
  return workers as [WorkerProcess, WorkerProcess];
}

const other = (worker: WorkerProcess): WorkerProcess => alive().find((w) => w !== worker)!;

// The dump itself (it exports a snapshot for its row counts), not `pg_dump --version` or the metadata step's --schema-only.
const pgDumpPids = (): number[] => processesMatching(/(^|\/)pg_dump\0.*\0--snapshot=/, (env) => env.includes(`PGPORT=${stack.cluster.port}`));
const pgRestorePids = (): number[] => processesMatching(/(^|\/)pg_restore\0/, (env) => env.includes(`PGPORT=${stack.cluster.port}`));

/** Unpublished writes (".<name>.<hex>.partial") anywhere in the local repository. */
function partialWrites(dir = join(stack.workDir, 'repo')): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile() && e.name.endsWith('.partial')).map((e) => e.name);
}

async function until(what: string, probe: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('two workers on one task queue, one killed', () => {
  it('SIGKILL during pg_dump: the dump runs again on the other worker after the heartbeat timeout; the backup is verified and nothing half-written stays', async () => {
    const config = stack.config(databases(), quickRetry);
    await twoWorkers(quickRetryConfigFile());
    const handle = await startBackup(stack.client, config, { database: 'app' });

    const frozen = await freezeAfterWritten('pg_dump', pgDumpPids, 4 * 1024 * 1024);
    const victim = workerRunning(frozen[0]!, workers);
    expect(victim).toBeDefined();
    const running = await pendingActivity(handle, 'dumpDatabase');
    expect(isIdentityOf(running.lastWorkerIdentity, victim!)).toBe(true);
    const survivor = other(victim!);
    victim!.child.kill('SIGKILL');
    expect(await exited(victim!)).toBe('SIGKILL');
    for (const pid of frozen) process.kill(pid, 'SIGKILL');
    expect(partialWrites()).not.toEqual([]); // the dead attempt's dump, cut off

    const result = (await handle.result()) as BackupResult;
    backupId = result.backupId;
    expect(result.status).toBe('verified');
    const entry = (await listBackups(new RepositoryRegistry(config, stack.workerEnv).get('local'), 'app')).find((b) => b.id === result.backupId);
    expect(entry?.state).toBe('verified');
    expect(entry?.manifest?.rowCounts?.['public.bulk']).toBe(BULK_ROWS);
    expect(entry?.manifest?.verification?.ok).toBe(true);
    expect(partialWrites()).toEqual([]);

    const dump = await activityRun(handle, 'dumpDatabase');
    const started = dump.started.activityTaskStartedEventAttributes!;
    expect(dump.closed.activityTaskCompletedEventAttributes).toBeTruthy();
    expect(isIdentityOf(started.identity, survivor)).toBe(true);
    expect(started.attempt).toBeGreaterThanOrEqual(2);
    expect(started.lastFailure?.timeoutFailureInfo?.timeoutType).toBe(TimeoutType.TIMEOUT_TYPE_HEARTBEAT);
    console.log(`backup: dump attempt ${started.attempt} started on the survivor ${((eventMs(dump.started) - eventMs(dump.scheduled)) / 1000).toFixed(1)} s after the step was scheduled (heartbeat timeout 3 s)`);
  });

  it('SIGKILL during pg_restore: the restore runs again on the other worker; data equal to the backup, one old database kept, the app up', async () => {
    const config = stack.config(databases(), quickRetry);
    await twoWorkers(quickRetryConfigFile());
    if (!backupId) backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
    await stack.cluster.sql('DELETE FROM public.bulk WHERE id % 3 = 0', 'app');
    const live = await contentFingerprint(stack.cluster.url('app'));
    await app.start();

    // requireApproval: false is what `pgrunbook restore --yes` sends.
    const handle = await startRestore(stack.client, config, { database: 'app', backup: backupId, requireApproval: false });
    const frozen = await freezeAfterRead('pg_restore', pgRestorePids, 4 * 1024 * 1024, 60_000);
    const victim = workerRunning(frozen[0]!, workers);
    expect(victim).toBeDefined();
    const running = await pendingActivity(handle, 'restoreIntoScratch');
    expect(isIdentityOf(running.lastWorkerIdentity, victim!)).toBe(true);
    const survivor = other(victim!);
    victim!.child.kill('SIGKILL');
    expect(await exited(victim!)).toBe('SIGKILL');
    for (const pid of frozen) process.kill(pid, 'SIGKILL');

    const result = await handle.result();
    expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
    expect(await contentFingerprint(stack.cluster.url(result.preRestoreDatabase!))).toEqual(live);
    // Nothing half-restored left behind: the live name and the one old database, no scratch.
    const names = (await stack.cluster.sql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'app%'")).split(',');
    expect(names).toEqual(['app', result.preRestoreDatabase!].sort());
    expect(app.running()).toBe(true);
    expect(await app.healthy()).toBe(true);
    const status = await handle.query(statusQuery);
    expect(status.finished.filter((s) => s.step === 'restore').map((s) => s.outcome)).toEqual(['ok']);

    const restore = await activityRun(handle, 'restoreIntoScratch');
    const started = restore.started.activityTaskStartedEventAttributes!;
    expect(isIdentityOf(started.identity, survivor)).toBe(true);
    expect(started.attempt).toBeGreaterThanOrEqual(2);
    expect(started.lastFailure?.timeoutFailureInfo?.timeoutType).toBe(TimeoutType.TIMEOUT_TYPE_HEARTBEAT);
    console.log(`restore: pg_restore attempt ${started.attempt} started on the survivor ${((eventMs(restore.started) - eventMs(restore.scheduled)) / 1000).toFixed(1)} s after the step was scheduled (heartbeat timeout 3 s)`);
  });

  it('SIGTERM with worker.shutdownGraceSeconds 1: the worker exits, and the dump runs again on the other worker at once, not after the heartbeat timeout', async () => {
    // A heartbeat timeout far longer than the whole case: a retry before it proves the stopped
    // worker reported the step failed rather than going silent.
    const heartbeatSeconds = 60;
    const overrides = { timeouts: { heartbeatSeconds }, worker: { shutdownGraceSeconds: 1 } };
    const configFile = stack.writeConfig(databases(), overrides);
    const config = stack.config(databases(), overrides);
    const [first, second] = await twoWorkers(configFile);

    // An exclusive lock on a table holds pg_dump in its LOCK TABLE: the dump step stays running,
    // on whichever worker took it, until the lock goes (a frozen pg_dump could not get the
    // SIGTERM the cancelled step sends it).
    const locker = new pg.Client({ connectionString: stack.cluster.url('app') });
    await locker.connect();
    let handle!: Awaited<ReturnType<typeof startBackup>>;
    let survivor!: WorkerProcess;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE public.bulk IN ACCESS EXCLUSIVE MODE');
      handle = await startBackup(stack.client, config, { database: 'app' });
      const running = await pendingActivity(handle, 'dumpDatabase');
      const victim = isIdentityOf(running.lastWorkerIdentity, first) ? first : second;
      survivor = other(victim);
      expect(isIdentityOf(running.lastWorkerIdentity, victim)).toBe(true);
      await until('pg_dump under the worker running the step', () => pgDumpPids().some((pid) => workerRunning(pid, workers) === victim));

      const stopping = Date.now();
      victim.child.kill('SIGTERM');
      expect(await exited(victim), `the worker's log:\n${readFileSync(victim.logPath, 'utf8')}`).toBe(0);
      const stopSeconds = (Date.now() - stopping) / 1000;
      // 1 s of grace, then the cancelled step ends and the worker shuts down.
      expect(stopSeconds).toBeLessThan(10);
      await pendingActivity(handle, 'dumpDatabase', (a) => isIdentityOf(a.lastWorkerIdentity, survivor) && Number(a.attempt) >= 2, 20_000);
      // The stopped worker's pg_dump was killed with its step: only the survivor's is left.
      await until('the stopped worker\'s pg_dump to end', () => pgDumpPids().every((pid) => workerRunning(pid, workers) === survivor), 10_000);
      console.log(`graceful stop: the worker exited ${stopSeconds.toFixed(1)} s after SIGTERM`);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }

    const result = (await handle.result()) as BackupResult;
    expect(result.status).toBe('verified');
    expect(partialWrites()).toEqual([]);
    const dump = await activityRun(handle, 'dumpDatabase');
    const started = dump.started.activityTaskStartedEventAttributes!;
    expect(isIdentityOf(started.identity, survivor)).toBe(true);
    expect(started.attempt).toBe(2);
    // Reported by the SDK as a retryable failure of its own type, not a timeout.
    expect(started.lastFailure?.applicationFailureInfo).toMatchObject({ type: 'WorkerShutdown', nonRetryable: false });
    const retriedAfter = (eventMs(dump.started) - eventMs(dump.scheduled)) / 1000;
    expect(retriedAfter).toBeLessThan(heartbeatSeconds / 2);
    const history = await handle.fetchHistory();
    const closedAfter = (eventMs(history.events!.at(-1)!) - eventMs(dump.scheduled)) / 1000;
    expect(closedAfter).toBeLessThan(heartbeatSeconds / 2);
    console.log(`graceful stop: dump attempt 2 started on the survivor ${retriedAfter.toFixed(1)} s after the step was scheduled, the backup closed after ${closedAfter.toFixed(1)} s (heartbeat timeout ${heartbeatSeconds} s)`);
  });
});
