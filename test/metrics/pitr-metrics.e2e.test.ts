import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startBasebackup } from '../../client/commands/basebackup.js';
import { startPitr } from '../../client/pitr.js';
import { decideApproval } from '../../client/restore.js';
import { readBaseManifest } from '../../pitr/base-catalog.js';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { METRIC, serveMetrics, WorkerMetrics, type MetricsServer } from '../../worker/metrics.js';
import { startPitrWorker } from '../pitr/basebackup-support.js';
import { removeRecoveredCluster, waitForStatus } from '../pitr/pitr-support.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// Point-in-time recovery's metrics end to end: a PostgreSQL 15 cluster archiving through
// `pgrunbook wal-push`, a real base backup and a real point-in-time restore run by basebackupCluster
// and pointInTimeRestore on an in-process worker that holds a WorkerMetrics registry, /metrics
// scraped over HTTP after each; the newest archived segment and the verified base backups come
// from the repository, as the worker's periodic refresh reads them.

let stack: TestStack;
let pitr: PitrSetup;
let metrics: WorkerMetrics;
let server: MetricsServer;
let repositories: RepositoryRegistry;

beforeAll(async () => {
  stack = await startTestStack();
  pitr = await startArchivingCluster(stack);
  repositories = new RepositoryRegistry(pitr.config, pitr.env);
  metrics = new WorkerMetrics({ databases: Object.keys(pitr.config.databases), clusters: [PITR_CLUSTER], processMetrics: false });
  server = await serveMetrics({ metrics, host: '127.0.0.1', port: 0, workerState: () => 'RUNNING' });
}, 180_000);

afterAll(async () => {
  await server?.close();
  await pitr?.stop();
  await stack?.teardown();
});

interface Sample { name: string; labels: Record<string, string>; value: number }

async function scrape(): Promise<Sample[]> {
  const response = await fetch(`${server.url}/metrics`);
  expect(response.status).toBe(200);
  const samples: Sample[] = [];
  for (const line of (await response.text()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    samples.push({ name: m[1]!, labels: Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!])), value: Number(m[3]) });
  }
  return samples;
}

/** The one sample of `name` with exactly these labels. */
function value(samples: Sample[], name: string, labels: Record<string, string> = { cluster: PITR_CLUSTER }): number | undefined {
  const found = samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(Object.entries(labels).sort()));
  expect(found.length, `${name}${JSON.stringify(labels)}`).toBeLessThanOrEqual(1);
  return found[0]?.value;
}

const refresh = async (): Promise<void> => expect(await metrics.refreshFromRepositories(pitr.config, repositories)).toEqual([]);
const nowSeconds = (): number => Date.now() / 1000;

describe('point-in-time recovery on /metrics', () => {
  it('shows "never" before anything ran, then the newest archived WAL segment\'s time from the repository', async () => {
    await refresh();
    let samples = await scrape();
    for (const name of [METRIC.basebackupLastSuccess, METRIC.walLastArchived, METRIC.pitrLastSuccess]) expect(value(samples, name), name).toBe(0);
    expect(value(samples, METRIC.basebackupsVerified)).toBe(0);
    expect(value(samples, METRIC.basebackups, { cluster: PITR_CLUSTER, outcome: 'failed' })).toBe(0);
    expect(value(samples, METRIC.pitrs, { cluster: PITR_CLUSTER, outcome: 'failed' })).toBe(0);
    expect(value(samples, METRIC.basebackupSize)).toBeUndefined();

    await pitr.switchAndArchive();
    await refresh();
    samples = await scrape();
    const repo = repositories.get('local');
    const newestSegment = (await listArchivedWal(repo, PITR_CLUSTER)).filter((f) => f.kind === 'segment').reduce((a, b) => (a.modified > b.modified ? a : b));
    expect(value(samples, METRIC.walLastArchived)).toBe(newestSegment.modified.getTime() / 1000);
    expect(Math.abs(value(samples, METRIC.walLastArchived)! - nowSeconds())).toBeLessThan(60);
  });

  it('a real base backup through Temporal sets its finish time, duration and stored size, counts one verified and none failed, and a new registry reads it back from the repository', async () => {
    const worker = await startPitrWorker(stack, pitr, { metrics });
    onTestFinished(() => worker.stop());
    const result = await (await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result();
    const manifest = await readBaseManifest(repositories.get('local'), result.backupId);

    // Straight from writeBaseManifest, before any refresh.
    let samples = await scrape();
    expect(value(samples, METRIC.basebackupLastSuccess)).toBe(Date.parse(manifest.finishedAt) / 1000);
    expect(Math.abs(value(samples, METRIC.basebackupLastSuccess)! - nowSeconds())).toBeLessThan(60);
    expect(value(samples, METRIC.basebackupSize)).toBe(result.size);
    expect(value(samples, METRIC.basebackupDuration)).toBeGreaterThan(0);
    expect(value(samples, METRIC.basebackupDuration)).toBeLessThanOrEqual(result.durationSeconds);
    expect(value(samples, METRIC.basebackups, { cluster: PITR_CLUSTER, outcome: 'verified' })).toBe(1);
    expect(value(samples, METRIC.basebackups, { cluster: PITR_CLUSTER, outcome: 'failed' })).toBe(0);
    expect(value(samples, METRIC.basebackupsVerified)).toBe(1);
    // Bounded cardinality: a cluster label on every PITR series, nothing per backup or segment.
    const ours = new Set<string>([METRIC.basebackupLastSuccess, METRIC.basebackupDuration, METRIC.basebackupSize, METRIC.basebackupsVerified, METRIC.walLastArchived, METRIC.pitrLastSuccess, METRIC.pitrDuration]);
    for (const sample of samples.filter((s) => ours.has(s.name))) expect(Object.keys(sample.labels), sample.name).toEqual(['cluster']);
    expect(samples.filter((s) => s.name === METRIC.basebackups).map((s) => s.labels.outcome).sort()).toEqual(['failed', 'verified']);
    expect(samples.filter((s) => s.name === METRIC.pitrs)).toHaveLength(6);

    // The refresh agrees (and the count stays 1: the same backup, listed); the backup's WAL is newer.
    const walBefore = value(samples, METRIC.walLastArchived)!;
    await pitr.switchAndArchive();
    await refresh();
    samples = await scrape();
    expect(value(samples, METRIC.basebackupsVerified)).toBe(1);
    expect(value(samples, METRIC.basebackupLastSuccess)).toBe(Date.parse(manifest.finishedAt) / 1000);
    expect(value(samples, METRIC.walLastArchived)).toBeGreaterThanOrEqual(walBefore);

    // A restarted worker: a new registry, seeded from the repository alone.
    const restarted = new WorkerMetrics({ processMetrics: false });
    expect(await restarted.refreshFromRepositories(pitr.config, repositories)).toEqual([]);
    const get = async (name: string): Promise<number | undefined> => (await restarted.registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.cluster === PITR_CLUSTER)?.value;
    for (const name of [METRIC.basebackupLastSuccess, METRIC.basebackupSize, METRIC.basebackupDuration, METRIC.basebackupsVerified, METRIC.walLastArchived]) expect(await get(name), name).toBe(value(samples, name));
  });

  it('a real point-in-time restore, promoted, sets its finish time and duration and counts once as promoted', async () => {
    await pitr.source.sql('CREATE TABLE IF NOT EXISTS organizations (id int PRIMARY KEY); INSERT INTO organizations SELECT g FROM generate_series(1, 10) g ON CONFLICT DO NOTHING', 'app');
    await pitr.switchAndArchive();
    const worker = await startPitrWorker(stack, pitr, { metrics });
    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { latest: true } });
    let dataDir: string | null = null;
    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
      await removeRecoveredCluster(pitr, dataDir);
      await worker.stop();
    });
    const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running');
    expect(waiting.state).toBe('running');
    await decideApproval(stack.client, handle.workflowId, 'approve');
    const result = await handle.result();
    dataDir = result.dataDir;
    expect(result.outcome).toBe('promoted');

    const samples = await scrape();
    expect(value(samples, METRIC.pitrs, { cluster: PITR_CLUSTER, outcome: 'promoted' })).toBe(1);
    expect(value(samples, METRIC.pitrs, { cluster: PITR_CLUSTER, outcome: 'failed' })).toBe(0);
    expect(value(samples, METRIC.pitrDuration)).toBeGreaterThan(0);
    expect(value(samples, METRIC.pitrDuration)).toBeLessThanOrEqual(result.durationSeconds + 1);
    expect(Math.abs(value(samples, METRIC.pitrLastSuccess)! - nowSeconds())).toBeLessThan(60);

    // Read back from the report in the repository by a new registry.
    const restarted = new WorkerMetrics({ processMetrics: false });
    expect(await restarted.refreshFromRepositories(pitr.config, repositories)).toEqual([]);
    const get = async (name: string): Promise<number | undefined> => (await restarted.registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.cluster === PITR_CLUSTER)?.value;
    expect(await get(METRIC.pitrLastSuccess)).toBe(value(samples, METRIC.pitrLastSuccess));
    expect(await get(METRIC.pitrDuration)).toBe(value(samples, METRIC.pitrDuration));
  });
});
