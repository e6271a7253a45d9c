import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Config } from '../../config/schema.js';
import { ARTIFACT, backupId } from '../../repository/layout.js';
import { Manifest } from '../../repository/manifest.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { drillReportKey, type DrillReport } from '../../repository/reports.js';
import { writeAll } from '../../repository/types.js';
import { METRIC, WorkerMetrics } from '../../worker/metrics.js';

// WorkerMetrics on its own (the end-to-end test scrapes a real worker): what a finished runbook
// changes, what it must not, and what a restarted worker reads back from a real local repository.

const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-metrics-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

async function value(metrics: WorkerMetrics, name: string, database = 'app'): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  return (await metric!.get()).values.find((v) => v.labels.database === database)?.value;
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

  it('an unreadable repository is a problem, not a "never"', async () => {
    const config = Config.parse({ repositories: { s3: { type: 's3', bucket: 'nope', endpoint: 'http://127.0.0.1:9', accessKeyIdEnv: 'NO_SUCH_KEY_VAR', secretAccessKeyEnv: 'NO_SUCH_SECRET_VAR' } }, databases: { app: { url: 'postgres://a@h/app' } } });
    const metrics = new WorkerMetrics({ databases: ['app'], processMetrics: false });
    const problems = await metrics.refreshFromRepositories(config, new RepositoryRegistry(config, {}));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^repository s3: /);
    expect(await value(metrics, METRIC.backupLastSuccess)).toBeUndefined();
  });
});
