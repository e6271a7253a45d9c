import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackup } from '../client/backup.js';
import { listBackups, readManifest } from '../repository/catalog.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { projectRoot } from '../stack/binaries.js';
import { freePort } from '../stack/ports.js';
import type { BackupResult } from '../workflows/backup-database.js';
import { statusQuery } from '../workflows/runbook.js';
import { startTestStack, type TestStack } from './support/stack.js';

const run = promisify(execFile);
let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
});

afterAll(async () => {
  await stack?.teardown();
});

/** Holds an ACCESS EXCLUSIVE lock so pg_dump blocks mid-step, deterministically, until released. */
async function lockTable(database: string, table: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: stack.cluster.url(database) });
  await client.connect();
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  return async () => {
    await client.query('ROLLBACK').catch(() => undefined);
    await client.end();
  };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Files under a backup folder in the local repository, partial ones included. */
function localFiles(backupId: string): string[] {
  const dir = join(stack.workDir, 'repo', backupId);
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

async function pgDumpBackends(): Promise<number> {
  const out = await stack.cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrunbook' AND backend_type = 'client backend'");
  return Number(out);
}

/** Command lines of running pg_dump processes, as any local user could read them. */
function pgDumpCommandLines(): string[] {
  const lines: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (/(^|\/)pg_dump /.test(argv)) lines.push(argv);
    } catch {
      // The process ended while we looked.
    }
  }
  return lines;
}

function failureOf(error: unknown): { type?: string; message: string; nonRetryable?: boolean } {
  expect(error).toBeInstanceOf(WorkflowFailedError);
  let cause = (error as WorkflowFailedError).cause as { cause?: unknown; type?: string; message: string; nonRetryable?: boolean };
  while (cause.cause) cause = cause.cause as typeof cause;
  return cause;
}

describe.each(['local', 's3'])('cancelling a backup mid-dump (%s)', (repositoryId) => {
  it('kills pg_dump, leaves no partial artifact, and records the backup as cancelled', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app'), repository: repositoryId } });
    const { stop } = await stack.startWorker(config);
    const release = await lockTable('app', 'public.processed_updates');
    try {
      const handle = await startBackup(stack.client, config, { database: 'app' });
      await waitFor('the dump step', async () => (await handle.query(statusQuery)).currentStep === 'dump');
      await waitFor('pg_dump to connect', async () => (await pgDumpBackends()) >= 2);
      // The password reaches pg_dump through its environment, never its argv (visible to `ps`).
      const dumps = pgDumpCommandLines();
      expect(dumps.length).toBeGreaterThanOrEqual(1);
      expect(dumps.some((argv) => argv.includes('--snapshot='))).toBe(true);
      for (const argv of dumps) expect(argv).not.toContain(stack.cluster.password);
      await handle.cancel();
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect((error as WorkflowFailedError).cause?.name).toBe('CancelledFailure');

      const backupId = String((await handle.query(statusQuery)).details.backupId);
      const repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
      const keys = (await repository.list(`${backupId}/`)).map((o) => o.key.split('/').pop());
      expect(keys).toEqual(['manifest.json']);
      if (repositoryId === 'local') expect(localFiles(backupId)).toEqual(['manifest.json']);
      else expect(await repository.removeIncompleteWrites(`${backupId}/db_full.dump`)).toBe(0);
      const manifest = await readManifest(repository, backupId);
      expect(manifest).toMatchObject({ status: 'cancelled', dump: null, verification: null });
      expect(manifest.error?.step).toBe('dump');
      // pg_dump was killed: its connection is gone once the lock holder lets go.
      await release();
      await waitFor('pg_dump to go away', async () => (await pgDumpBackends()) === 0);
      expect((await listBackups(repository, 'app')).find((b) => b.id === backupId)?.state).toBe('cancelled');
    } finally {
      await release();
      await stop();
    }
  });
});

describe('a worker killed mid-dump', () => {
  it('is replaced by a new worker process and the backup still ends complete and verified', async () => {
    const configFile = stack.writeConfig({ app: { url: stack.databaseUrl('app') } });
    const config = stack.config({ app: { url: '${UNUSED}' } });
    const startWorkerProcess = (): ChildProcess =>
      spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configFile], { env: stack.workerEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    let worker = startWorkerProcess();
    const release = await lockTable('app', 'public.users');
    try {
      const handle = await startBackup(stack.client, config, { database: 'app' });
      await waitFor('the dump step', async () => (await handle.query(statusQuery)).currentStep === 'dump');
      await waitFor('pg_dump to connect', async () => (await pgDumpBackends()) >= 2);
      worker.kill('SIGKILL');
      await new Promise((r) => worker.once('exit', r));
      await release();
      worker = startWorkerProcess();
      const result = (await handle.result()) as BackupResult;
      expect(result.status).toBe('verified');
      // The dump ran a second time, on the new worker, after the heartbeat timeout.
      const history = await handle.fetchHistory();
      const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
      expect(Math.max(...attempts.map(Number))).toBeGreaterThanOrEqual(2);
      expect(localFiles(result.backupId)).toEqual(
        ['db_full.dump', 'extensions.tsv', 'manifest.json', 'row_counts.tsv', 'schema.sql', 'schema_version.txt', 'version.txt', 'views_reloptions.tsv'],
      );
      const { stdout } = await run(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'backups', 'verify', result.backupId, '--config', configFile, '--json'], { env: stack.workerEnv });
      expect(JSON.parse(stdout)).toMatchObject({ ok: true, status: 'verified' });
    } finally {
      await release();
      worker.kill('SIGKILL');
    }
  });
});

describe('errors', () => {
  it('refuses bad input before anything runs, naming the field', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app') } });
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await stack.client.workflow.start('backupDatabase', { taskQueue: config.temporal.taskQueue, workflowId: `bad-input-${Date.now()}`, args: [{ database: 'Not Valid!', colour: 'red' }] });
      const failure = failureOf(await handle.result().catch((e: unknown) => e));
      expect(failure.type).toBe('InvalidInput');
      expect(failure.message).toMatch(/database: expected a database id/);
      expect(failure.message).toMatch(/unknown field colour/);
      const history = await handle.fetchHistory();
      expect(history.events!.some((e) => e.activityTaskScheduledEventAttributes)).toBe(false);

      const unknown = await stack.client.workflow.start('backupDatabase', { taskQueue: config.temporal.taskQueue, workflowId: `unknown-db-${Date.now()}`, args: [{ database: 'nope' }] });
      const unknownFailure = failureOf(await unknown.result().catch((e: unknown) => e));
      expect(unknownFailure.type).toBe('InvalidInput');
      expect(unknownFailure.message).toMatch(/unknown database "nope"[\s\S]*HINT: databases in the worker's config: app/);
    } finally {
      await stop();
    }
  });

  it('retries an unreachable database with backoff, then fails cleanly', async () => {
    const port = await freePort();
    const config = stack.config({ gone: { host: '127.0.0.1', port, user: 'postgres', dbname: 'app' } });
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await startBackup(stack.client, config, { database: 'gone' });
      const failure = failureOf(await handle.result().catch((e: unknown) => e));
      expect(failure.type).toBe('ConnectionFailed');
      expect(failure.message).toMatch(/cannot connect to postgres@127\.0\.0\.1:\d+\/app[\s\S]*HINT:/);
      const history = await handle.fetchHistory();
      const probeAttempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => Number(e.activityTaskStartedEventAttributes!.attempt));
      // plan (1 attempt) and probe (3 attempts = retry.maxAttempts); the final attempt is recorded once.
      expect(Math.max(...probeAttempts)).toBe(3);
      const manifest = await readManifest(new RepositoryRegistry(config).get('local'), String((await handle.query(statusQuery)).details.backupId));
      expect(manifest).toMatchObject({ status: 'failed', error: { step: 'probe', type: 'ConnectionFailed' } });
    } finally {
      await stop();
    }
  });

  it.each([
    ['a wrong password', () => stack.cluster.url('app').replace(/:[^:@]+@/, ':not-the-password@'), 'AuthenticationFailed'],
    ['a missing database', () => stack.cluster.url('no_such_db'), 'DatabaseNotFound'],
  ])('fails at once, without retrying, on %s', async (_what, url, type) => {
    stack.workerEnv.TEST_BAD_URL = url();
    const config = stack.config({ bad: { url: '${TEST_BAD_URL}' } });
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await startBackup(stack.client, config, { database: 'bad' });
      const failure = failureOf(await handle.result().catch((e: unknown) => e));
      expect(failure.type).toBe(type);
      expect(failure.nonRetryable).toBe(true);
      expect(failure.message).toContain('HINT:');
      expect(failure.message).not.toContain('not-the-password');
      const history = JSON.stringify(await handle.fetchHistory());
      expect(history).not.toContain('not-the-password');
      expect(history).not.toContain(stack.cluster.password);
    } finally {
      await stop();
    }
  });
});

describe('backups verify', () => {
  it('fails on an artifact with one flipped byte', async () => {
    const configFile = stack.writeConfig({ app: { url: stack.databaseUrl('app') } });
    const config = stack.config({ app: { url: stack.databaseUrl('app') } });
    const { stop } = await stack.startWorker(config);
    let result: BackupResult;
    try {
      result = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
    } finally {
      await stop();
    }
    const cli = (args: string[]) => run(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), ...args, '--config', configFile], { env: stack.workerEnv }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    const ok = await cli(['backups', 'verify', result.backupId, '--json']);
    expect(ok.code).toBe(0);

    const { open } = await import('node:fs/promises');
    const file = await open(join(stack.workDir, 'repo', result.backupId, 'db_full.dump'), 'r+');
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, 4096);
    byte[0] = byte[0]! ^ 0xff;
    await file.write(byte, 0, 1, 4096);
    await file.close();

    const bad = await cli(['backups', 'verify', result.backupId, '--json']);
    expect(bad.code).toBe(1);
    const report = JSON.parse(bad.stdout);
    expect(report).toMatchObject({ ok: false, dump: { sha256Matches: false, sizeMatches: true } });
    expect(report.problems.join(' ')).toMatch(/sha256 [0-9a-f]{64} differs/);
    const human = await cli(['backups', 'verify', result.backupId]);
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/FAILED/);
  });
});
