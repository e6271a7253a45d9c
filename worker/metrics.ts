import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { FinishedRestore, RunbookMetrics } from '../activities/runbook-metrics.js';
import type { Config } from '../config/schema.js';
import { readManifest } from '../repository/catalog.js';
import { ARTIFACT, parseBackupId } from '../repository/layout.js';
import type { Manifest } from '../repository/manifest.js';
import type { RepositoryRegistry } from '../repository/registry.js';
import { listDrillReports, listRestoreReports, type DrillReport } from '../repository/reports.js';
import type { Repository } from '../repository/types.js';

// The worker's Prometheus metrics (seed 001 §7): one registry per worker process, fed by the
// activities that end a runbook (writeManifest, writeRestoreReport, writeDrillReport) and seeded
// from the repositories at start, so a restarted worker reports the last success it can prove
// rather than "never". Timestamps are Unix seconds; a last-success timestamp of 0 means the
// repositories hold none; a missing series means pgrunbook could not tell (repository unreadable).

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
} as const;

/** How often the last-success gauges are re-read from the repositories (another worker's backups count too). */
const REFRESH_INTERVAL_MS = 10 * 60_000;
/** Failure counts already counted, by runbook run: a retried report activity counts once. */
const COUNTED_LIMIT = 1_000;

type Labels = 'database';
type Track = 'backup' | 'restore' | 'drill-run' | 'drill-success';

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

  /** Per database and track, the finish time (ms) of what the gauges show: older news never overwrites newer. */
  private readonly shown = new Map<string, number>();
  private readonly counted = new Set<string>();

  constructor(options: { databases?: string[]; processMetrics?: boolean } = {}) {
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    // Counters exist from the start, so rate() and increase() see the first failure.
    for (const database of options.databases ?? []) {
      for (const counter of [this.backupFailures, this.restoreFailures, this.drillFailures]) counter.inc({ database }, 0);
    }
  }

  /** The names of pgrunbook's own metrics (not the process or Temporal runtime ones). */
  static names(): string[] {
    return Object.values(METRIC);
  }

  backupFinished(manifest: Manifest): void {
    this.safely(() => {
      const { database } = manifest;
      if (manifest.status === 'failed') this.countOnce(`backup:${manifest.id}`, this.backupFailures, database);
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
      if (report.outcome === 'failed') this.countOnce(`restore:${report.workflowId}:${report.runId}`, this.restoreFailures, database);
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
      if (report.outcome === 'failed') this.countOnce(`drill:${report.workflow_id}:${report.run_id}`, this.drillFailures, report.database);
      this.showDrill(report);
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
    return problems;
  }

  private showIfNewer(track: Track, database: string, finishedAt: string, show: (unixSeconds: number) => void): void {
    const at = Date.parse(finishedAt);
    if (!Number.isFinite(at)) return;
    const key = `${track}:${database}`;
    if ((this.shown.get(key) ?? -Infinity) > at) return;
    this.shown.set(key, at);
    show(at / 1000);
  }

  private countOnce(key: string, counter: Counter<Labels>, database: string): void {
    if (this.counted.has(key)) return;
    this.counted.add(key);
    if (this.counted.size > COUNTED_LIMIT) this.counted.delete(this.counted.values().next().value!);
    counter.inc({ database });
  }

  private safely(update: () => void): void {
    try {
      update();
    } catch (error) {
      console.warn(`pgrunbook metrics: ${(error as Error).message}`);
    }
  }
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
