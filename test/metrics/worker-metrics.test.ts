import { mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FinishedPitr } from '../../activities/runbook-metrics.js';
import { Config } from '../../config/schema.js';
import { BASE_ARTIFACT, baseBackupFolder, baseBackupId, pitrReportKey, walPrefix } from '../../pitr/layout.js';
import { BaseBackupManifest } from '../../pitr/manifest.js';
import { ARTIFACT, backupId } from '../../repository/layout.js';
import { Manifest } from '../../repository/manifest.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { drillReportKey, type DrillReport } from '../../repository/reports.js';
import { writeAll, type Repository } from '../../repository/types.js';
import { METRIC, WorkerMetrics } from '../../worker/metrics.js';

// WorkerMetrics on its own (the end-to-end test scrapes a real worker): what a finished runbook
// changes, what it must not, and what a restarted worker reads back from a real local repository.

const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-metrics-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

async function value(metrics: WorkerMetrics, name: string, database = 'app'): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  return (await metric!.get()).values.find((v) => v.labels.database === database)?.value;
}

/** A per-cluster series' value; `outcome` for the by-outcome counters. */
async function clusterValue(metrics: WorkerMetrics, name: string, cluster = 'main', outcome?: string): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  return (await metric!.get()).values.find((v) => v.labels.cluster === cluster && v.labels.outcome === outcome)?.value;
}

function baseManifest(cluster: string, finishedAt: string, status: BaseBackupManifest['status'], size = 1000): BaseBackupManifest {
  const started = new Date(Date.parse(finishedAt) - 300_000);
  const verification = { tool: 'pg_verifybackup 15', ok: status === 'verified', at: finishedAt, detail: null };
  return BaseBackupManifest.parse({
    formatVersion: 1, kind: 'basebackup', id: baseBackupId(cluster, started), cluster, status, startedAt: started.toISOString(), finishedAt, startLsn: '0/2000028', stopLsn: '0/2000100', timeline: 1,
    walRange: { start: '000000010000000000000002', stop: '000000010000000000000002' }, serverVersion: '15.8', serverVersionNum: 150008, systemIdentifier: '7300000000000000000', segmentSize: 16 * 1024 * 1024,
    files: { [`${BASE_ARTIFACT.tar}.zst`]: { size, sha256: 'b'.repeat(64) } }, tarSize: size * 3, compression: 'zstd', verification, error: status === 'failed' ? 'verification failed' : null, workflowId: 'basebackup-x', pgrunbookVersion: 'test',
  });
}

function pitrReport(finishedAt: string, outcome: FinishedPitr['outcome'], runId = finishedAt): FinishedPitr & { startedAt: string } {
  return { workflowId: 'pitr-main', runId, cluster: 'main', outcome, startedAt: new Date(Date.parse(finishedAt) - 600_000).toISOString(), finishedAt, durationSeconds: 600 };
}

function manifest(database: string, finishedAt: string, status: Manifest['status'], size = 1000): Manifest {
  const started = new Date(Date.parse(finishedAt) - 90_000);
  return Manifest.parse({
    manifestVersion: 1, id: backupId(database, started), database, label: null, repository: 'local', status, workflowId: 'backup-x', runId: 'r1',
    format: 'custom', compression: 'gzip:6', dump: status === 'verified' ? { file: ARTIFACT.customDump, size, sha256: 'a'.repeat(64), databaseSizeBytes: 5000 } : null,
    files: {}, serverVersion: '15.8', pgDumpVersion: '15.8', startedAt: started.toISOString(), finishedAt, durationSeconds: 90, rowCounts: null, schemaVersion: null,
    verification: null, error: status === 'failed' ? { step: 'probe', type: 'ConnectionFailed', message: 'refused' } : null, pgrunbookVersion: 'test',
  });
}

function drill(finishedAt: string, outcome: DrillReport['outcome'], rto: number | null = 12.5): DrillReport {
  return {
    report_version: 1, kind: 'drill', pgrunbook_version: 'test', workflow_id: `drill-${finishedAt}`, run_id: 'r1', database: 'app', repository: 'local', backup_id: null,
    backup_started_at: null, started_at: new Date(Date.parse(finishedAt) - 60_000).toISOString(), finished_at: finishedAt, duration_seconds: 60, outcome,
    restore_success: outcome === 'passed', target: null, rto_seconds: rto, restore_seconds: rto, rpo_seconds: rto === null ? null : 3600, schema_version_before: null,
    schema_version_after: null, row_counts_before: null, row_counts_after: null, canary_found: null, checks: [], steps: [], teardown: { state: 'done', detail: null }, error: null, requested_by: null,
  };
}

describe('WorkerMetrics', () => {
  it('serves exactly the seed\'s metric names plus their restore and drill counterparts', async () => {
    const names = (await new WorkerMetrics({ processMetrics: false }).registry.getMetricsAsJSON()).map((m) => m.name).sort();
    expect(names).toEqual(Object.values(METRIC).sort());
    expect(names).toEqual(expect.arrayContaining(['postgresql_backup_last_success_timestamp', 'postgresql_backup_duration_seconds', 'postgresql_backup_size_bytes']));
  });

  it('a verified backup sets last success, duration and size; a failed one counts once however often its report is retried', async () => {
    const metrics = new WorkerMetrics({ databases: ['app'], processMetrics: false });
    expect(await value(metrics, METRIC.backupFailures)).toBe(0);
    metrics.backupFinished(manifest('app', '2026-11-21T02:01:30.000Z', 'verified', 4242));
    expect(await value(metrics, METRIC.backupLastSuccess)).toBe(Date.parse('2026-11-21T02:01:30.000Z') / 1000);
    expect(await value(metrics, METRIC.backupSize)).toBe(4242);
    expect(await value(metrics, METRIC.backupDuration)).toBe(90);
    const failed = manifest('app', '2026-11-22T02:01:30.000Z', 'failed');
    metrics.backupFinished(failed);
    metrics.backupFinished(failed);
    metrics.backupFinished(manifest('app', '2026-11-23T02:01:30.000Z', 'cancelled'));
    expect(await value(metrics, METRIC.backupFailures)).toBe(1);
    // A failure leaves the last success alone: the BackupFailed alert measures its age.
    expect(await value(metrics, METRIC.backupLastSuccess)).toBe(Date.parse('2026-11-21T02:01:30.000Z') / 1000);
    // Older news (a seed read after a live update) never overwrites newer.
    metrics.backupFinished(manifest('app', '2026-11-20T02:01:30.000Z', 'verified', 1));
    expect(await value(metrics, METRIC.backupSize)).toBe(4242);
  });

  it('a drill sets run, result, RTO and RPO; a failed one before any restore clears RTO/RPO; a cancelled one changes nothing', async () => {
    const metrics = new WorkerMetrics({ databases: ['app'], processMetrics: false });
    metrics.drillFinished(drill('2026-11-07T10:30:00.000Z', 'passed'));
    expect(await value(metrics, METRIC.drillLastResult)).toBe(1);
    expect(await value(metrics, METRIC.drillRto)).toBe(12.5);
    expect(await value(metrics, METRIC.drillRpo)).toBe(3600);
    metrics.drillFinished(drill('2026-12-05T10:30:00.000Z', 'failed', null));
    expect(await value(metrics, METRIC.drillLastResult)).toBe(0);
    expect(await value(metrics, METRIC.drillRto)).toBeUndefined();
    expect(await value(metrics, METRIC.drillLastRun)).toBe(Date.parse('2026-12-05T10:30:00.000Z') / 1000);
    expect(await value(metrics, METRIC.drillLastSuccess)).toBe(Date.parse('2026-11-07T10:30:00.000Z') / 1000);
    expect(await value(metrics, METRIC.drillFailures)).toBe(1);
    metrics.drillFinished(drill('2026-12-06T10:30:00.000Z', 'cancelled'));
    expect(await value(metrics, METRIC.drillLastRun)).toBe(Date.parse('2026-12-05T10:30:00.000Z') / 1000);
  });

  it('a completed restore sets last success, duration and downtime; failed ones count, rejected ones do not', async () => {
    const metrics = new WorkerMetrics({ databases: ['app'], processMetrics: false });
    const restore = { workflowId: 'restore-app', runId: 'r1', database: 'app', outcome: 'completed' as const, finishedAt: '2026-11-21T12:00:00.000Z', durationSeconds: 300, downtimeSeconds: 42 };
    metrics.restoreFinished(restore);
    expect(await value(metrics, METRIC.restoreDowntime)).toBe(42);
    expect(await value(metrics, METRIC.restoreDuration)).toBe(300);
    metrics.restoreFinished({ ...restore, runId: 'r2', outcome: 'failed', finishedAt: '2026-11-22T12:00:00.000Z' });
    metrics.restoreFinished({ ...restore, runId: 'r3', outcome: 'rejected', finishedAt: '2026-11-23T12:00:00.000Z' });
    expect(await value(metrics, METRIC.restoreFailures)).toBe(1);
    expect(await value(metrics, METRIC.restoreLastSuccess)).toBe(Date.parse('2026-11-21T12:00:00.000Z') / 1000);
  });

  it('seeds from a repository: the newest verified backup (not a newer failed one), the newest drill, 0 where there is none; failures are not re-counted', async () => {
    const config = Config.parse({ repositories: { local: { type: 'local', path: join(workDir, 'repo') } }, databases: { app: { url: 'postgres://a@h/app' }, fresh: { url: 'postgres://a@h/fresh' } } });
    const repositories = new RepositoryRegistry(config);
    const repo = repositories.get('local');
    for (const m of [manifest('app', '2026-11-20T02:01:30.000Z', 'verified', 10), manifest('app', '2026-11-21T02:01:30.000Z', 'verified', 20), manifest('app', '2026-11-22T02:01:30.000Z', 'failed')]) {
      await writeAll(repo, `${m.id}/${ARTIFACT.manifest}`, JSON.stringify(m));
    }
    for (const report of [drill('2026-11-07T10:30:00.000Z', 'passed', 30), drill('2026-12-05T10:30:00.000Z', 'failed', 31)]) {
      await writeAll(repo, drillReportKey('app', new Date(report.started_at)), JSON.stringify(report));
    }
    const metrics = new WorkerMetrics({ databases: ['app', 'fresh'], processMetrics: false });
    expect(await metrics.refreshFromRepositories(config, repositories)).toEqual([]);
    expect(await value(metrics, METRIC.backupLastSuccess)).toBe(Date.parse('2026-11-21T02:01:30.000Z') / 1000);
    expect(await value(metrics, METRIC.backupSize)).toBe(20);
    expect(await value(metrics, METRIC.backupFailures)).toBe(0);
    expect(await value(metrics, METRIC.drillLastResult)).toBe(0);
    expect(await value(metrics, METRIC.drillRto)).toBe(31);
    expect(await value(metrics, METRIC.drillLastSuccess)).toBe(Date.parse('2026-11-07T10:30:00.000Z') / 1000);
    expect(await value(metrics, METRIC.drillFailures)).toBe(0);
    // Nothing recorded: 0, which the alerts read as "never".
    expect(await value(metrics, METRIC.restoreLastSuccess)).toBe(0);
    for (const name of [METRIC.backupLastSuccess, METRIC.drillLastRun, METRIC.drillLastSuccess]) expect(await value(metrics, name, 'fresh')).toBe(0);
    expect(await value(metrics, METRIC.backupSize, 'fresh')).toBeUndefined();
  });

  it('a base backup sets last success, duration and stored size, and counts by outcome once however often its manifest is rewritten', async () => {
    const metrics = new WorkerMetrics({ clusters: ['main'], processMetrics: false });
    expect(await clusterValue(metrics, METRIC.basebackups, 'main', 'failed')).toBe(0);
    const verified = baseManifest('main', '2026-11-22T01:05:00.000Z', 'verified', 7777);
    metrics.basebackupFinished(verified);
    metrics.basebackupFinished(verified);
    expect(await clusterValue(metrics, METRIC.basebackupLastSuccess)).toBe(Date.parse('2026-11-22T01:05:00.000Z') / 1000);
    expect(await clusterValue(metrics, METRIC.basebackupDuration)).toBe(300);
    expect(await clusterValue(metrics, METRIC.basebackupSize)).toBe(7777);
    expect(await clusterValue(metrics, METRIC.basebackupsVerified)).toBe(1);
    expect(await clusterValue(metrics, METRIC.basebackups, 'main', 'verified')).toBe(1);
    // Failed verification: counted, never a success; an older verified one never overwrites the newer.
    metrics.basebackupFinished(baseManifest('main', '2026-11-29T01:05:00.000Z', 'failed'));
    metrics.basebackupFinished(baseManifest('main', '2026-11-15T01:05:00.000Z', 'verified', 1));
    expect(await clusterValue(metrics, METRIC.basebackups, 'main', 'failed')).toBe(1);
    expect(await clusterValue(metrics, METRIC.basebackupSize)).toBe(7777);
    expect(await clusterValue(metrics, METRIC.basebackupsVerified)).toBe(2);
  });

  it('a point-in-time restore counts by outcome once per run; only a promoted or replacing one sets last success and duration', async () => {
    const metrics = new WorkerMetrics({ clusters: ['main'], processMetrics: false });
    for (const outcome of ['promoted', 'replaced', 'discarded', 'failed', 'cancelled', 'rejected']) expect(await clusterValue(metrics, METRIC.pitrs, 'main', outcome), outcome).toBe(0);
    metrics.pitrFinished(pitrReport('2026-11-22T14:40:00.000Z', 'promoted'));
    expect(await clusterValue(metrics, METRIC.pitrLastSuccess)).toBe(Date.parse('2026-11-22T14:40:00.000Z') / 1000);
    expect(await clusterValue(metrics, METRIC.pitrDuration)).toBe(600);
    const failed = pitrReport('2026-11-23T14:40:00.000Z', 'failed');
    metrics.pitrFinished(failed);
    metrics.pitrFinished(failed);
    metrics.pitrFinished({ ...pitrReport('2026-11-24T14:40:00.000Z', 'discarded'), durationSeconds: 5 });
    expect(await clusterValue(metrics, METRIC.pitrs, 'main', 'failed')).toBe(1);
    expect(await clusterValue(metrics, METRIC.pitrs, 'main', 'discarded')).toBe(1);
    expect(await clusterValue(metrics, METRIC.pitrLastSuccess)).toBe(Date.parse('2026-11-22T14:40:00.000Z') / 1000);
    expect(await clusterValue(metrics, METRIC.pitrDuration)).toBe(600);
  });

  it('reads a cluster from its repository: the newest verified base backup and their count, the newest point-in-time restore put to use, and the newest WAL segment by listing only the newest folders', async () => {
    const repoPath = join(workDir, 'pitr-repo');
    const config = Config.parse({
      repositories: { local: { type: 'local', path: repoPath } },
      databases: { app: { url: 'postgres://a@h/app' } },
      clusters: { main: { database: 'app', dataDirectory: '/nonexistent' } },
    });
    const real = new RepositoryRegistry(config).get('local');
    // Every LIST the refresh makes, by prefix: the WAL archive must not be listed whole.
    const listed: string[] = [];
    const repo: Repository = Object.assign(Object.create(real) as Repository, { list: (prefix: string) => (listed.push(prefix), real.list(prefix)) });
    const repositories = { get: () => repo } as unknown as RepositoryRegistry;
    for (const m of [baseManifest('main', '2026-11-15T01:05:00.000Z', 'verified', 10), baseManifest('main', '2026-11-22T01:05:00.000Z', 'verified', 20), baseManifest('main', '2026-11-29T01:05:00.000Z', 'failed')]) {
      await writeAll(repo, `${baseBackupFolder(m.id)}${BASE_ARTIFACT.manifest}`, JSON.stringify(m));
    }
    for (const report of [pitrReport('2026-11-23T10:00:00.000Z', 'replaced'), pitrReport('2026-11-24T10:00:00.000Z', 'failed')]) {
      await writeAll(repo, pitrReportKey('main', new Date(report.startedAt)), JSON.stringify(report));
    }
    const archive = async (name: string, at: string, folder = name.slice(0, 16)): Promise<void> => {
      const key = `${walPrefix('main')}${folder}/${name}-${'c'.repeat(64)}.zst`;
      await writeAll(repo, key, 'wal');
      utimesSync(join(repoPath, key), new Date(at), new Date(at));
    };
    // Timeline 1 over two log folders, then a promotion to timeline 2 (its history file, and
    // segments from the switch point on).
    await archive('000000010000000000000001', '2026-11-22T00:00:00Z');
    await archive('0000000100000000000000FF', '2026-11-22T06:00:00Z');
    await archive('000000010000000100000000', '2026-11-22T07:00:00Z');
    await archive('00000002.history', '2026-11-22T07:30:00Z', 'timelines');
    await archive('000000020000000100000000', '2026-11-22T08:00:00Z');

    const metrics = new WorkerMetrics({ processMetrics: false });
    expect(await metrics.refreshFromRepositories(config, repositories)).toEqual([]);
    expect(await clusterValue(metrics, METRIC.basebackupLastSuccess)).toBe(Date.parse('2026-11-22T01:05:00.000Z') / 1000);
    expect(await clusterValue(metrics, METRIC.basebackupSize)).toBe(20);
    expect(await clusterValue(metrics, METRIC.basebackupsVerified)).toBe(2);
    expect(await clusterValue(metrics, METRIC.basebackups, 'main', 'failed')).toBe(0);
    expect(await clusterValue(metrics, METRIC.pitrLastSuccess)).toBe(Date.parse('2026-11-23T10:00:00.000Z') / 1000);
    expect(await clusterValue(metrics, METRIC.walLastArchived)).toBe(Date.parse('2026-11-22T08:00:00Z') / 1000);

    // Timeline 2 goes on into its next folder; timeline 3 has a history file but no segment yet.
    await archive('000000020000000100000001', '2026-11-22T09:00:00Z');
    await archive('000000020000000200000000', '2026-11-22T10:00:00Z');
    await archive('00000003.history', '2026-11-22T10:30:00Z', 'timelines');
    listed.length = 0;
    expect(await metrics.refreshFromRepositories(config, repositories)).toEqual([]);
    expect(await clusterValue(metrics, METRIC.walLastArchived)).toBe(Date.parse('2026-11-22T10:00:00Z') / 1000);
    const wal = walPrefix('main');
    expect(listed.filter((p) => p.startsWith(wal))).toEqual([`${wal}timelines/`, `${wal}00000003`, `${wal}0000000200000001/`, `${wal}0000000200000002/`, `${wal}0000000200000003/`]);
    // Quiet: the next refresh lists the timelines, the remembered folder and the one after it.
    listed.length = 0;
    await metrics.refreshFromRepositories(config, repositories);
    expect(listed.filter((p) => p.startsWith(wal))).toEqual([`${wal}timelines/`, `${wal}00000003`, `${wal}0000000200000002/`, `${wal}0000000200000003/`]);
  });

  it('an unreadable repository is a problem, not a "never"', async () => {
    const config = Config.parse({ repositories: { s3: { type: 's3', bucket: 'nope', endpoint: 'http://127.0.0.1:9', accessKeyIdEnv: 'NO_SUCH_KEY_VAR', secretAccessKeyEnv: 'NO_SUCH_SECRET_VAR' } }, databases: { app: { url: 'postgres://a@h/app' } } });
    const metrics = new WorkerMetrics({ databases: ['app'], processMetrics: false });
    const problems = await metrics.refreshFromRepositories(config, new RepositoryRegistry(config, {}));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^repository s3: /);
    expect(await value(metrics, METRIC.backupLastSuccess)).toBeUndefined();
  });
});
