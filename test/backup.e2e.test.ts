import { execFileSync } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RepositoryRegistry } from '../repository/registry.js';
import { listBackups, latestGoodBackup, readManifest } from '../repository/catalog.js';
import type { BackupResult } from '../workflows/backup-database.js';
import { contentFingerprint } from './support/content.js';
import { startTestStack, type TestStack } from './support/stack.js';
import { startBackup } from '../client/backup.js';

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
});

afterAll(async () => {
  await stack?.teardown();
});

/** Downloads an artifact and restores it with stock pg_restore into a fresh database. */
async function restoreWithStockTools(repositoryId: string, config: ReturnType<TestStack['config']>, key: string, database: string): Promise<void> {
  const repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
  const file = join(stack.workDir, `${database}.dump`);
  await pipeline(await repository.read(key), createWriteStream(file));
  await stack.cluster.sql(`CREATE DATABASE ${database}`);
  execFileSync(join(stack.cluster.binDir, 'pg_restore'), ['--exit-on-error', '-d', database, file], { env: { ...process.env, ...stack.cluster.env() } });
}

describe.each(['local', 's3'])('backupDatabase to the %s repository', (repositoryId) => {
  it('produces a verified backup that stock pg_restore turns into an identical database', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app'), repository: repositoryId } });
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await startBackup(stack.client, config, { database: 'app', label: 'pre-upgrade' });
      const result = (await handle.result()) as BackupResult;
      expect(result.status).toBe('verified');
      expect(result.repository).toBe(repositoryId);
      expect(result.backupId).toMatch(/^app\/\d{8}T\d{6}Z_pre-upgrade$/);
      expect(result.verification).toMatchObject({ ok: true, sha256Matches: true, sizeMatches: true });
      expect(result.verification.tocEntries).toBeGreaterThan(50);

      // The manifest is complete and agrees with the result.
      const repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
      const manifest = await readManifest(repository, result.backupId);
      expect(manifest).toMatchObject({ status: 'verified', database: 'app', label: 'pre-upgrade', format: 'custom', compression: 'gzip:6', repository: repositoryId });
      expect(manifest.dump).toMatchObject({ file: 'db_full.dump', size: result.size, sha256: result.sha256 });
      expect(manifest.serverVersion).toMatch(/^15\./);
      expect(manifest.pgDumpVersion).toMatch(/pg_dump \(PostgreSQL\) 15/);
      expect(manifest.rowCounts?.['public.processed_updates']).toBe(5000);
      expect(manifest.rowCounts?.['Ops Data.Störungen']).toBe(8);
      expect(manifest.schemaVersion).toMatchObject({ value: '4f2a9c1b7d3e' });
      expect(Object.keys(manifest.files).sort()).toEqual(
        ['db_full.dump', 'extensions.tsv', 'row_counts.tsv', 'schema.sql', 'schema_version.txt', 'version.txt', 'views_reloptions.tsv'].sort(),
      );

      // Seed 003's metadata snapshot sits beside the dump.
      const objects = (await repository.list(`${result.backupId}/`)).map((o) => o.key.split('/').pop());
      expect(objects.sort()).toEqual([...Object.keys(manifest.files), 'manifest.json'].sort());
      const read = async (name: string) => (await import('../repository/types.js')).readAll(repository, `${result.backupId}/${name}`).then((b) => b.toString('utf8'));
      expect(await read('extensions.tsv')).toMatch(/pgcrypto\t/);
      expect(await read('views_reloptions.tsv')).toMatch(/project_activity\tview\tsecurity_invoker=true/);
      expect(await read('schema.sql')).toContain('CREATE TABLE "Ops Data"."Störungen"');
      expect(await read('version.txt')).toMatch(/^PostgreSQL 15/);

      // It is the latest good backup.
      expect((await latestGoodBackup(repository, 'app'))?.id).toBe(result.backupId);

      // The artifact restores with stock pg_restore into a database with identical content.
      const copy = `app_copy_${repositoryId}`;
      await restoreWithStockTools(repositoryId, config, `${result.backupId}/db_full.dump`, copy);
      const [source, restored] = await Promise.all([contentFingerprint(stack.cluster.url('app')), contentFingerprint(stack.cluster.url(copy))]);
      expect(Object.keys(source.tables).length).toBeGreaterThan(10);
      expect(Object.keys(source.largeObjects).length).toBe(5);
      expect(restored).toEqual(source);

      // No secret reaches Temporal: not in inputs, results, failures or anything else in history.
      const history = JSON.stringify(await handle.fetchHistory());
      expect(history).not.toContain(stack.cluster.password);
      expect(history).not.toContain(stack.s3!.secretAccessKey);
      const decoded = Buffer.from(history).toString('utf8');
      expect(decoded).not.toContain(encodeURIComponent(stack.cluster.password));
    } finally {
      await stop();
    }
  });
});

describe('plain-SQL backups (seeds 001/004)', () => {
  it('writes db_full.sql.gz that gunzip | psql restores to identical content', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app'), dump: { format: 'plain', compression: 'gzip:6' } } });
    const { stop } = await stack.startWorker(config);
    try {
      const result = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
      expect(result.format).toBe('plain');
      expect(result.verification).toMatchObject({ ok: true, completeMarker: true, tocEntries: null });
      const path = join(stack.workDir, 'repo', result.backupId, 'db_full.sql.gz');
      await stack.cluster.sql('CREATE DATABASE app_plain');
      // Exactly the runbook's restore: gunzip -c backup.sql.gz | psql
      execFileSync('bash', ['-c', `set -o pipefail; gunzip -c "$1" | "$2" -X -q -v ON_ERROR_STOP=1 -d app_plain`, 'restore', path, join(stack.cluster.binDir, 'psql')], {
        env: { ...process.env, ...stack.cluster.env() },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      expect(await contentFingerprint(stack.cluster.url('app_plain'))).toEqual(await contentFingerprint(stack.cluster.url('app')));
      expect(readFileSync(path).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    } finally {
      await stop();
    }
  });
});

describe('backups list', () => {
  it('lists verified backups newest first and never a failed one as latest good', async () => {
    const config = stack.config({ app: { url: stack.databaseUrl('app') } });
    const repository = new RepositoryRegistry(config, stack.workerEnv).get('local');
    const backups = await listBackups(repository, 'app');
    expect(backups.length).toBeGreaterThanOrEqual(2);
    expect(backups.map((b) => b.timestamp)).toEqual([...backups.map((b) => b.timestamp)].sort().reverse());
    expect(backups.every((b) => b.state === 'verified')).toBe(true);
  });
});

describe('the temporal CLI', () => {
  it('starts backupDatabase from plain JSON input, and finds it by pgrunbook search attributes', async () => {
    const { temporalCli } = await import('../stack/binaries.js');
    const config = stack.config({ app: { url: stack.databaseUrl('app') } });
    const { stop } = await stack.startWorker(config);
    const address = config.temporal.address;
    const workflowId = `cli-started-${Date.now()}`;
    try {
      execFileSync(temporalCli(), [
        'workflow', 'start', '--address', address, '--namespace', config.temporal.namespace,
        '--type', 'backupDatabase', '--task-queue', config.temporal.taskQueue, '--workflow-id', workflowId,
        '--input', '{"database":"app","label":"from-cli"}',
      ]);
      const result = (await stack.client.workflow.getHandle(workflowId).result()) as BackupResult;
      expect(result).toMatchObject({ status: 'verified', database: 'app' });
      expect(result.backupId).toMatch(/_from-cli$/);
      // The workflow upserted its search attributes itself (the CLI set none).
      const query = `PgrunbookDatabase="app" AND PgrunbookOperation="backup" AND PgrunbookLabel="from-cli"`;
      let ids: string[] = [];
      for (let i = 0; i < 50 && !ids.includes(workflowId); i++) {
        const out = execFileSync(temporalCli(), ['workflow', 'list', '--address', address, '--query', query, '-o', 'json']).toString();
        ids = (JSON.parse(out || '[]') as { execution: { workflowId: string } }[]).map((w) => w.execution.workflowId);
        if (!ids.includes(workflowId)) await new Promise((r) => setTimeout(r, 200));
      }
      expect(ids).toEqual([workflowId]);
    } finally {
      await stop();
    }
  });
});
