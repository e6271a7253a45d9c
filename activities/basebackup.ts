import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { clusterRepositoryId, type ClusterConfig } from '../config/schema.js';
import { listBaseBackups, storedTarName, type BaseBackupEntry } from '../pitr/base-catalog.js';
import { extractBaseBackup } from '../pitr/base-extract.js';
import { BASE_ARTIFACT, baseBackupFolder, baseBackupId, baseBackupsPrefix, pitrPrefix, storedSuffix, type WalCompression } from '../pitr/layout.js';
import { BaseBackupManifest } from '../pitr/manifest.js';
import { planBaseRetention, walBeforeCutoff } from '../pitr/retention.js';
import { listArchivedWal } from '../pitr/wal-inventory.js';
import { DEFAULT_SEGMENT_SIZE, parseLsn, segmentFileName, segmentOf } from '../pitr/wal-names.js';
import { basebackupToolsFor, basebackupToRepository, parseCompression, probeCluster, type ClusterFacts } from '../postgres/basebackup.js';
import { describeConnection } from '../postgres/connection.js';
import { classifyPostgresError, classifyToolError, failure } from '../postgres/errors.js';
import { isRoot, postgresUid } from '../postgres/server-user.js';
import { runTool, ToolError } from '../process/run.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { RetentionDecision } from '../repository/retention.js';
import { writeAll, type Repository } from '../repository/types.js';
import type { ArchiveEncryption } from '../repository/manifest.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { createEncryptionSupport } from './encryption.js';
import type { PruneReport } from './prune.js';
import { planGuards, removeFolderManifestFirst, retireManifests, runningStatusDetails, writePruneReportFile, type BackupsInUse } from './retirement.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { PGRUNBOOK_VERSION } from './version.js';

// Base backups of a cluster (point-in-time recovery): plan, probe, pg_basebackup streamed into
// the repository, verification (extract + pg_verifybackup), manifest written last; and their
// retention with the WAL only they needed. Workflows pass names; connections, keys and paths
// are resolved here. Every activity is idempotent.

export interface BasebackupPlan {
  cluster: string;
  database: string;
  repository: string;
  location: string;
  compression: WalCompression;
  /** The configured text, e.g. zstd:3. */
  compressionSetting: string;
  checkpoint: 'fast' | 'spread';
  maxRate: string | null;
  /** The stored tar's name: base.tar[.zst|.gz][.age]. */
  tarFile: string;
  encryption: ArchiveEncryption | null;
  /** clusters.<id>.retention is configured: the workflow prunes after a verified base backup. */
  retention: boolean;
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

export type ServerFacts = Omit<ClusterFacts, 'extraTablespaces' | 'canReplicate'> & { target: string; pgBasebackup: string };

export interface TakenBasebackup {
  file: string;
  size: number;
  sha256: string;
  tarSize: number;
  startLsn: string;
  stopLsn: string;
  timeline: number;
  walRange: { start: string; stop: string };
}

export type BaseVerification = BaseBackupManifest['verification'];

/** A manifest before the activity stamps pgrunbook's version on it. */
export type BaseManifestDraft = Omit<BaseBackupManifest, 'pgrunbookVersion' | 'formatVersion' | 'kind'>;

export interface BasePrunePlan {
  cluster: string;
  repository: string;
  location: string;
  configured: boolean;
  plannedAt: string;
  decisions: RetentionDecision[];
  /** WAL numbered below this segment goes; null: no WAL is deleted. */
  walCutoff: { segment: string; backupId: string } | null;
  /** Archived WAL files that would go (names), before the cutoff. */
  walToDelete: string[];
  walKept: number;
  inUse: { backupId: string; by: string }[];
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

/** The prune report's fields, for a cluster's base backups, and where their WAL was cut. */
export type BasePruneReport = Omit<PruneReport, 'kind' | 'database'> & {
  kind: 'basebackup-prune';
  cluster: string;
  wal: { cutoff: string | null; cutoff_backup: string | null; deleted: number };
};

export const basePruneReportKey = (cluster: string): string => `${pitrPrefix(cluster)}reports/last-prune.json`;

/** Base backups that running point-in-time restores of `cluster` use, and base backups running basebackupCluster workflows write. */
export async function baseBackupsInUse(client: Client, cluster: string): Promise<BackupsInUse> {
  const byId = new Map<string, string>();
  const unknown: string[] = [];
  const writers = `${DATABASE_ATTRIBUTE.name} = "${cluster}" AND ${OPERATION_ATTRIBUTE.name} = "basebackup" AND ExecutionStatus = "Running"`;
  for await (const execution of client.workflow.list({ query: writers })) {
    byId.set(baseBackupId(cluster, execution.startTime), `basebackup ${execution.workflowId} is running`);
  }
  for await (const execution of client.workflow.list({ query: 'WorkflowType = "pointInTimeRestore" AND ExecutionStatus = "Running"' })) {
    const who = `pointInTimeRestore ${execution.workflowId} is running`;
    const details = await runningStatusDetails(client, execution);
    if (details && typeof details.cluster === 'string' && details.cluster !== cluster) continue;
    const used = [details?.baseBackupId, details?.baseBackup].filter((v): v is string => typeof v === 'string' && v.startsWith(`${cluster}/`));
    if (used.length === 0) unknown.push(who);
    for (const id of used) byId.set(id, byId.has(id) ? `${byId.get(id)}; ${who}` : who);
  }
  return { byId, unknown };
}

/** Base backup folders: listed ones and ones holding only incomplete writes (a dead multipart upload). */
async function baseInventory(repository: Repository, cluster: string): Promise<BaseBackupEntry[]> {
  const prefix = baseBackupsPrefix(cluster);
  const [listed, incomplete] = await Promise.all([listBaseBackups(repository, cluster), repository.listIncompleteWrites(prefix)]);
  const entries = new Map(listed.map((b) => [b.id, b]));
  for (const write of incomplete) {
    const timestamp = write.key.slice(prefix.length).split('/')[0] ?? '';
    const id = `${cluster}/${timestamp}`;
    if (/^\d{8}T\d{6}Z$/.test(timestamp) && !entries.has(id)) entries.set(id, { id, cluster, timestamp, state: 'incomplete' });
  }
  return [...entries.values()].sort((a, b) => b.timestamp.localeCompare(a.timestamp));
}

/** Removes one base backup folder, manifest first (from then on it is incomplete, never verified). Idempotent. */
export async function removeBaseBackupFolder(repository: Repository, id: string, signal?: AbortSignal): Promise<number> {
  return removeFolderManifestFirst(repository, baseBackupFolder(id), `${baseBackupFolder(id)}${BASE_ARTIFACT.manifest}`, signal);
}

export function createBasebackupActivities(deps: ActivityDeps) {
  const { databaseConfig, stepSettings, connection, repository, withHeartbeat, byteProgress } = activitySupport(deps);
  const { keysOf, encryptionFor } = createEncryptionSupport(deps);

  function clusterConfig(cluster: string): ClusterConfig {
    const config = deps.config.clusters[cluster];
    if (!config) throw failure('InvalidInput', `unknown cluster "${cluster}"`, `clusters in the worker's config: ${Object.keys(deps.config.clusters).join(', ') || '(none: add a clusters: section)'}`);
    return config;
  }

  async function facts(cluster: string): Promise<{ facts: ClusterFacts; where: string }> {
    const params = connection(clusterConfig(cluster).database);
    const where = describeConnection(params);
    try {
      return { facts: await probeCluster(params), where };
    } catch (error) {
      throw classifyPostgresError(error, where);
    }
  }

  return {
    /** Resolves a cluster's base backup settings: repository, compression, encryption, timeouts. Reads recipients only. */
    async planBasebackup(input: { cluster: string }): Promise<BasebackupPlan> {
      const config = clusterConfig(input.cluster);
      databaseConfig(config.database);
      const repositoryId = clusterRepositoryId(deps.config, input.cluster);
      const repo = repository(repositoryId);
      const encryption = await encryptionFor(repositoryId);
      const { method } = parseCompression(config.basebackup.compression);
      return {
        cluster: input.cluster,
        database: config.database,
        repository: repositoryId,
        location: repo.location,
        compression: method,
        compressionSetting: config.basebackup.compression,
        checkpoint: config.basebackup.checkpoint,
        maxRate: config.basebackup.maxRate ?? null,
        tarFile: `${BASE_ARTIFACT.tar}${storedSuffix(method, encryption !== null)}`,
        encryption,
        retention: config.retention !== undefined,
        ...stepSettings(),
      };
    },

    /** The server: version, system identifier, segment size; refuses what pg_basebackup -D - cannot back up. */
    async probeBasebackupServer(input: { cluster: string }): Promise<ServerFacts> {
      const { facts: server, where } = await facts(input.cluster);
      if (server.serverVersionNum < 130000) {
        throw failure('VersionIncompatible', `${where} runs PostgreSQL ${server.serverVersion}; base backups need PostgreSQL 13 or newer (backup manifests)`, 'upgrade the server, or back it up with pgrunbook backup (pg_dump)');
      }
      if (server.extraTablespaces.length > 0) {
        throw failure(
          'VersionIncompatible',
          `cluster ${input.cluster} has tablespaces besides pg_default and pg_global (${server.extraTablespaces.join(', ')}); a base backup streamed as one tar (pg_basebackup -D - -Ft) holds the main data directory only`,
          'move those tables to pg_default (ALTER TABLE ... SET TABLESPACE pg_default), or back this cluster up with pgBackRest',
        );
      }
      if (!server.canReplicate) {
        throw failure('PermissionDenied', `the role of ${where} may not take base backups (it is neither superuser nor REPLICATION)`, `ALTER ROLE <role> REPLICATION, and allow it a replication connection in pg_hba.conf`);
      }
      const tools = await basebackupToolsFor(server.serverMajor, databaseConfig(clusterConfig(input.cluster).database).pgBinDir);
      const { extraTablespaces: _spaces, canReplicate: _replicate, ...rest } = server;
      return { ...rest, target: where, pgBasebackup: tools.pgBasebackup };
    },

    /** pg_basebackup streamed into the repository. A retry removes the dead attempt's incomplete write and writes again. */
    async takeBasebackup(input: { backupId: string; plan: BasebackupPlan; serverMajor: number; segmentSize: number }): Promise<TakenBasebackup> {
      const { plan } = input;
      const params = connection(plan.database);
      const repo = repository(plan.repository);
      const key = `${baseBackupFolder(input.backupId)}${plan.tarFile}`;
      const tools = await basebackupToolsFor(input.serverMajor, databaseConfig(plan.database).pgBinDir);
      await repo.removeIncompleteWrites(key).catch(() => 0);
      const signal = Context.current().cancellationSignal;
      try {
        const taken = await withHeartbeat((report) =>
          basebackupToRepository({
            params, tools, repository: repo, key,
            compression: plan.compressionSetting,
            checkpoint: plan.checkpoint,
            ...(plan.maxRate ? { maxRate: plan.maxRate } : {}),
            ...(plan.encryption ? { encryptTo: plan.encryption.recipients } : {}),
            signal,
            onBytes: byteProgress(report),
          }),
        );
        const segment = (lsn: string): string => segmentFileName(taken.timeline, segmentOf(parseLsn(lsn)!, input.segmentSize), input.segmentSize);
        return { file: plan.tarFile, ...taken, walRange: { start: segment(taken.startLsn), stop: segment(taken.stopLsn) } };
      } catch (error) {
        if (signal.aborted) throw error;
        throw classifyToolError(error, describeConnection(params));
      }
    },

    /**
     * Reads the stored tar back (sha256), decrypts, decompresses and extracts it into a scratch
     * directory, runs stock pg_verifybackup on it, removes the scratch directory. A backup that
     * does not pass is reported (ok: false), not thrown: the workflow records it in the manifest.
     */
    async verifyBasebackup(input: { draft: Pick<BaseManifestDraft, 'id' | 'cluster' | 'files' | 'compression' | 'encryption'>; repository: string; serverMajor: number }): Promise<BaseVerification> {
      const repo = repository(input.repository);
      const keys = await keysOf(input.repository);
      const at = (): string => new Date().toISOString();
      if (input.draft.encryption && !(keys.identities && keys.identityRecipients.some((r) => input.draft.encryption!.recipients.includes(r)))) {
        // A backup-only worker: the stored bytes' checksum is all it can check.
        const digest = await withHeartbeat(async (report) => {
          const source = await repo.read(`${baseBackupFolder(input.draft.id)}${storedTarName(input.draft)}`, { signal: Context.current().cancellationSignal });
          const checksum = new ChecksumStream({ onBytes: byteProgress(report) });
          await pipeline(source, checksum, new Writable({ write: (_chunk, _encoding, callback) => callback() }));
          return { sha256: checksum.digest(), size: checksum.bytes };
        });
        const expected = input.draft.files[storedTarName(input.draft)]!;
        const ok = digest.sha256 === expected.sha256 && digest.size === expected.size;
        return { tool: 'sha256', ok, at: at(), detail: ok ? `encrypted to ${input.draft.encryption.recipients.join(', ')} and this worker holds no matching identity: sha256 of the stored tar checked only, pg_verifybackup not run` : `sha256 of the stored tar is ${digest.sha256}, expected ${expected.sha256}` };
      }
      const tools = await basebackupToolsFor(input.serverMajor, databaseConfig(clusterConfig(input.draft.cluster).database).pgBinDir);
      const asServerUser = isRoot();
      const scratch = await mkdtemp(join(tmpdir(), 'pgrunbook-verify-base-'));
      try {
        if (asServerUser) {
          const { uid, gid } = postgresUid();
          await chown(scratch, uid, gid);
        }
        const dataDir = join(scratch, 'data');
        const signal = Context.current().cancellationSignal;
        try {
          await withHeartbeat((report) => extractBaseBackup({ repository: repo, manifest: input.draft, keys, dataDir, asServerUser, signal, onBytes: byteProgress(report) }));
        } catch (error) {
          if (signal.aborted) throw error;
          const type = (error as { type?: string }).type;
          // A damaged artifact is a verification result; a missing key or a broken worker is not.
          if (type === 'VerificationFailed') return { tool: 'sha256', ok: false, at: at(), detail: (error as Error).message.split('\nHINT: ')[0]! };
          throw error;
        }
        try {
          // Heartbeats go on while pg_verifybackup reads every file (minutes on a large cluster).
          const output = await withHeartbeat(() => runTool(tools.pgVerifybackup, [dataDir], { cancelSignal: signal }));
          return { tool: `pg_verifybackup ${tools.major}`, ok: true, at: at(), detail: output.trim() || null };
        } catch (error) {
          if (signal.aborted || !(error instanceof ToolError) || error.exitCode === undefined) throw error;
          return { tool: `pg_verifybackup ${tools.major}`, ok: false, at: at(), detail: error.stderr.trim().split('\n').slice(-10).join('\n') || error.message };
        }
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    },

    /** The manifest, written last and atomically: it alone makes a base backup listable (verified or failed). */
    async writeBaseManifest(draft: BaseManifestDraft & { repository: string }): Promise<{ key: string }> {
      const { repository: repositoryId, ...rest } = draft;
      const manifest = BaseBackupManifest.parse({ formatVersion: 1, kind: 'basebackup', ...rest, pgrunbookVersion: PGRUNBOOK_VERSION });
      const key = `${baseBackupFolder(manifest.id)}${BASE_ARTIFACT.manifest}`;
      await writeAll(repository(repositoryId), key, JSON.stringify(manifest, null, 2) + '\n');
      deps.metrics?.basebackupFinished(manifest);
      return { key };
    },

    /** Every base backup folder with the policy's decision, and the WAL before the oldest kept one. Changes nothing. */
    async planBasePrune(input: { cluster: string }): Promise<BasePrunePlan> {
      const config = clusterConfig(input.cluster);
      const repositoryId = clusterRepositoryId(deps.config, input.cluster);
      const repo = repository(repositoryId);
      const now = new Date();
      const [backups, inUse, wal] = await Promise.all([baseInventory(repo, input.cluster), baseBackupsInUse(Context.current().client, input.cluster), listArchivedWal(repo, input.cluster)]);
      const guards = planGuards(inUse, backups, 'base backup');
      const { decisions, walCutoff } = planBaseRetention(backups, config.retention, now, guards);
      const segmentSize = backups.find((b) => b.manifest)?.manifest?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
      const walToDelete = walCutoff ? wal.filter((w) => walBeforeCutoff(w.name, walCutoff.segment, segmentSize)).map((w) => w.name) : [];
      return {
        cluster: input.cluster,
        repository: repositoryId,
        location: repo.location,
        configured: config.retention !== undefined,
        plannedAt: now.toISOString(),
        decisions,
        walCutoff,
        walToDelete: [...new Set(walToDelete)].sort(),
        walKept: wal.length - walToDelete.length,
        inUse: [...guards].map(([backupId, by]) => ({ backupId, by })),
        ...stepSettings(),
      };
    },

    /** Deletes the doomed base backups' manifests (skipping what a restore started using since the plan). */
    async retireBaseBackups(input: { cluster: string; repository: string; backupIds: string[] }): Promise<{ retired: string[]; skipped: { backupId: string; reason: string }[] }> {
      const repo = repository(input.repository);
      const inUse = await baseBackupsInUse(Context.current().client, input.cluster);
      return retireManifests(repo, input.backupIds, inUse, 'base backup', (id) => `${baseBackupFolder(id)}${BASE_ARTIFACT.manifest}`);
    },

    /** Removes the retired folders' files, then the WAL before the cutoff. A retry resumes (deletes are idempotent). */
    async removeBaseBackupFiles(input: { cluster: string; repository: string; backupIds: string[]; walCutoff: string | null }): Promise<{ files: number; walDeleted: number }> {
      const repo = repository(input.repository);
      const context = Context.current();
      let done = 0;
      let walDeleted = 0;
      const beat = (): void => context.heartbeat({ done, total: input.backupIds.length, walDeleted });
      beat();
      const timer = setInterval(beat, 1_000);
      let files = 0;
      try {
        for (const id of input.backupIds) {
          files += await removeBaseBackupFolder(repo, id, context.cancellationSignal);
          done += 1;
        }
        if (input.walCutoff) {
          // Re-listed now: a segment archived since the plan is newer than the cutoff anyway.
          const segmentSize = (await listBaseBackups(repo, input.cluster)).find((b) => b.manifest)?.manifest?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
          for (const w of await listArchivedWal(repo, input.cluster)) {
            if (!walBeforeCutoff(w.name, input.walCutoff, segmentSize)) continue;
            context.cancellationSignal.throwIfAborted();
            await repo.delete(w.key);
            walDeleted += 1;
          }
        }
      } finally {
        clearInterval(timer);
      }
      return { files, walDeleted };
    },

    /** pitr/<cluster>/reports/last-prune.json: what went, which rule decided it, where WAL was cut. */
    async writeBasePruneReport(input: { report: Omit<BasePruneReport, 'pgrunbook_version' | 'finished_at'> }): Promise<{ key: string; location: string }> {
      const report: BasePruneReport = { ...input.report, pgrunbook_version: PGRUNBOOK_VERSION, finished_at: new Date().toISOString() };
      return writePruneReportFile(repository(report.repository), basePruneReportKey(report.cluster), report);
    },
  };
}

export type BasebackupActivities = ReturnType<typeof createBasebackupActivities>;
