import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { FinishedPitr, FinishedRestore, RunbookMetrics } from '../activities/runbook-metrics.js';
import { clusterRepositoryId, type Config } from '../config/schema.js';
import { listBaseBackups } from '../pitr/base-catalog.js';
import { pitrPrefix, walPrefix } from '../pitr/layout.js';
import type { BaseBackupManifest } from '../pitr/manifest.js';
import { parseStoredWalName } from '../pitr/wal-inventory.js';
import { parseWalFileName, segmentLogFolder } from '../pitr/wal-names.js';
import { readManifest } from '../repository/catalog.js';
import { ARTIFACT, parseBackupId } from '../repository/layout.js';
import type { Manifest } from '../repository/manifest.js';
import type { RepositoryRegistry } from '../repository/registry.js';
import { listDrillReports, listRestoreReports, type DrillReport } from '../repository/reports.js';
import { readAll, type Repository } from '../repository/types.js';

// The worker's Prometheus metrics (seed 001 §7): one registry per worker process, fed by the
// activities that end a runbook (writeManifest, writeRestoreReport, writeDrillReport) and seeded
// from the repositories at start, so a restarted worker reports the last success it can prove
// rather than "never". Point-in-time recovery is per cluster (label `cluster`, config.clusters):
// base backups (writeBaseManifest), point-in-time restores (writePitrReport) and the newest
// archived WAL segment, which only the repository knows (wal-push runs outside the worker).
// Timestamps are Unix seconds; a last-success timestamp of 0 means the repositories hold none; a
// missing series means pgrunbook could not tell (repository unreadable).

/** Every pgrunbook metric, by what it measures. Names are the seed's and never change. */
export const METRIC = {
  backupLastSuccess: 'postgresql_backup_last_success_timestamp',
  backupDuration: 'postgresql_backup_duration_seconds',
  backupSize: 'postgresql_backup_size_bytes',
  backupFailures: 'postgresql_backup_failures_total',
  restoreLastSuccess: 'postgresql_restore_last_success_timestamp',
  restoreDuration: 'postgresql_restore_duration_seconds',
  restoreDowntime: 'postgresql_restore_downtime_seconds',
  restoreFailures: 'postgresql_restore_failures_total',
  drillLastSuccess: 'postgresql_drill_last_success_timestamp',
  drillLastRun: 'postgresql_drill_last_run_timestamp',
  drillLastResult: 'postgresql_drill_last_result',
  drillRto: 'postgresql_drill_rto_seconds',
  drillRpo: 'postgresql_drill_rpo_seconds',
  drillFailures: 'postgresql_drill_failures_total',
  basebackupLastSuccess: 'postgresql_basebackup_last_success_timestamp',
  basebackupDuration: 'postgresql_basebackup_duration_seconds',
  basebackupSize: 'postgresql_basebackup_size_bytes',
  basebackups: 'postgresql_basebackups_total',
  basebackupsVerified: 'postgresql_basebackups_verified',
  walLastArchived: 'postgresql_wal_last_archived_timestamp',
  pitrLastSuccess: 'postgresql_pitr_last_success_timestamp',
  pitrDuration: 'postgresql_pitr_duration_seconds',
  pitrs: 'postgresql_pitr_total',
} as const;

/** The outcome label of postgresql_basebackups_total: what the manifest says. */
const BASEBACKUP_OUTCOMES = ['verified', 'failed'] as const satisfies readonly BaseBackupManifest['status'][];
/** The outcome label of postgresql_pitr_total: what the report says. */
const PITR_OUTCOMES = ['promoted', 'replaced', 'discarded', 'failed', 'cancelled', 'rejected'] as const satisfies readonly FinishedPitr['outcome'][];
/** A point-in-time restore whose recovered cluster was put to use (the workflow calls it completed). */
const PITR_SUCCESS: readonly FinishedPitr['outcome'][] = ['promoted', 'replaced'];

/** How often the last-success gauges are re-read from the repositories (another worker's backups count too). */
const REFRESH_INTERVAL_MS = 10 * 60_000;
/** Failure counts already counted, by runbook run: a retried report activity counts once. */
const COUNTED_LIMIT = 1_000;

type Labels = 'database';
type ClusterLabels = 'cluster';
type Track = 'backup' | 'restore' | 'drill-run' | 'drill-success' | 'basebackup' | 'wal' | 'pitr';

export class WorkerMetrics implements RunbookMetrics {
  readonly registry = new Registry();
  private readonly gauge = (name: string, help: string): Gauge<Labels> => new Gauge({ name, help, labelNames: ['database'], registers: [this.registry] });
  private readonly counter = (name: string, help: string): Counter<Labels> => new Counter({ name, help, labelNames: ['database'], registers: [this.registry] });

  private readonly backupLastSuccess = this.gauge(METRIC.backupLastSuccess, 'When the newest verified backup finished (Unix seconds; 0: none in the repositories).');
  private readonly backupDuration = this.gauge(METRIC.backupDuration, 'How long the newest verified backup took, from workflow start to manifest.');
  private readonly backupSize = this.gauge(METRIC.backupSize, 'Size of the newest verified backup\'s dump file.');
  private readonly backupFailures = this.counter(METRIC.backupFailures, 'Backups that ended failed (cancelled ones are not counted) since the worker started.');
  private readonly restoreLastSuccess = this.gauge(METRIC.restoreLastSuccess, 'When the newest completed restore finished (Unix seconds; 0: none recorded).');
  private readonly restoreDuration = this.gauge(METRIC.restoreDuration, 'How long the newest completed restore took, approval wait included.');
  private readonly restoreDowntime = this.gauge(METRIC.restoreDowntime, 'Application downtime of the newest completed restore (absent when no app was stopped).');
  private readonly restoreFailures = this.counter(METRIC.restoreFailures, 'Restores that ended failed (rejected and cancelled ones are not counted) since the worker started.');
  private readonly drillLastSuccess = this.gauge(METRIC.drillLastSuccess, 'When the newest passed restore drill finished (Unix seconds; 0: none recorded).');
  private readonly drillLastRun = this.gauge(METRIC.drillLastRun, 'When the newest restore drill (passed or failed) finished (Unix seconds; 0: none recorded).');
  private readonly drillLastResult = this.gauge(METRIC.drillLastResult, 'Result of the newest restore drill: 1 passed, 0 failed.');
  private readonly drillRto = this.gauge(METRIC.drillRto, 'Time to restore measured by the newest drill: restore start to checks done.');
  private readonly drillRpo = this.gauge(METRIC.drillRpo, 'Achieved RPO of the newest drill: the restored backup\'s age when the drill started.');
  private readonly drillFailures = this.counter(METRIC.drillFailures, 'Restore drills that ended failed since the worker started.');

  private readonly clusterGauge = (name: string, help: string): Gauge<ClusterLabels> => new Gauge({ name, help, labelNames: ['cluster'], registers: [this.registry] });
  private readonly clusterOutcomeCounter = (name: string, help: string): Counter<ClusterLabels | 'outcome'> => new Counter({ name, help, labelNames: ['cluster', 'outcome'], registers: [this.registry] });
  private readonly basebackupLastSuccess = this.clusterGauge(METRIC.basebackupLastSuccess, 'When the newest verified base backup finished (Unix seconds; 0: none in the repository).');
  private readonly basebackupDuration = this.clusterGauge(METRIC.basebackupDuration, 'How long the newest verified base backup took, from workflow start to manifest (verification included).');
  private readonly basebackupSize = this.clusterGauge(METRIC.basebackupSize, 'Stored size (compressed, encrypted) of the newest verified base backup.');
  private readonly basebackupsVerified = this.clusterGauge(METRIC.basebackupsVerified, 'Verified base backups in the repository: what a recovery can start from.');
  private readonly basebackups = this.clusterOutcomeCounter(
    METRIC.basebackups,
    'Base backups whose manifest this worker wrote since it started, by outcome (verified, failed verification). A base backup that failed before its manifest is not counted: the last-success age shows it.',
  );
  private readonly walLastArchived = this.clusterGauge(METRIC.walLastArchived, 'When the newest WAL segment in the repository was stored (Unix seconds; 0: none archived). Re-read every 10 minutes.');
  private readonly pitrLastSuccess = this.clusterGauge(METRIC.pitrLastSuccess, 'When the newest point-in-time restore that was promoted or replaced the cluster finished (Unix seconds; 0: none recorded).');
  private readonly pitrDuration = this.clusterGauge(METRIC.pitrDuration, 'How long the newest promoted or replacing point-in-time restore took, the operator\'s decision included.');
  private readonly pitrs = this.clusterOutcomeCounter(METRIC.pitrs, 'Point-in-time restores this worker saw end since it started, by outcome (promoted, replaced, discarded, failed, cancelled, rejected).');

  /** Per database and track, the finish time (ms) of what the gauges show: older news never overwrites newer. */
  private readonly shown = new Map<string, number>();
  private readonly counted = new Set<string>();
  /** Per cluster, the verified base backup ids last listed plus those verified since. */
  private readonly verifiedBaseBackups = new Map<string, Set<string>>();
  /** Per cluster, the WAL folder (TTTTTTTTXXXXXXXX) that held the newest segment at the last look. */
  private readonly newestWalFolder = new Map<string, string>();

  constructor(options: { databases?: string[]; clusters?: string[]; processMetrics?: boolean } = {}) {
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    // Counters exist from the start, so rate() and increase() see the first failure.
    for (const database of options.databases ?? []) {
      for (const counter of [this.backupFailures, this.restoreFailures, this.drillFailures]) counter.inc({ database }, 0);
    }
    for (const cluster of options.clusters ?? []) this.startClusterCounters(cluster);
  }

  private startClusterCounters(cluster: string): void {
    for (const outcome of BASEBACKUP_OUTCOMES) this.basebackups.inc({ cluster, outcome }, 0);
    for (const outcome of PITR_OUTCOMES) this.pitrs.inc({ cluster, outcome }, 0);
  }

  /** The names of pgrunbook's own metrics (not the process or Temporal runtime ones). */
  static names(): string[] {
    return Object.values(METRIC);
  }

  backupFinished(manifest: Manifest): void {
    this.safely(() => {
      const { database } = manifest;
      if (manifest.status === 'failed') this.countOnce(`backup:${manifest.id}`, this.backupFailures, { database });
      if (manifest.status !== 'verified') return;
      this.showIfNewer('backup', database, manifest.finishedAt, (at) => {
        this.backupLastSuccess.set({ database }, at);
        this.backupDuration.set({ database }, manifest.durationSeconds);
        if (manifest.dump) this.backupSize.set({ database }, manifest.dump.size);
      });
    });
  }

  restoreFinished(report: FinishedRestore): void {
    this.safely(() => {
      const { database } = report;
      if (report.outcome === 'failed') this.countOnce(`restore:${report.workflowId}:${report.runId}`, this.restoreFailures, { database });
      if (report.outcome !== 'completed') return;
      this.showIfNewer('restore', database, report.finishedAt, (at) => {
        this.restoreLastSuccess.set({ database }, at);
        this.restoreDuration.set({ database }, report.durationSeconds);
        if (report.downtimeSeconds === null) this.restoreDowntime.remove({ database });
        else this.restoreDowntime.set({ database }, report.downtimeSeconds);
      });
    });
  }

  drillFinished(report: DrillReport): void {
    this.safely(() => {
      // A cancelled drill proves nothing either way: it is neither a run nor a result.
      if (report.outcome === 'cancelled') return;
      if (report.outcome === 'failed') this.countOnce(`drill:${report.workflow_id}:${report.run_id}`, this.drillFailures, { database: report.database });
      this.showDrill(report);
    });
  }

  basebackupFinished(manifest: BaseBackupManifest): void {
    this.safely(() => {
      const { cluster } = manifest;
      this.countOnce(`basebackup:${manifest.id}`, this.basebackups, { cluster, outcome: manifest.status });
      if (manifest.status !== 'verified') return;
      const verified = this.verifiedBaseBackups.get(cluster) ?? new Set<string>();
      verified.add(manifest.id);
      this.verifiedBaseBackups.set(cluster, verified);
      this.basebackupsVerified.set({ cluster }, verified.size);
      this.showBasebackup(manifest);
    });
  }

  pitrFinished(report: FinishedPitr): void {
    this.safely(() => {
      const { cluster } = report;
      this.countOnce(`pitr:${report.workflowId}:${report.runId}`, this.pitrs, { cluster, outcome: report.outcome });
      this.showPitr(report);
    });
  }

  private showBasebackup(manifest: BaseBackupManifest): void {
    const { cluster } = manifest;
    this.showIfNewer('basebackup', cluster, manifest.finishedAt, (at) => {
      this.basebackupLastSuccess.set({ cluster }, at);
      this.basebackupDuration.set({ cluster }, Math.max(0, at - Date.parse(manifest.startedAt) / 1000));
      this.basebackupSize.set({ cluster }, Object.values(manifest.files).reduce((sum, file) => sum + file.size, 0));
    });
  }

  private showPitr(report: FinishedPitr): void {
    if (!PITR_SUCCESS.includes(report.outcome)) return;
    const { cluster } = report;
    this.showIfNewer('pitr', cluster, report.finishedAt, (at) => {
      this.pitrLastSuccess.set({ cluster }, at);
      this.pitrDuration.set({ cluster }, report.durationSeconds);
    });
  }

  private showDrill(report: DrillReport): void {
    const { database } = report;
    this.showIfNewer('drill-run', database, report.finished_at, (at) => {
      this.drillLastRun.set({ database }, at);
      this.drillLastResult.set({ database }, report.outcome === 'passed' ? 1 : 0);
      // A drill that failed before restoring measured nothing: no stale RTO/RPO beside its result.
      for (const [gauge, value] of [[this.drillRto, report.rto_seconds], [this.drillRpo, report.rpo_seconds]] as const) {
        if (value === null) gauge.remove({ database });
        else gauge.set({ database }, value);
      }
    });
    if (report.outcome === 'passed') this.showIfNewer('drill-success', database, report.finished_at, (at) => this.drillLastSuccess.set({ database }, at));
  }

  /**
   * Reads, for every configured database and every repository, the newest verified backup, the
   * newest restore and drill reports, and shows them. Where a repository holds none, the
   * last-success timestamps become 0 ("never"); an unreadable repository leaves them as they were
   * and is returned as a problem.
   */
  async refreshFromRepositories(config: Config, repositories: RepositoryRegistry): Promise<string[]> {
    const problems: string[] = [];
    const repositoryList: Repository[] = [];
    for (const id of Object.keys(config.repositories)) {
      try {
        repositoryList.push(repositories.get(id));
      } catch (error) {
        problems.push(`repository ${id}: ${(error as Error).message}`);
      }
    }
    await Promise.all(
      Object.keys(config.databases).map(async (database) => {
        let complete = problems.length === 0;
        for (const repository of repositoryList) {
          try {
            const manifest = await latestVerifiedManifest(repository, database);
            if (manifest) this.backupFinished(manifest);
            const restore = (await listRestoreReports<FinishedRestore>(repository, database)).find((r) => r.outcome === 'completed');
            if (restore) this.restoreFinished(restore);
            // What is read back is shown, never counted: the failure counters count what this worker saw end.
            const drills = await listDrillReports(repository, database);
            const lastPass = drills.find((d) => d.outcome === 'passed');
            if (lastPass) this.showDrill(lastPass);
            const lastRun = drills.find((d) => d.outcome !== 'cancelled');
            if (lastRun) this.showDrill(lastRun);
          } catch (error) {
            complete = false;
            problems.push(`${database} in repository ${repository.id}: ${(error as Error).message}`);
          }
        }
        if (!complete) return;
        // Looked everywhere and found nothing: "never", which the BackupFailed and DrillOverdue alerts see.
        for (const [track, gauge] of [['backup', this.backupLastSuccess], ['restore', this.restoreLastSuccess], ['drill-run', this.drillLastRun], ['drill-success', this.drillLastSuccess]] as const) {
          if (!this.shown.has(`${track}:${database}`)) gauge.set({ database }, 0);
        }
      }),
    );
    await Promise.all(Object.keys(config.clusters).map((cluster) => this.refreshCluster(config, repositories, cluster, problems)));
    return problems;
  }

  /** A cluster's base backups, newest archived WAL segment and point-in-time restores, from its one repository. */
  private async refreshCluster(config: Config, repositories: RepositoryRegistry, cluster: string, problems: string[]): Promise<void> {
    this.startClusterCounters(cluster);
    let repository: Repository;
    try {
      repository = repositories.get(clusterRepositoryId(config, cluster));
    } catch (error) {
      problems.push(`cluster ${cluster}: ${(error as Error).message}`);
      return;
    }
    const where = `cluster ${cluster} in repository ${repository.id}`;
    const tracks: [Track, () => Promise<void>][] = [
      ['basebackup', async () => {
        const verified = (await listBaseBackups(repository, cluster)).filter((b) => b.state === 'verified' && b.manifest);
        // The listing is the truth (a prune removed some); a manifest verified while it ran is kept.
        const ids = new Set(verified.map((b) => b.id));
        this.verifiedBaseBackups.set(cluster, ids);
        this.basebackupsVerified.set({ cluster }, ids.size);
        if (verified[0]) this.showBasebackup(verified[0].manifest!);
      }],
      ['wal', async () => {
        const newest = await this.newestArchivedSegment(repository, cluster);
        if (newest) this.showIfNewer('wal', cluster, newest.toISOString(), (at) => this.walLastArchived.set({ cluster }, at));
      }],
      ['pitr', async () => {
        const report = await latestSuccessfulPitr(repository, cluster);
        if (report) this.showPitr(report);
      }],
    ];
    const gauges: Record<string, Gauge<ClusterLabels>> = { basebackup: this.basebackupLastSuccess, wal: this.walLastArchived, pitr: this.pitrLastSuccess };
    await Promise.all(
      tracks.map(async ([track, read]) => {
        try {
          await read();
          // Looked and found nothing: "never", which BaseBackupOverdue and WalArchiveStale see.
          if (!this.shown.has(`${track}:${cluster}`)) gauges[track]!.set({ cluster }, 0);
        } catch (error) {
          problems.push(`${where} (${track}): ${(error as Error).message}`);
        }
      }),
    );
  }

  /**
   * When the newest WAL segment of a cluster was stored, listing as little as it can: the
   * timelines/ folder (history files name every timeline; a few small objects), then only the
   * newest timeline's newest log folder (at most 256 segments of 16 MiB) and the one after it,
   * walking on while the next is not empty. The folder found is remembered, so a refresh costs
   * three LISTs; only the first look at a timeline lists all its folders. Undefined: none archived.
   */
  private async newestArchivedSegment(repository: Repository, cluster: string): Promise<Date | undefined> {
    const wal = walPrefix(cluster);
    let newestTimeline = 1;
    for (const object of await repository.list(`${wal}timelines/`)) {
      const stored = parseStoredWalName(object.key.slice(object.key.lastIndexOf('/') + 1));
      const file = stored && parseWalFileName(stored.name);
      if (file?.kind === 'history') newestTimeline = Math.max(newestTimeline, file.timeline);
    }
    const segmentsIn = async (prefix: string) =>
      (await repository.list(prefix)).flatMap((object) => {
        const stored = parseStoredWalName(object.key.slice(object.key.lastIndexOf('/') + 1));
        return stored && parseWalFileName(stored.name)?.kind === 'segment' ? [{ folder: segmentLogFolder(stored.name), modified: object.modified }] : [];
      });
    // A promoted timeline may not have closed a segment yet: its parent's are then the newest.
    for (let timeline = newestTimeline; timeline >= 1; timeline--) {
      const timelineHex = timeline.toString(16).toUpperCase().padStart(8, '0');
      const remembered = this.newestWalFolder.get(cluster);
      let segments = remembered?.startsWith(timelineHex) ? await segmentsIn(`${wal}${remembered}/`) : [];
      if (segments.length === 0) segments = await segmentsIn(`${wal}${timelineHex}`);
      if (segments.length === 0) continue;
      let folder = segments.reduce((max, s) => (s.folder > max ? s.folder : max), segments[0]!.folder);
      let newest = segments.filter((s) => s.folder === folder);
      for (;;) {
        const next = `${timelineHex}${(parseInt(folder.slice(8), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`;
        const more = await segmentsIn(`${wal}${next}/`);
        if (more.length === 0) break;
        folder = next;
        newest = more;
      }
      this.newestWalFolder.set(cluster, folder);
      return new Date(Math.max(...newest.map((s) => s.modified.getTime())));
    }
    return undefined;
  }

  private showIfNewer(track: Track, database: string, finishedAt: string, show: (unixSeconds: number) => void): void {
    const at = Date.parse(finishedAt);
    if (!Number.isFinite(at)) return;
    const key = `${track}:${database}`;
    if ((this.shown.get(key) ?? -Infinity) > at) return;
    this.shown.set(key, at);
    show(at / 1000);
  }

  private countOnce<L extends string>(key: string, counter: Counter<L>, labels: Partial<Record<L, string>>): void {
    if (this.counted.has(key)) return;
    this.counted.add(key);
    if (this.counted.size > COUNTED_LIMIT) this.counted.delete(this.counted.values().next().value!);
    counter.inc(labels);
  }

  private safely(update: () => void): void {
    try {
      update();
    } catch (error) {
      console.warn(`pgrunbook metrics: ${(error as Error).message}`);
    }
  }
}

/** The newest point-in-time restore report of a cluster that was promoted or replaced the cluster, reading reports newest first. */
async function latestSuccessfulPitr(repository: Repository, cluster: string): Promise<FinishedPitr | undefined> {
  const keys = (await repository.list(`${pitrPrefix(cluster)}reports/pitr-`)).map((o) => o.key).sort().reverse();
  for (const key of keys) {
    const report = await readAll(repository, key)
      .then((bytes) => JSON.parse(bytes.toString('utf8')) as FinishedPitr)
      .catch(() => undefined);
    if (report && report.cluster === cluster && PITR_SUCCESS.includes(report.outcome)) return report;
  }
  return undefined;
}

/** The newest verified backup of a database in a repository, reading manifests newest first until one is verified. */
async function latestVerifiedManifest(repository: Repository, database: string): Promise<Manifest | undefined> {
  const ids = (await repository.list(`${database}/`))
    .filter((o) => o.key.endsWith(`/${ARTIFACT.manifest}`))
    .map((o) => o.key.slice(0, -`/${ARTIFACT.manifest}`.length))
    .filter((id) => parseBackupId(id)?.database === database)
    .sort((a, b) => parseBackupId(b)!.timestamp.localeCompare(parseBackupId(a)!.timestamp) || b.localeCompare(a));
  for (const id of ids) {
    const manifest = await readManifest(repository, id).catch(() => undefined);
    if (manifest?.status === 'verified') return manifest;
  }
  return undefined;
}

export interface MetricsServer {
  /** e.g. http://127.0.0.1:9464 */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * /metrics (pgrunbook's registry, then the Temporal runtime's metrics when installed) and
 * /healthz (200 while the worker runs, 503 otherwise) on host:port.
 */
export async function serveMetrics(options: {
  metrics: WorkerMetrics;
  host: string;
  port: number;
  /** The Temporal runtime's own endpoint (worker/runtime.ts), merged into /metrics. */
  runtimeMetricsUrl?: string | null;
  workerState: () => string;
}): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      void exposition(options.metrics, options.runtimeMetricsUrl ?? null).then(
        (body) => res.writeHead(200, { 'content-type': options.metrics.registry.contentType }).end(body),
        (error: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${(error as Error).message}\n`),
      );
      return;
    }
    if (path === '/healthz') {
      const state = options.workerState();
      res.writeHead(state === 'RUNNING' ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ worker: state })}\n`);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `metrics: cannot listen on ${options.host}:${options.port}: ${error.code ?? error.message}\n` +
            'HINT: set metrics.port to a free port in the config, or metrics.enabled: false',
        ),
      ),
    );
    server.listen(options.port, options.host, resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    url: `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function exposition(metrics: WorkerMetrics, runtimeMetricsUrl: string | null): Promise<string> {
  const own = await metrics.registry.metrics();
  if (!runtimeMetricsUrl) return own;
  // The runtime's families are all temporal_-prefixed: appending cannot repeat a family.
  const runtime = await fetch(runtimeMetricsUrl, { signal: AbortSignal.timeout(2_000) })
    .then((r) => (r.ok ? r.text() : ''))
    .catch(() => '');
  return runtime ? `${own.endsWith('\n') ? own : `${own}\n`}${runtime.endsWith('\n') ? runtime : `${runtime}\n`}` : own;
}

/**
 * Seeds the metrics from the repositories now, then re-reads them every few minutes (a backup
 * another worker took counts too). Unreadable repositories are reported on stderr and retried at
 * the next refresh. Returns a function that stops the refreshing.
 */
export function keepMetricsRefreshed(metrics: WorkerMetrics, config: Config, repositories: RepositoryRegistry): () => void {
  let running: Promise<void> | undefined;
  const refresh = (): void => {
    if (running) return;
    running = metrics
      .refreshFromRepositories(config, repositories)
      .then((problems) => {
        for (const problem of problems) console.warn(`pgrunbook metrics: could not read the last outcomes of ${problem}`);
      })
      .finally(() => (running = undefined));
  };
  refresh();
  const timer = setInterval(refresh, REFRESH_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
