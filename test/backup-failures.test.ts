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

/** pg_dump processes talking to the cluster on `port` (their PGPORT), not other test files'. */
function pgDumpPids(port: number): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        return /(^|\/)pg_dump\0/.test(argv) && argv.includes('--snapshot=') && environ.includes(`PGPORT=${port}`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Polls pg_dump's own write counter and SIGSTOPs it once it has written `bytes`. */
async function freezePgDumpAfter(port: number, bytes: number): Promise<number[]> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    for (const pid of pgDumpPids(port)) {
      try {
        const written = Number(/wchar: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
        if (written > bytes) {
          process.kill(pid, 'SIGSTOP');
          return [pid];
        }
      } catch {
        // finished meanwhile
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`pg_dump never wrote ${bytes} bytes`);
}

async function openMultipartUploads(objectKey: string): Promise<number> {
  const { S3Client, ListMultipartUploadsCommand } = await import('@aws-sdk/client-s3');
  const s3 = stack.s3!;
  const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  const page = await client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: objectKey }));
  return (page.Uploads ?? []).filter((u) => u.Key === objectKey).length;
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

describe.each(['local', 's3'])('a worker killed mid-dump (%s)', (repositoryId) => {
  it('is replaced by a new worker process and the backup still ends complete and verified', async () => {
    // ~20 MB of incompressible rows, so several S3 parts are in flight when the worker dies.
    await stack.cluster.sql(`CREATE DATABASE big_${repositoryId}`);
    await stack.cluster.sql("CREATE EXTENSION pgcrypto; CREATE TABLE blobs AS SELECT g AS id, encode(gen_random_bytes(1000), 'base64') AS payload FROM generate_series(1, 40000) g", `big_${repositoryId}`);
    const databases = { big: { url: stack.databaseUrl(`big_${repositoryId}`), repository: repositoryId } };
    const configFile = stack.writeConfig(databases);
    const config = stack.config(databases);
    const startWorkerProcess = (): ChildProcess =>
      spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configFile], { env: stack.workerEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    let worker = startWorkerProcess();
    let frozen: number[] = [];
    try {
      const handle = await startBackup(stack.client, config, { database: 'big' });
      const backupId = await waitFor('the backup id', async () => (await handle.query(statusQuery)).details.backupId as string | undefined);
      // Once pg_dump has written more than two 5 MiB parts, freeze it so the kill lands
      // mid-stream, with an upload (temp file / multipart upload) open.
      frozen = await freezePgDumpAfter(stack.cluster.port, 12 * 1024 * 1024);
      await new Promise((r) => setTimeout(r, 1_000)); // let in-flight parts land
      worker.kill('SIGKILL');
      await new Promise((r) => worker.once('exit', r));
      const repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
      // The dead attempt left an incomplete write behind; nothing is visible under the key.
      expect(await repository.stat(`${backupId}/db_full.dump`)).toBeUndefined();
      if (repositoryId === 'local') expect(localFiles(backupId).some((f) => f.endsWith('.partial'))).toBe(true);
      else expect(await openMultipartUploads(`pgrunbook/${backupId}/db_full.dump`)).toBeGreaterThanOrEqual(1);
      for (const pid of frozen) process.kill(pid, 'SIGKILL');

      worker = startWorkerProcess();
      const result = (await handle.result()) as BackupResult;
      expect(result.status).toBe('verified');
      // The dump ran again, on the new worker, after the heartbeat timeout.
      const history = await handle.fetchHistory();
      const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => Number(e.activityTaskStartedEventAttributes!.attempt));
      expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
      // The retry removed the dead attempt's leftovers: no partial file, no open multipart upload.
      if (repositoryId === 'local') expect(localFiles(result.backupId).filter((f) => f.startsWith('.'))).toEqual([]);
      else expect(await repository.removeIncompleteWrites(`${result.backupId}/db_full.dump`)).toBe(0);
      const { stdout } = await run(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'backups', 'verify', result.backupId, '--config', configFile, '--json'], { env: stack.workerEnv });
      expect(JSON.parse(stdout)).toMatchObject({ ok: true, status: 'verified' });
      expect(result.size).toBeGreaterThan(12 * 1024 * 1024);
    } finally {
      for (const pid of frozen) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
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

describe('a backup whose stored artifact is corrupted before verification', () => {
  it('fails as VerificationFailed, records the failed check in its manifest, and is never latest good', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app') } });
    const repository = new RepositoryRegistry(config, stack.workerEnv).get('local');
    const plain = await stack.startWorker(config);
    let goodBefore: string;
    try {
      goodBefore = ((await (await startBackup(stack.client, config, { database: 'app', label: 'good' })).result()) as BackupResult).backupId;
    } finally {
      await plain.stop();
    }
    // Flip one byte of the published artifact just before the real verification runs.
    const { stop } = await stack.startWorker(config, (activities) => ({
      ...activities,
      verifyBackup: async (input) => {
        const { open } = await import('node:fs/promises');
        const file = await open(join(stack.workDir, 'repo', input.backupId, input.file), 'r+');
        const byte = Buffer.alloc(1);
        await file.read(byte, 0, 1, 2048);
        byte[0] = byte[0]! ^ 0x01;
        await file.write(byte, 0, 1, 2048);
        await file.close();
        return activities.verifyBackup(input);
      },
    }));
    try {
      const handle = await startBackup(stack.client, config, { database: 'app' });
      const failure = failureOf(await handle.result().catch((e: unknown) => e));
      expect(failure.type).toBe('VerificationFailed');
      expect(failure.message).toMatch(/failed verification: sha256 [0-9a-f]{64} differs/);
      const backupId = String((await handle.query(statusQuery)).details.backupId);
      const manifest = await readManifest(repository, backupId);
      expect(manifest).toMatchObject({ status: 'failed', error: { step: 'verify', type: 'VerificationFailed' }, verification: { ok: false, sha256Matches: false, sizeMatches: true } });
      const backups = await listBackups(repository, 'app');
      expect(backups.find((b) => b.id === backupId)?.state).toBe('failed');
      expect(backups.find((b) => b.state === 'verified')?.id).toBe(goodBefore);
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
