import { compactTimestamp } from './layout.js';
import type { Repository } from './types.js';
import { readAll } from './types.js';

// Reports kept in a repository beside the backups. Drill reports (seed 002 §3: "Writes JSON result
// to reports/restore_drill_result_<timestamp>.json") live under `reports/<database>/`; restore
// reports under `<database>/_reports/`. Neither is ever listed as a backup: a backup id is
// `<database>/<YYYYMMDDTHHMMSSZ>[_label]`, so even a database with the id "reports" keeps its
// backups (`reports/20261121T020000Z/`) apart from drill reports (`reports/<database>/drill-...`).

const REPORTS_FOLDER = 'reports';

export type DrillCheckKind = 'checksum' | 'row-counts' | 'schema-version' | 'canary' | 'smoke-query' | 'query-budget';

/** One drill check: pass or fail with what was expected and what was found. */
export interface DrillCheck {
  name: string;
  kind: DrillCheckKind;
  /** skipped: it could not run (the restore failed first) or does not apply (no canary configured). */
  outcome: 'pass' | 'fail' | 'skipped';
  expected: unknown;
  actual: unknown;
  detail?: string;
}

export interface DrillStep {
  step: string;
  started_at: string;
  finished_at: string;
  duration_ms: number;
  outcome: 'ok' | 'failed' | 'skipped' | 'cancelled';
  error?: string;
}

/**
 * The drill's JSON result. Field names follow seed 002's drill result (`restore_success`, schema
 * version and row counts before/after, canary found), snake_case throughout.
 */
export interface DrillReport {
  report_version: 1;
  kind: 'drill';
  pgrunbook_version: string;
  workflow_id: string;
  run_id: string;
  database: string;
  repository: string | null;
  backup_id: string | null;
  /** When the backup's dump started: the data is as of (about) then. */
  backup_started_at: string | null;
  started_at: string;
  finished_at: string;
  duration_seconds: number;
  /** passed: restored and every check passed; failed: anything else; cancelled: stopped by an operator. */
  outcome: 'passed' | 'failed' | 'cancelled';
  /** Seed 002: true only when the restore ran and every check passed. */
  restore_success: boolean;
  target: { type: 'cluster' | 'server'; database: string | null; server: string | null; server_version: string | null } | null;
  /** Time to restore: from the start of the restore step to the end of the checks (a usable, proven copy). */
  rto_seconds: number | null;
  /** pg_restore alone. */
  restore_seconds: number | null;
  /** Achieved RPO: the backup's age when the drill started (drill start minus backup start). */
  rpo_seconds: number | null;
  schema_version_before: string | null;
  schema_version_after: string | null;
  row_counts_before: Record<string, number> | null;
  /** null for a table the backup counted but the restored copy lacks. */
  row_counts_after: Record<string, number | null> | null;
  /** null: no canary in this drill. */
  canary_found: boolean | null;
  checks: DrillCheck[];
  steps: DrillStep[];
  teardown: { state: 'done' | 'failed' | 'not-needed'; detail: string | null };
  error: { step: string; type: string; message: string } | null;
  requested_by: string | null;
}

export const drillReportKey = (database: string, startedAt: Date): string => `${REPORTS_FOLDER}/${database}/drill-${compactTimestamp(startedAt)}.json`;

/** Drill reports of a database, newest first. Unreadable files are skipped, not fatal. */
export async function listDrillReports(repository: Repository, database: string): Promise<DrillReport[]> {
  return readReports<DrillReport>(repository, `${REPORTS_FOLDER}/${database}/drill-`);
}

/** Restore reports (activities/restore.ts RestoreReport) of a database, newest first. */
export async function listRestoreReports<T = Record<string, unknown>>(repository: Repository, database: string): Promise<T[]> {
  return readReports<T>(repository, `${database}/_reports/restore-`);
}

async function readReports<T>(repository: Repository, prefix: string): Promise<T[]> {
  const objects = (await repository.list(prefix)).filter((o) => o.key.endsWith('.json')).sort((a, b) => b.key.localeCompare(a.key));
  const reports = await Promise.all(
    objects.map(async (o) => {
      try {
        return JSON.parse((await readAll(repository, o.key)).toString('utf8')) as T;
      } catch {
        return undefined;
      }
    }),
  );
  return reports.filter((r): r is Awaited<T> => r !== undefined) as T[];
}
