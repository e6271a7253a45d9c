import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { defaultRepositoryId } from '../config/schema.js';
import { listBackups } from '../repository/catalog.js';
import { ARTIFACT, backupId as makeBackupId, parseBackupId } from '../repository/layout.js';
import { planRetention, type RetentionCandidate, type RetentionDecision } from '../repository/retention.js';
import type { Repository } from '../repository/types.js';
import { DATABASE_ATTRIBUTE, LABEL_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { planGuards, removeFolderManifestFirst, retireManifests, runningStatusDetails, writePruneReportFile, type BackupsInUse } from './retirement.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { PGRUNBOOK_VERSION } from './version.js';

// Prune activities: plan (inventory + policy + what running workflows use), retire (manifests
// first), remove (the rest of each folder), report. Deleting the manifest first means a backup
// stops being "good" before any of its files go: a prune that dies half-way leaves incomplete
// folders, never a backup listed as verified that cannot be restored. Every step is idempotent.

export interface PrunePlan {
  database: string;
  repository: string;
  location: string;
  /** databases.<id>.retention is set; without it nothing is deleted. */
  configured: boolean;
  plannedAt: string;
  /** Every backup folder, newest first, with the rule that kept or deletes it. */
  decisions: RetentionDecision[];
  /** Backups in use by running restores, drills and backups, with who uses them. */
  inUse: { backupId: string; by: string }[];
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

export interface RetireResult {
  retired: string[];
  /** Planned deletions skipped because a restore, drill or backup started using them since the plan. */
  skipped: { backupId: string; reason: string }[];
}

export interface PruneReport {
  report_version: 1;
  kind: 'prune';
  pgrunbook_version: string;
  workflow_id: string;
  database: string;
  repository: string;
  planned_at: string;
  finished_at: string;
  requested_by: string | null;
  deleted: { backup_id: string; state: string; reasons: string[] }[];
  skipped: { backup_id: string; reason: string }[];
  kept: number;
}

/** The last prune of a database, beside its drill reports; overwritten by the next prune. */
export const pruneReportKey = (database: string): string => `reports/${database}/last-prune.json`;

/**
 * Backups that running restores and drills use (their resolved backup, a named backup they will
 * resolve, a restore's safety backup) and folders running backups write, found through
 * Temporal visibility and each workflow's status query.
 */
export async function backupsInUse(client: Client, database: string): Promise<BackupsInUse> {
  const byId = new Map<string, string>();
  const unknown: string[] = [];
  const query = `${DATABASE_ATTRIBUTE.name} = "${database}" AND ${OPERATION_ATTRIBUTE.name} IN ("restore", "drill", "backup") AND ExecutionStatus = "Running"`;
  for await (const execution of client.workflow.list({ query })) {
    const operation = execution.typedSearchAttributes.get(OPERATION_ATTRIBUTE) ?? 'unknown';
    const who = `${operation} ${execution.workflowId} is running`;
    const use = (id: unknown): void => {
      if (typeof id !== 'string' || !parseBackupId(id)) return;
      const others = byId.get(id);
      if (others?.split('; ').includes(who)) return;
      byId.set(id, others ? `${others}; ${who}` : who);
    };
    const details = await runningStatusDetails(client, execution);
    if (operation === 'backup') {
      // The folder it writes; derivable without the query (the id is its start time and label).
      use(details?.backupId ?? makeBackupId(database, execution.startTime, execution.typedSearchAttributes.get(LABEL_ATTRIBUTE) ?? undefined));
      continue;
    }
    if (!details) {
      unknown.push(who);
      continue;
    }
    // Resolved: backupId. Not yet: the backup it asked for (an id; `latest` resolves to the newest
    // verified, which is never deleted). A restore's safety backup is its undo.
    use(details.backupId);
    use(details.backup);
    use(details.safetyBackupId);
  }
  return { byId, unknown };
}

/** Backup folders of a database: listed ones (with manifests or files) and ones holding only incomplete writes. */
export async function inventory(repository: Repository, database: string): Promise<RetentionCandidate[]> {
  const [listed, incomplete] = await Promise.all([listBackups(repository, database), repository.listIncompleteWrites(`${database}/`)]);
  const candidates = new Map<string, RetentionCandidate>(listed.map((b) => [b.id, { id: b.id, label: b.label, timestamp: b.timestamp, state: b.state }]));
  for (const write of incomplete) {
    const id = write.key.slice(0, write.key.lastIndexOf('/'));
    const parsed = parseBackupId(id);
    if (!parsed || candidates.has(id)) continue;
    candidates.set(id, { id, label: parsed.label ?? null, timestamp: parsed.timestamp, state: 'incomplete' });
  }
  return [...candidates.values()];
}

/**
 * Removes one backup folder: the manifest first (from then on it is not a good backup), then
 * incomplete writes, then every other file. Idempotent: a re-run finishes what a dead run began.
 */
export async function removeBackupFolder(repository: Repository, id: string, signal?: AbortSignal): Promise<number> {
  return removeFolderManifestFirst(repository, `${id}/`, `${id}/${ARTIFACT.manifest}`, signal);
}

export function createPruneActivities(deps: ActivityDeps) {
  const { databaseConfig, stepSettings, repository } = activitySupport(deps);

  const usesNow = async (database: string): Promise<BackupsInUse> => backupsInUse(Context.current().client, database);

  return {
    /** Inventory, what running workflows use, and the policy's decision for every backup folder. Changes nothing. */
    async planPrune(input: { database: string; repository?: string }): Promise<PrunePlan> {
      const db = databaseConfig(input.database);
      const repositoryId = input.repository ?? defaultRepositoryId(deps.config, input.database);
      const repo = repository(repositoryId);
      const now = new Date();
      const [candidates, inUse] = await Promise.all([inventory(repo, input.database), usesNow(input.database)]);
      const guards = planGuards(inUse, candidates, 'backup');
      return {
        database: input.database,
        repository: repositoryId,
        location: repo.location,
        configured: db.retention !== undefined,
        plannedAt: now.toISOString(),
        decisions: planRetention(candidates, db.retention, now, guards),
        inUse: [...guards].map(([backupId, by]) => ({ backupId, by })),
        ...stepSettings(),
      };
    },

    /**
     * Deletes the manifests of the backups to delete: they stop being listed as good at once.
     * What a restore, drill or backup started using since the plan is skipped, not deleted.
     */
    async retireBackups(input: { database: string; repository: string; backupIds: string[] }): Promise<RetireResult> {
      const repo = repository(input.repository);
      return retireManifests(repo, input.backupIds, await usesNow(input.database), 'backup', (id) => `${id}/${ARTIFACT.manifest}`);
    },

    /** Removes the retired folders' files. Long: heartbeats, and a retry resumes after the last folder done. */
    async removeBackupFiles(input: { repository: string; backupIds: string[] }): Promise<{ removed: string[]; files: number }> {
      const repo = repository(input.repository);
      const context = Context.current();
      // Heartbeat details: folders done so far (a retry on another worker starts after them).
      let done = (context.info.heartbeatDetails as { done?: number } | undefined)?.done ?? 0;
      const beat = (): void => context.heartbeat({ done, total: input.backupIds.length });
      beat();
      const timer = setInterval(beat, 1_000);
      let files = 0;
      try {
        while (done < input.backupIds.length) {
          files += await removeBackupFolder(repo, input.backupIds[done]!, context.cancellationSignal);
          done += 1;
          beat();
        }
      } finally {
        clearInterval(timer);
      }
      return { removed: input.backupIds, files };
    },

    /** The last prune's report, beside the drill reports (reports/<db>/): what went and which rule decided it. */
    async writePruneReport(input: { report: Omit<PruneReport, 'pgrunbook_version' | 'finished_at'> }): Promise<{ key: string; location: string }> {
      const report: PruneReport = { ...input.report, pgrunbook_version: PGRUNBOOK_VERSION, finished_at: new Date().toISOString() };
      return writePruneReportFile(repository(report.repository), pruneReportKey(report.database), report);
    },
  };
}

export type PruneActivities = ReturnType<typeof createPruneActivities>;
