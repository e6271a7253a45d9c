import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startBackup } from '../../client/backup.js';
import { startDrill } from '../../client/drill.js';
import type { Config } from '../../config/schema.js';
import { readManifest } from '../../repository/catalog.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { drillReportKey, listDrillReports, type DrillReport } from '../../repository/reports.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { freePort } from '../../stack/ports.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import type { DrillResult } from '../../workflows/restore-drill.js';
import { removeDrillCluster } from '../../postgres/drill-cluster.js';
import { processesMatching } from '../support/processes.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// Restore drills end to end on the real stack: the throwaway-cluster target and the drill-server
// target, local and S3 repositories, a passing drill and the ways a drill must fail. Teardown is
// checked every time: no drill cluster directory, no postmaster, no port, no scratch database.

let stack: TestStack;
let webhook: { server: Server; url: string; received: { text: string }[] };

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
  const received: { text: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body) as { text: string });
      res.writeHead(200).end('ok');
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  webhook = { server, url: `http://127.0.0.1:${port}/services/T000/B000/secret-token`, received };
  stack.workerEnv.TEST_DRILL_WEBHOOK = webhook.url;
});

afterAll(async () => {
  // A test that failed mid-drill (its Temporal server gone with it) may leave a running cluster: stop it too.
  for (const name of readdirSync(clustersParent)) await removeDrillCluster(join(clustersParent, name)).catch(() => undefined);
  rmSync(clustersParent, { recursive: true, force: true });
  webhook?.server.close();
  await stack?.teardown();
});

type Databases = Record<string, object>;

/** This file's drill clusters go under their own directory, so parallel test files cannot confuse the teardown checks. */
// (In the OS temp dir, not the stack's 0700 work dir: the server runs as postgres and must reach it.)
const clustersParent = mkdtempSync(join(tmpdir(), 'pgrunbook-test-drills-'));
chmodSync(clustersParent, 0o755);
const clustersDir = (): string => clustersParent;

function drillConfig(repository: 'local' | 's3', drill: object = {}, extra: object = {}): Config {
  const databases: Databases = { app: { url: stack.databaseUrl('app'), repository, drill: { target: { type: 'cluster', dir: clustersDir() }, ...drill }, ...extra } };
  return stack.config(databases, { notifications: { webhook: { urlEnv: 'TEST_DRILL_WEBHOOK' } } });
}

async function backup(config: Config): Promise<BackupResult> {
  return (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
}

/** Runs a drill to its end; a failed one is returned as the report it wrote. */
async function drill(config: Config, input: { backup?: string; canary?: boolean } = {}): Promise<{ report: DrillReport; failure?: WorkflowFailedError; history: string }> {
  const handle = await startDrill(stack.client, config, { database: 'app', ...input });
  try {
    const result: DrillResult = await handle.result();
    return { report: result.report, history: JSON.stringify(await handle.fetchHistory()) };
  } catch (error) {
    if (!(error instanceof WorkflowFailedError)) throw error;
    const repository = new RepositoryRegistry(config, stack.workerEnv).get(config.databases.app!.repository!);
    const report = (await listDrillReports(repository, 'app')).find((r) => r.workflow_id === handle.workflowId);
    expect(report, 'a failed drill still writes its report').toBeDefined();
    return { report: report!, failure: error, history: JSON.stringify(await handle.fetchHistory()) };
  }
}

/** Nothing of the drill is left: no cluster directory or postmaster, the port is free, no scratch database. */
async function expectTornDown(report: DrillReport): Promise<void> {
  expect(report.teardown.state === 'done' || report.teardown.state === 'not-needed').toBe(true);
  const leftovers = existsSync(clustersDir()) ? readdirSync(clustersDir()) : [];
  expect(leftovers).toEqual([]);
  const postmasters = processesMatching(new RegExp(`${clustersDir()}/pgrunbook-drill-`));
  expect(postmasters).toEqual([]);
  expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_\\_drill\\_%'")).toBe('0');
  const port = /port (\d+)/.exec(report.target?.server ?? '')?.[1];
  if (port) expect(readFileSync('/proc/net/unix', 'utf8')).not.toContain(`.s.PGSQL.${port}`);
}

/**
 * Backs up, lets `tamper` damage what was stored, then drills that backup: the drill must fail
 * (DrillFailed), be told to the webhook once, and leave nothing behind.
 */
async function failedDrillOf<T>(repository: 'local' | 's3', tamper: (repo: Repository, made: BackupResult) => Promise<T>): Promise<{ report: DrillReport; made: BackupResult; tampered: T }> {
  const config = drillConfig(repository);
  const { stop } = await stack.startWorker(config);
  webhook.received.length = 0;
  try {
    const made = await backup(config);
    const tampered = await tamper(new RepositoryRegistry(config, stack.workerEnv).get(repository), made);
    const { report, failure } = await drill(config, { backup: made.backupId });
    expect(failure?.cause).toMatchObject({ type: 'DrillFailed' });
    expect(report).toMatchObject({ outcome: 'failed', restore_success: false });
    expect(webhook.received).toHaveLength(1);
    await expectTornDown(report);
    return { report, made, tampered };
  } finally {
    await stop();
  }
}

function check(report: DrillReport, kind: string) {
  return report.checks.find((c) => c.kind === kind);
}

describe('runRestoreDrill passes', () => {
  it('throwaway cluster, local repository, canary on: a fresh backup carries the canary, every check passes, RTO and RPO measured', async () => {
    const config = drillConfig('local', {
      canary: { enabled: true },
      smokeQueries: [{ name: 'an admin exists', sql: 'SELECT count(*) > 0 FROM public.users WHERE is_admin', expect: true }],
    });
    const { stop } = await stack.startWorker(config);
    try {
      const { report, failure, history } = await drill(config);
      expect(failure).toBeUndefined();
      expect(report).toMatchObject({ outcome: 'passed', restore_success: true, canary_found: true, database: 'app', target: { type: 'cluster', database: 'app' }, error: null });
      expect(report.target!.server_version).toMatch(/^\d+\.\d+/);
      expect(report.steps.map((s) => s.step)).toEqual(['resolve', 'canary', 'backup', 'checksum', 'provision', 'restore', 'checks', 'teardown']);
      expect(report.backup_id).toMatch(/^app\/\d{8}T\d{6}Z_drill$/);
      expect(report.checks.map((c) => [c.kind, c.outcome])).toEqual([
        ['checksum', 'pass'], ['row-counts', 'pass'], ['schema-version', 'pass'], ['canary', 'pass'], ['smoke-query', 'pass'], ['query-budget', 'pass'],
      ]);
      // Seed 002's criteria: schema version and row counts equal before and after.
      expect(report.schema_version_before).toBe('4f2a9c1b7d3e');
      expect(report.schema_version_after).toBe('4f2a9c1b7d3e');
      expect(report.row_counts_after).toEqual(report.row_counts_before);
      expect(report.row_counts_before!['public.users']).toBeGreaterThan(0);
      expect(report.row_counts_before!['public.pgrunbook_canary']).toBeGreaterThanOrEqual(1);
      expect(report.rto_seconds).toBeGreaterThan(0);
      expect(report.rto_seconds!).toBeGreaterThanOrEqual(report.restore_seconds!);
      // The backup was taken moments before: the achieved RPO is the backup's age then.
      expect(report.rpo_seconds).toBeGreaterThanOrEqual(0);
      expect(report.rpo_seconds).toBeLessThan(120);
      expect(check(report, 'checksum')!.actual).toMatchObject({ sha256: (check(report, 'checksum')!.expected as { sha256: string }).sha256 });
      // The report is in the repository under reports/, as returned.
      const stored = JSON.parse((await readAll(new RepositoryRegistry(config, stack.workerEnv).get('local'), drillReportKey('app', new Date(report.started_at)))).toString('utf8')) as DrillReport;
      expect(stored).toEqual(report);
      expect(history).not.toContain(stack.cluster.password);
      // A passed drill is told too (notifications.webhook.events includes drill-result by default).
      expect(webhook.received.map((m) => m.text)).toEqual([expect.stringMatching(/restore drill of \*app\* passed: RTO/)]);
      await expectTornDown(report);
    } finally {
      await stop();
    }
  });

  it('drill server target, S3 repository, a given backup: restored into a scratch database that is dropped afterwards', async () => {
    stack.workerEnv.TEST_DRILL_PASSWORD = stack.cluster.password;
    const config = drillConfig('s3', { target: { type: 'server', host: '127.0.0.1', port: stack.cluster.port, user: 'postgres', passwordEnv: 'TEST_DRILL_PASSWORD' } });
    const { stop } = await stack.startWorker(config);
    try {
      const made = await backup(config);
      const { report, failure } = await drill(config, { backup: made.backupId });
      expect(failure).toBeUndefined();
      expect(report).toMatchObject({ outcome: 'passed', restore_success: true, backup_id: made.backupId, canary_found: null, target: { type: 'server' } });
      expect(report.target!.database).toMatch(/^app__drill_\d{14}$/);
      expect(report.target!.server_version).toMatch(/^\d+\.\d+/);
      expect(check(report, 'canary')).toMatchObject({ outcome: 'skipped' });
      expect(report.steps.map((s) => s.step)).toEqual(['resolve', 'checksum', 'provision', 'restore', 'checks', 'teardown']);
      expect(report.row_counts_after).toEqual(report.row_counts_before);
      await expectTornDown(report);
    } finally {
      await stop();
    }
  });
});

describe('runRestoreDrill fails, notifies, and still tears down', () => {
  it('missing canary: the canary table is excluded from the dump, so the fresh backup lacks the marker', async () => {
    const config = drillConfig('local', { canary: { enabled: true } }, { dump: { excludeTables: ['public.pgrunbook_canary'] } });
    const { stop } = await stack.startWorker(config);
    webhook.received.length = 0;
    try {
      const { report, failure, history } = await drill(config);
      expect(failure?.cause).toMatchObject({ type: 'DrillFailed' });
      expect(report).toMatchObject({ outcome: 'failed', restore_success: false, canary_found: false, error: { step: 'checks' } });
      // The webhook URL is the credential: it stays in the worker.
      expect(history).not.toContain('secret-token');
      expect(JSON.stringify(report)).not.toContain('secret-token');
      expect(check(report, 'canary')).toMatchObject({ outcome: 'fail', actual: 'missing' });
      expect(check(report, 'row-counts')).toMatchObject({ outcome: 'pass' });
      expect(report.steps.map((s) => s.step)).toEqual(['resolve', 'canary', 'backup', 'checksum', 'provision', 'restore', 'checks', 'teardown']);
      expect(webhook.received).toHaveLength(1);
      expect(webhook.received[0]!.text).toMatch(/drill of \*app\* FAILED: canary present: expected .*got "missing"/);
      await expectTornDown(report);
    } finally {
      await stop();
    }
  });

  it.each(['local', 's3'] as const)('row-count mismatch (%s): the manifest says one more user than the dump holds', async (repository) => {
    const { report, tampered: users } = await failedDrillOf(repository, async (repo, made) => {
      const manifest = await readManifest(repo, made.backupId);
      const users = manifest.rowCounts!['public.users']!;
      await writeAll(repo, `${made.backupId}/manifest.json`, JSON.stringify({ ...manifest, rowCounts: { ...manifest.rowCounts, 'public.users': users + 1 } }));
      return users;
    });
    expect(report).toMatchObject({ error: { step: 'checks' } });
    expect(check(report, 'row-counts')).toMatchObject({ outcome: 'fail', actual: { mismatches: [{ table: 'public.users', expected: users + 1, actual: users }] } });
    expect(report.row_counts_before!['public.users']).toBe(users + 1);
    expect(report.row_counts_after!['public.users']).toBe(users);
  });

  it.each(['local', 's3'] as const)('broken artifact (%s): one flipped bit fails the checksum; nothing is provisioned', async (repository) => {
    const { report, made } = await failedDrillOf(repository, async (repo, made) => {
      const key = `${made.backupId}/db_full.dump`;
      const bytes = await readAll(repo, key);
      const middle = Math.floor(bytes.length / 2);
      bytes[middle] = bytes[middle]! ^ 0x01;
      await writeAll(repo, key, bytes);
    });
    expect(report).toMatchObject({ error: { step: 'checksum' }, teardown: { state: 'not-needed' }, rto_seconds: null });
    expect(check(report, 'checksum')).toMatchObject({ outcome: 'fail', expected: { sha256: made.sha256 } });
    expect((check(report, 'checksum')!.actual as { sha256: string }).sha256).not.toBe(made.sha256);
    expect(report.checks.filter((c) => c.kind !== 'checksum').every((c) => c.outcome === 'skipped')).toBe(true);
    expect(report.steps.map((s) => s.step)).toEqual(['resolve', 'checksum']);
  });

  it('a backup that failed verification is refused, and the refusal is a reported, notified failed drill', async () => {
    const { report } = await failedDrillOf('local', async (repo, made) => {
      const manifest = await readManifest(repo, made.backupId);
      await writeAll(repo, `${made.backupId}/manifest.json`, JSON.stringify({ ...manifest, status: 'failed', error: { step: 'verify', type: 'VerificationFailed', message: 'sha256 differs' } }));
    });
    expect(report).toMatchObject({ backup_id: null, error: { step: 'resolve', type: 'BackupNotFound' } });
    expect(report.error!.message).toContain('only verified backups are restored');
  });

  it('cancelled during the restore: the cluster is torn down and the drill is reported cancelled, not notified', async () => {
    await stack.cluster.sql("CREATE TABLE IF NOT EXISTS public.drill_bulk AS SELECT g AS id, encode(gen_random_bytes(700), 'base64') AS payload FROM generate_series(1, 60000) g", 'app');
    const config = drillConfig('local');
    const { stop } = await stack.startWorker(config);
    webhook.received.length = 0;
    try {
      await backup(config);
      const handle = await startDrill(stack.client, config, { database: 'app' });
      const deadline = Date.now() + 60_000;
      while ((await handle.query('status') as { currentStep: string | null }).currentStep !== 'restore') {
        if (Date.now() > deadline) throw new Error('the drill never reached its restore step');
        await new Promise((r) => setTimeout(r, 50));
      }
      await handle.cancel();
      await expect(handle.result()).rejects.toThrow();
      const report = (await listDrillReports(new RepositoryRegistry(config, stack.workerEnv).get('local'), 'app')).find((r) => r.workflow_id === handle.workflowId)!;
      expect(report).toMatchObject({ outcome: 'cancelled', restore_success: false, teardown: { state: 'done' } });
      expect(report.steps.map((s) => s.step)).toEqual(['resolve', 'checksum', 'provision', 'restore', 'teardown']);
      expect(webhook.received).toHaveLength(0);
      await expectTornDown(report);
    } finally {
      await stop();
      await stack.cluster.sql('DROP TABLE public.drill_bulk', 'app');
    }
  });
});
