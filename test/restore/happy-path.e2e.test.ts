import { mkdtempSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startRestore } from '../../client/restore.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll } from '../../repository/types.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { contentFingerprint } from '../support/content.js';
import { demoApp } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
});

afterAll(async () => {
  await stack?.teardown();
});

describe('restoreDatabase, happy path', () => {
  it.each(['swap', 'in-place'] as const)('%s: the live database ends equal to the backup\'s source, and sessions are allowed again', async (strategy) => {
    const app = await demoApp(stack, 'app');
    await app.start();
    const config = stack.config({ app: { url: stack.databaseUrl('app'), repository: 'local', restore: { strategy, approval: { required: false } }, app: app.config } });
    const { stop } = await stack.startWorker(config);
    try {
      const backup = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
      const source = await contentFingerprint(stack.cluster.url('app'));
      // Writes after the backup: the restore must bring the backup's content back.
      await stack.cluster.sql("DELETE FROM public.processed_updates WHERE id % 7 = 0; UPDATE public.users SET display_name = display_name || ' (edited)' WHERE is_admin", 'app');
      const rowsAfterWrites = await stack.cluster.sql('SELECT count(*) FROM public.processed_updates', 'app');
      expect(await contentFingerprint(stack.cluster.url('app'))).not.toEqual(source);

      const pidBefore = app.pid();
      expect(await app.sessions()).toBe(3);
      const handle = await startRestore(stack.client, config, { database: 'app', backup: backup.backupId });
      const result = await handle.result();
      expect(result).toMatchObject({ database: 'app', backupId: backup.backupId, target: 'app', strategy });
      expect(result.verification.ok).toBe(true);
      expect(result.verification.rowCountMismatches).toEqual([]);
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
      expect(await stack.cluster.sql("SELECT datallowconn FROM pg_database WHERE datname = 'app'")).toBe('t');
      // The application was stopped and started again (a new process), and is healthy and connected.
      expect(app.running()).toBe(true);
      expect(app.pid()).not.toBe(pidBefore);
      expect(await app.healthy()).toBe(true);
      expect(await app.sessions()).toBe(3);
      expect(result.downtimeSeconds).toBeGreaterThan(0);
      if (strategy === 'swap') {
        // The old database, with the writes made after the backup, is kept under its pre-restore name.
        expect(result.preRestoreDatabase).toMatch(/^app__pre_restore_\d{14}$/);
        expect(await stack.cluster.sql('SELECT count(*) FROM public.processed_updates', result.preRestoreDatabase!)).toBe(rowsAfterWrites);
        expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_\\_restore\\_%'")).toBe('0');
      } else {
        expect(result.safetyBackupId).toMatch(/^app\/\d{8}T\d{6}Z_pre-restore$/);
      }
      // No secret in the workflow's history (inputs, results, progress signals, errors).
      expect(JSON.stringify(await handle.fetchHistory())).not.toContain(stack.cluster.password);
      const report = JSON.parse((await readAll(new RepositoryRegistry(config, stack.workerEnv).get('local'), result.reportKey!)).toString('utf8'));
      expect(report).toMatchObject({ outcome: 'completed', backupId: backup.backupId, strategy });
      expect(report.steps.map((s: { step: string }) => s.step)).toEqual(
        strategy === 'swap'
          ? ['resolve', 'preflight', 'restore', 'verify', 'scale-down', 'block-connections', 'swap', 'allow-connections', 'scale-up', 'health']
          : ['resolve', 'preflight', 'safety-backup', 'scale-down', 'block-connections', 'drop-and-recreate', 'restore', 'verify', 'allow-connections', 'scale-up', 'health'],
      );
    } finally {
      await stop();
      await app.stop();
    }
  });
});

describe('restoreDatabase, every way of reading the archive', () => {
  it.each([
    { repository: 's3', format: 'custom', jobs: 2, method: 'download' },
    { repository: 's3', format: 'custom', jobs: 1, method: 'stream' },
    { repository: 'local', format: 'custom', jobs: 2, method: 'file' },
    { repository: 'local', format: 'plain', jobs: 2, method: 'stream' },
  ] as const)('$format archive in $repository with -j $jobs: restored by $method, equal to the source', async ({ repository, format, jobs, method }) => {
    // Downloads go to a temp dir of this test's own: other test files restore in parallel.
    const restoreTemp = mkdtempSync(join(stack.workDir, 'restore-tmp-'));
    const config = stack.config({ app: { url: stack.databaseUrl('app'), repository, dump: { format }, restore: { jobs, approval: { required: false }, tempDir: restoreTemp } } });
    const { stop } = await stack.startWorker(config);
    try {
      const backup = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
      const source = await contentFingerprint(stack.cluster.url('app'));
      const result = await (await startRestore(stack.client, config, { database: 'app', backup: backup.backupId, targetDatabase: `copy_${repository}_${format}_${jobs}` })).result();
      expect(result.restore).toMatchObject({ method, jobs: format === 'plain' ? 1 : jobs });
      if (method !== 'file') {
        // The status query carries the bytes moved, reported by the restore activity.
        const { statusQuery } = await import('../../workflows/runbook.js');
        const status = await stack.client.workflow.getHandle('restore-app').query(statusQuery);
        expect(status.progress).toMatchObject({ step: 'restore', phase: method === 'download' ? 'download' : 'restore' });
        expect(status.progress!.bytes).toBeGreaterThan(0);
      }
      expect(await contentFingerprint(stack.cluster.url(result.target))).toEqual(source);
      // No downloaded archive is left behind in the temp directory.
      expect(readdirSync(restoreTemp)).toEqual([]);
      await stack.cluster.sql(`DROP DATABASE ${result.target}`);
    } finally {
      await stop();
    }
  });
});

describe('restoreDatabase behind pgbouncer (the pgbouncer app controller)', () => {
  it('swap: a client connected through pgbouncer keeps its connection, waits out the swap, then reads the restored data', async () => {
    const { startPgbouncer } = await import('../../stack/pgbouncer.js');
    const pg = (await import('pg')).default;
    const bouncer = await startPgbouncer({ upstreamPort: stack.cluster.port, databases: ['app'], users: { postgres: stack.cluster.password }, poolMode: 'transaction' });
    stack.workerEnv.TEST_PGBOUNCER_PASSWORD = bouncer.adminPassword;
    const config = stack.config({
      app: {
        url: stack.databaseUrl('app'),
        repository: 'local',
        restore: { approval: { required: false } },
        app: { type: 'pgbouncer', port: bouncer.port, passwordEnv: 'TEST_PGBOUNCER_PASSWORD', database: 'app' },
      },
    });
    const { stop } = await stack.startWorker(config);
    const client = new pg.Client({ connectionString: bouncer.url('app') });
    try {
      const backup = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
      const expected = await stack.cluster.sql('SELECT count(*) FROM public.processed_updates', 'app');
      await client.connect();
      await stack.cluster.sql('DELETE FROM public.processed_updates WHERE id % 2 = 0', 'app');
      const before = (await client.query<{ n: string }>('SELECT count(*) AS n FROM public.processed_updates')).rows[0]!.n;
      expect(before).not.toBe(expected);

      const result = await (await startRestore(stack.client, config, { database: 'app', backup: backup.backupId })).result();
      expect(result.preRestoreDatabase).toMatch(/^app__pre_restore_/);
      // Same client connection, now served by the restored database.
      expect((await client.query<{ n: string }>('SELECT count(*) AS n FROM public.processed_updates')).rows[0]!.n).toBe(expected);
      // The pool is running again: not paused, not disabled.
      const adminClient = new pg.Client({ connectionString: bouncer.adminUrl() });
      await adminClient.connect();
      const { rows } = await adminClient.query('SHOW DATABASES');
      await adminClient.end();
      expect(rows.find((r: { name: string }) => r.name === 'app')).toMatchObject({ paused: 0, disabled: 0 });
    } finally {
      await client.end().catch(() => undefined);
      await stop();
      await bouncer.stop();
    }
  });
});

describe('restoreDatabase with the kubernetes app controller (real client library, in-repo scale API double)', () => {
  it('in-place: scales the Deployment and StatefulSet to 0 and back to their replicas, and restores the data', async () => {
    const { startKubernetesApi } = await import('../../stack/kubernetes-api.js');
    const api = await startKubernetesApi({
      workloads: [
        { kind: 'Deployment', name: 'backend', replicas: 3 },
        { kind: 'StatefulSet', namespace: 'jobs', name: 'worker', replicas: 2 },
      ],
    });
    const config = stack.config({
      app: {
        url: stack.databaseUrl('app'),
        repository: 'local',
        restore: { strategy: 'in-place', approval: { required: false } },
        app: { type: 'kubernetes', kubeconfig: api.kubeconfigPath, targets: [{ kind: 'Deployment', name: 'backend' }, { kind: 'StatefulSet', namespace: 'jobs', name: 'worker' }] },
      },
    });
    const { stop } = await stack.startWorker(config);
    try {
      const backup = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
      const source = await contentFingerprint(stack.cluster.url('app'));
      await stack.cluster.sql('DELETE FROM public.processed_updates WHERE id % 2 = 1', 'app');
      const result = await (await startRestore(stack.client, config, { database: 'app', backup: backup.backupId })).result();
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
      expect(result.safetyBackupId).toMatch(/_pre-restore$/);
      // Scaled to 0 (pods gone) and back, through the scale subresource.
      const scaleWrites = api.requests.filter((r) => r.method !== 'GET' && r.path.endsWith('/scale')).map((r) => r.path.split('/').slice(-3).join('/'));
      expect(scaleWrites).toEqual(['deployments/backend/scale', 'statefulsets/worker/scale', 'deployments/backend/scale', 'statefulsets/worker/scale']);
      expect(api.replicas('Deployment', 'default', 'backend')).toEqual({ spec: 3, pods: 3, ready: 3 });
      expect(api.replicas('StatefulSet', 'jobs', 'worker')).toEqual({ spec: 2, pods: 2, ready: 2 });
    } finally {
      await stop();
      await api.stop();
    }
  });
});
