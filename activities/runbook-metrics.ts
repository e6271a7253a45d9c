import type { BaseBackupManifest } from '../pitr/manifest.js';
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

/** What the metrics need of a point-in-time restore report (activities/pitr.ts PitrReport has it all). */
export interface FinishedPitr {
  workflowId: string;
  runId: string;
  cluster: string;
  outcome: 'promoted' | 'discarded' | 'replaced' | 'failed' | 'cancelled' | 'rejected';
  finishedAt: string;
  durationSeconds: number;
}

/**
 * Where the activity that ends a runbook (the manifest, the restore report, the drill report, a
 * base backup's manifest, a point-in-time restore's report) tells the worker's metrics about it.
 * The worker injects its Prometheus registry here (worker/metrics.ts), so activities never import
 * prom-client. Implementations must not throw: a metric is never a reason to fail a step.
 */
export interface RunbookMetrics {
  backupFinished(manifest: Manifest): void;
  restoreFinished(report: FinishedRestore): void;
  drillFinished(report: DrillReport): void;
  basebackupFinished(manifest: BaseBackupManifest): void;
  pitrFinished(report: FinishedPitr): void;
}
