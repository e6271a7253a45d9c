import type { RestoreReport } from '../activities/restore.js';
import { PGRUNBOOK_VERSION } from '../activities/version.js';
import { defaultRepositoryId, type Config } from '../config/schema.js';
import { scrubSecrets } from '../process/secrets.js';
import { listBackups, type BackupState } from '../repository/catalog.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { listDrillReports, listRestoreReports, type DrillReport } from '../repository/reports.js';

// What the HTML report shows, gathered from each database's repository: its backups (manifests),
// drill reports and restore reports. One unreadable repository becomes a problem line in that
// database's section; the other databases are still reported.

export interface BackupPoint {
  id: string;
  label: string | null;
  state: BackupState;
  startedAt: string;
  finishedAt: string | null;
  sizeBytes: number | null;
  durationSeconds: number | null;
  error: string | null;
}

export interface TimelineStep {
  step: string;
  startedAt: string;
  durationMs: number;
  outcome: string;
  error: string | null;
}

export interface RestoreSummary {
  workflowId: string;
  startedAt: string;
  finishedAt: string;
  outcome: RestoreReport['outcome'];
  backupId: string | null;
  target: string | null;
  strategy: string | null;
  durationSeconds: number;
  downtimeSeconds: number | null;
  error: string | null;
  steps: TimelineStep[];
}

/** The steps of one run (a restore or a drill), for the Gantt-like timeline. */
export interface Timeline {
  kind: 'restore' | 'drill';
  workflowId: string;
  startedAt: string;
  finishedAt: string;
  outcome: string;
  steps: TimelineStep[];
}

export interface DatabaseReport {
  database: string;
  repository: { id: string; location: string | null };
  /** Why part of this database's history could not be read (an unreachable repository). */
  problems: string[];
  /** Newest first, as everywhere else. */
  backups: BackupPoint[];
  drills: DrillReport[];
  restores: RestoreSummary[];
  /** The latest restore or drill, whichever started last. */
  timeline: Timeline | null;
}

export interface ReportData {
  generatedAt: string;
  pgrunbookVersion: string;
  databases: DatabaseReport[];
}

export async function collectReport(config: Config, options: { databases?: string[]; env?: NodeJS.ProcessEnv; now?: Date } = {}): Promise<ReportData> {
  const registry = new RepositoryRegistry(config, options.env);
  const ids = options.databases ?? Object.keys(config.databases);
  // Databases are independent: read them concurrently, each tolerating its own failures.
  const databases = await Promise.all(ids.map((id) => collectDatabase(config, registry, id)));
  return { generatedAt: (options.now ?? new Date()).toISOString(), pgrunbookVersion: PGRUNBOOK_VERSION, databases };
}

async function collectDatabase(config: Config, registry: RepositoryRegistry, database: string): Promise<DatabaseReport> {
  const repositoryId = defaultRepositoryId(config, database);
  const report: DatabaseReport = { database, repository: { id: repositoryId, location: null }, problems: [], backups: [], drills: [], restores: [], timeline: null };
  let repository;
  try {
    repository = registry.get(repositoryId);
    report.repository.location = repository.location;
  } catch (error) {
    report.problems.push(`repository ${repositoryId}: ${messageOf(error)}`);
    return report;
  }
  const [backups, drills, restores] = await Promise.allSettled([
    listBackups(repository, database),
    listDrillReports(repository, database),
    listRestoreReports<Partial<RestoreReport>>(repository, database),
  ]);
  if (backups.status === 'rejected' && drills.status === 'rejected' && restores.status === 'rejected') {
    // Nothing could be read: one line about the repository says it better than three.
    report.problems.push(`could not read ${repository.location}: ${messageOf(backups.reason)}`);
    return report;
  }
  if (backups.status === 'fulfilled') {
    report.backups = backups.value.map((b) => ({
      id: b.id,
      label: b.label,
      state: b.state,
      startedAt: b.manifest?.startedAt ?? isoFromCompact(b.timestamp),
      finishedAt: b.manifest?.finishedAt ?? null,
      sizeBytes: b.manifest?.dump?.size ?? null,
      durationSeconds: b.manifest?.durationSeconds ?? null,
      error: b.manifest?.error?.message ?? null,
    }));
  } else {
    report.problems.push(`could not list backups in ${repository.location}: ${messageOf(backups.reason)}`);
  }
  if (drills.status === 'fulfilled') {
    report.drills = drills.value.filter(isDrillReport).map((d) => ({ ...d, checks: d.checks ?? [], steps: d.steps ?? [] }));
  } else {
    report.problems.push(`could not read drill reports in ${repository.location}: ${messageOf(drills.reason)}`);
  }
  if (restores.status === 'fulfilled') {
    report.restores = restores.value.flatMap((r) => (typeof r.startedAt === 'string' && typeof r.workflowId === 'string' ? [restoreSummary(r as RestoreReport)] : []));
  } else {
    report.problems.push(`could not read restore reports in ${repository.location}: ${messageOf(restores.reason)}`);
  }
  report.timeline = latestTimeline(report.drills[0], report.restores[0]);
  return report;
}

function restoreSummary(r: RestoreReport): RestoreSummary {
  return {
    workflowId: r.workflowId,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    outcome: r.outcome,
    backupId: r.backupId ?? null,
    target: r.target ?? null,
    strategy: r.strategy ?? null,
    durationSeconds: r.durationSeconds,
    downtimeSeconds: r.downtimeSeconds ?? null,
    error: r.error?.message ?? null,
    // Restore reports carry the runbook's StepRecords (workflows/runbook.ts); keep the well-formed ones.
    steps: (Array.isArray(r.steps) ? r.steps : []).flatMap((s) => {
      const step = s as Partial<Record<'step' | 'startedAt' | 'outcome' | 'error', string>> & { durationMs?: number };
      return typeof step.step === 'string' && typeof step.startedAt === 'string' && typeof step.durationMs === 'number'
        ? [{ step: step.step, startedAt: step.startedAt, durationMs: step.durationMs, outcome: step.outcome ?? 'ok', error: step.error ?? null }]
        : [];
    }),
  };
}

/** The newer of the latest drill and the latest restore (both lists are newest first). */
export function latestTimeline(drill: DrillReport | undefined, restore: RestoreSummary | undefined): Timeline | null {
  const fromDrill = (d: DrillReport): Timeline => ({
    kind: 'drill',
    workflowId: d.workflow_id,
    startedAt: d.started_at,
    finishedAt: d.finished_at,
    outcome: d.outcome,
    steps: d.steps.map((s) => ({ step: s.step, startedAt: s.started_at, durationMs: s.duration_ms, outcome: s.outcome, error: s.error ?? null })),
  });
  const fromRestore = (r: RestoreSummary): Timeline => ({ kind: 'restore', workflowId: r.workflowId, startedAt: r.startedAt, finishedAt: r.finishedAt, outcome: r.outcome, steps: r.steps });
  if (drill && restore) return Date.parse(drill.started_at) >= Date.parse(restore.startedAt) ? fromDrill(drill) : fromRestore(restore);
  if (drill) return fromDrill(drill);
  if (restore) return fromRestore(restore);
  return null;
}

function isDrillReport(value: DrillReport): boolean {
  return typeof value === 'object' && value !== null && value.kind === 'drill' && typeof value.started_at === 'string' && typeof value.outcome === 'string';
}

/** 20261121T230643Z -> 2026-11-21T23:06:43.000Z */
function isoFromCompact(stamp: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(stamp);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z` : stamp;
}

function messageOf(error: unknown): string {
  return scrubSecrets((error as Error)?.message ?? String(error)).replace(/\s*\n\s*/g, ' ');
}
