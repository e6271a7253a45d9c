import type { Manifest } from '../repository/manifest.js';
import type { DrillReport } from '../repository/reports.js';

/** What the metrics need of a restore report (activities/restore.ts RestoreReport has it all). */
export interface FinishedRestore {
  workflowId: string;
  runId: string;
  database: string;
  outcome: 'completed' | 'failed' | 'cancelled' | 'rejected';
  finishedAt: string;
  durationSeconds: number;
  downtimeSeconds: number | null;
}

/**
 * Where the activity that ends a runbook (the manifest, the restore report, the drill report)
 * tells the worker's metrics about it. The worker injects its Prometheus registry here
 * (worker/metrics.ts), so activities never import prom-client. Implementations must not throw:
 * a metric is never a reason to fail a step.
 */
export interface RunbookMetrics {
  backupFinished(manifest: Manifest): void;
  restoreFinished(report: FinishedRestore): void;
  drillFinished(report: DrillReport): void;
}
