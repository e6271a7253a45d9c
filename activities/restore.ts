import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Context } from '@temporalio/activity';
import type pg from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { AppControllerError } from '../app-controllers/errors.js';
import { waitUntilHealthy } from '../app-controllers/health.js';
import { createAppController } from '../app-controllers/registry.js';
import type { AppSnapshot } from '../app-controllers/types.js';
import { defaultRepositoryId } from '../config/schema.js';
import {
  createDatabase, databaseExists, databaseInfo, drainConnections, DrainTimeoutError, dropDatabase,
  renameDatabases, setAllowConnections, userRelationCount, withMaintenanceClient, type DatabaseInfo,
} from '../postgres/admin.js';
import { describeConnection, type ConnectionParams } from '../postgres/connection.js';
import { byteLength, isScratchDatabaseName, MAX_IDENTIFIER_BYTES, preRestoreDatabaseName, scratchDatabaseName } from '../postgres/database-names.js';
import { prunePreRestoreDatabases } from '../postgres/pre-restore.js';
import { classifyPostgresError, failure } from '../postgres/errors.js';
import { clientToolsFor } from '../postgres/tools.js';
import { checkRestoredDatabase, type RestoredCheck } from '../postgres/verify-restored.js';
import { scrubSecrets } from '../process/secrets.js';
import { latestGoodBackup, readManifest } from '../repository/catalog.js';
import { compactTimestamp, type DumpFormat } from '../repository/layout.js';
import type { ArchiveEncryption, Manifest, Verification } from '../repository/manifest.js';
import { writeAll, type Repository } from '../repository/types.js';
import type { ParsedRestoreInput } from '../workflows/restore-input.js';
import { createEncryptionSupport } from './encryption.js';
import { createRestoreSteps } from './restore-into.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { PGRUNBOOK_VERSION } from './version.js';

export interface RestorePlan {
  /** The database id in the worker's config. */
  database: string;
  backupId: string;
  repository: string;
  format: DumpFormat;
  dumpFile: string;
  dump: { size: number; sha256: string; databaseSizeBytes: number };
  /** The backup is encrypted (age) to these recipients; absent or null: stored in the clear. */
  encryption?: ArchiveEncryption | null;
  backupStartedAt: string;
  /** The database name restored into, and the configured (live) one. */
  target: string;
  liveDatabase: string;
  /** A restore over the configured database: approval, app and safety backup apply. */
  targetIsLive: boolean;
  strategy: 'swap' | 'in-place';
  /** swap: restored and verified here first; renamed into place. */
  scratch: string;
  /** swap: the old database's name afterwards. */
  preRestore: string;
  jobs: number;
  noOwner: boolean;
  noPrivileges: boolean;
  role: string | null;
  approval: { required: boolean; timeoutSeconds: number };
  safetyBackup: boolean;
  app: { type: string; description: string; health: string | null };
  onStepFailure: 'ask' | 'abort';
  decisionTimeoutSeconds: number;
  keepPreRestoreDays: number | null;
  heartbeatSeconds: number;
  longStepSeconds: number;
  drainTimeoutSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

export interface FreeSpaceCheck {
  where: string;
  path: string | null;
  neededBytes: number;
  availableBytes: number | null;
  ok: boolean | null;
  note?: string;
}

export interface PreflightResult {
  target: DatabaseInfo | null;
  serverVersion: string;
  serverMajor: number;
  pgRestoreVersion: string;
  verification: Verification;
  freeSpace: FreeSpaceCheck[];
  warnings: string[];
}

export interface RestoreStepResult {
  database: string;
  method: 'stream' | 'file' | 'download';
  jobs: number;
  bytesRead: number;
  restoredSizeBytes: number;
  seconds: number;
}

export interface RestoreReport {
  workflowId: string;
  runId: string;
  database: string;
  backupId: string | null;
  repository: string | null;
  target: string | null;
  strategy: string | null;
  outcome: 'completed' | 'failed' | 'cancelled' | 'rejected';
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  /** Application downtime: from scale-down to ready again (null if the app was not touched). */
  downtimeSeconds: number | null;
  steps: unknown[];
  decisions: unknown[];
  undo: unknown[];
  verification: RestoredCheck | null;
  preRestoreDatabase: string | null;
  safetyBackupId: string | null;
  error: { step: string; type: string; message: string } | null;
  requestedBy: string | null;
}

/** The restore report's key in the backup's repository: beside the backups, never mistaken for one. */
export const restoreReportKey = (database: string, startedAt: Date): string => `${database}/_reports/restore-${compactTimestamp(startedAt)}.json`;

/**
 * Restore activities (seeds 000, 001 §4A, 002 §5, 004). Each one is idempotent: run again after a
 * worker died, it converges to the same state and never repeats a destructive action harmfully.
 * Destructive ones check their own preconditions again (defence in depth): the scratch drop only
 * drops scratch names, the in-place recreate only runs with a verified safety backup.
 */
export function createRestoreActivities(deps: ActivityDeps) {
  const { env, stepSettings, databaseConfig, connection, repository, withHeartbeat } = activitySupport(deps);

  const maintenance = <T>(database: string, run: (client: pg.Client, params: ConnectionParams) => Promise<T>): Promise<T> => {
    const params = connection(database);
    const db = databaseConfig(database);
    return withMaintenanceClient(params, db.restore.maintenanceDatabase, (client) => run(client, params)).catch((error: unknown) => {
      throw classifyPostgresError(error, `${describeConnection({ ...params, database: db.restore.maintenanceDatabase })}`);
    });
  };

  const appController = (database: string) => createAppController(databaseConfig(database).app, env);

  /** App controller errors are retryable (APIs hiccup) but keep their message and hint. */
  const appFailure = (error: unknown, type: 'AppControllerFailed' | 'HealthCheckFailed'): unknown => {
    if (Context.current().cancellationSignal.aborted) return error;
    if (error instanceof AppControllerError) return failure(type, error.message);
    return failure(type, scrubSecrets((error as Error)?.message ?? String(error)));
  };

  const { restoreInto, verifyArchive } = createRestoreSteps(deps);
  const { assertDecryptable } = createEncryptionSupport(deps);

  /** An empty database to restore into: created, or re-created when a killed attempt left objects in it. */
  async function freshDatabase(plan: RestorePlan, name: string, like: DatabaseInfo | null): Promise<void> {
    await maintenance(plan.database, async (client, params) => {
      if (await databaseExists(client, name)) {
        if ((await userRelationCount(params, name)) === 0) return;
        await dropDatabase(client, name);
      }
      await createDatabase(client, name, like ?? undefined);
    });
  }

  return {
    /** Step "resolve": the backup to restore (an id or the latest verified one) and every setting, from the worker's config. */
    async planRestore(input: { request: ParsedRestoreInput; stamp: string }): Promise<RestorePlan> {
      const { request } = input;
      const db = databaseConfig(request.database);
      const params = connection(request.database);
      const repositoryId = request.repository ?? defaultRepositoryId(deps.config, request.database);
      const repo = repository(repositoryId);
      const manifest = await resolveRestorableBackup(repo, request.database, request.backup);
      const target = request.targetDatabase ?? params.database;
      const targetIsLive = target === params.database;
      const strategy = request.strategy ?? db.restore.strategy;
      let safetyBackup = request.safetyBackup ?? (db.restore.safetyBackup === 'always' || (db.restore.safetyBackup === 'auto' && strategy === 'in-place'));
      if (!targetIsLive) safetyBackup = false;
      if (targetIsLive && strategy === 'in-place' && !safetyBackup) {
        throw failure('InvalidInput', 'safetyBackup: an in-place restore drops the live database; it needs a verified safety backup first', 'use strategy swap (the old database is kept under another name), or leave safetyBackup on');
      }
      const scratch = scratchDatabaseName(target, input.stamp);
      const preRestore = preRestoreDatabaseName(target, input.stamp);
      for (const name of strategy === 'swap' ? [scratch, preRestore] : [target]) {
        if (byteLength(name) > MAX_IDENTIFIER_BYTES) {
          throw failure('InvalidInput', `database name ${name} is ${byteLength(name)} bytes; PostgreSQL allows ${MAX_IDENTIFIER_BYTES}`, 'use strategy in-place for databases with names this long, or restore into a shorter --target-database');
        }
      }
      const controller = appController(request.database);
      const jobs = request.jobs ?? db.restore.jobs;
      return {
        database: request.database,
        ...archiveOf(manifest),
        repository: repositoryId,
        target,
        liveDatabase: params.database,
        targetIsLive,
        strategy,
        scratch,
        preRestore,
        jobs: manifest.format === 'plain' ? 1 : jobs,
        noOwner: request.noOwner ?? db.restore.noOwner,
        noPrivileges: request.noPrivileges ?? db.restore.noPrivileges,
        role: request.role ?? db.restore.role ?? null,
        approval: { required: targetIsLive && (request.requireApproval ?? db.restore.approval.required), timeoutSeconds: Math.round(db.restore.approval.timeoutMinutes * 60) },
        safetyBackup,
        app: { type: targetIsLive ? db.app.type : 'none', description: targetIsLive ? controller.describe() : 'not touched (restore under another name)', health: targetIsLive ? (db.app.health?.url ?? null) : null },
        onStepFailure: request.onStepFailure ?? db.restore.onStepFailure,
        decisionTimeoutSeconds: Math.round(db.restore.decisionTimeoutHours * 3600),
        keepPreRestoreDays: db.restore.keepPreRestoreDays ?? null,
        drainTimeoutSeconds: db.restore.drainTimeoutSeconds,
        ...stepSettings(),
      };
    },

    /**
     * Step "preflight": nothing destructive happens before this passes. The artifact is verified
     * (sha256 + pg_restore -l), the server is reachable, this worker's pg_restore can restore the
     * archive into it, the names are free, and there is room where it can be measured.
     */
    async preflightRestore(input: { plan: RestorePlan }): Promise<PreflightResult> {
      const { plan } = input;
      const db = databaseConfig(plan.database);
      const warnings: string[] = [];
      // An encrypted backup this worker cannot decrypt (no key, wrong key) fails first, in a second.
      await assertDecryptable(plan, repository(plan.repository));
      const facts = await maintenance(plan.database, async (client) => {
        const { rows } = await client.query<{ v: string; n: string; dir: string | null }>(
          "SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n, (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS dir",
        );
        const target = (await databaseInfo(client, plan.target)) ?? null;
        const scratchTaken = plan.strategy === 'swap' && (await databaseExists(client, plan.scratch));
        const preRestoreTaken = plan.strategy === 'swap' && (await databaseExists(client, plan.preRestore));
        return { version: rows[0]!.v, major: Math.floor(Number(rows[0]!.n) / 10_000), dataDirectory: rows[0]!.dir, target, scratchTaken, preRestoreTaken };
      });
      if (!plan.targetIsLive && facts.target) {
        throw failure('TargetExists', `database ${plan.target} already exists; a restore under another name never overwrites one`, `choose a new --target-database, or drop ${plan.target} first if it is a leftover test restore`);
      }
      if (facts.preRestoreTaken && !facts.scratchTaken) {
        // Only our own swap (an earlier attempt of this very workflow) can have created it.
        warnings.push(`${plan.preRestore} already exists: an earlier attempt of this restore got as far as the swap`);
      }
      if (facts.scratchTaken) warnings.push(`${plan.scratch} exists from an earlier attempt of this restore; it will be re-created`);
      const tools = await clientToolsFor(facts.major, db.pgBinDir);
      // pg_restore reads archives of its own major or older; a newer pg_dump's archive needs a newer pg_restore.
      const manifest = await readManifest(repository(plan.repository), plan.backupId);
      const dumpedBy = /\(PostgreSQL\)\s+(\d+)/.exec(manifest.pgDumpVersion ?? '')?.[1];
      if (dumpedBy && Number(dumpedBy) > tools.major) {
        throw failure('VersionIncompatible', `the backup was made by pg_dump ${dumpedBy}; pg_restore ${tools.major} on this worker cannot read it`, `install PostgreSQL ${dumpedBy}+ client tools on the worker, or set pgBinDir`);
      }
      const sourceMajor = Number(/^(\d+)/.exec(manifest.serverVersion ?? '')?.[1] ?? 0);
      if (sourceMajor > facts.major) warnings.push(`the backup comes from PostgreSQL ${sourceMajor} and the target runs ${facts.major}: restoring into an older server may fail on newer syntax`);

      const freeSpace: FreeSpaceCheck[] = [];
      // An encrypted archive is decrypted into a temp file for pg_restore -j, even from a local repository.
      const needsDownload = plan.format === 'custom' && plan.jobs > 1 && (!!plan.encryption || !repository(plan.repository).localFile);
      if (needsDownload) {
        const dir = db.restore.tempDir ?? tmpdir();
        freeSpace.push(await measure('worker temp dir (download for pg_restore -j)', dir, Math.ceil(plan.dump.size * 1.05)));
      }
      const local = ['localhost', '127.0.0.1', '::1'].includes(connection(plan.database).host) || connection(plan.database).host.startsWith('/');
      if (facts.dataDirectory && local) {
        freeSpace.push(await measure('database server data directory', facts.dataDirectory, Math.ceil(plan.dump.databaseSizeBytes * 1.1)));
      } else {
        freeSpace.push({ where: 'database server data directory', path: null, neededBytes: plan.dump.databaseSizeBytes, availableBytes: null, ok: null, note: 'not measurable from the worker (remote server, or no permission to read data_directory)' });
      }
      const short = freeSpace.filter((f) => f.ok === false);
      if (short.length > 0) {
        throw failure('InsufficientSpace', short.map((f) => `${f.where} ${f.path}: ${f.availableBytes} bytes free, ${f.neededBytes} needed`).join('; '), 'free space, or set restore.tempDir to a bigger disk');
      }

      const verification = await verifyArchive(plan, tools.pgRestore);
      if (!verification.ok) {
        throw failure('VerificationFailed', `backup ${plan.backupId} failed verification at preflight: ${verification.error ?? 'unknown reason'}; nothing was changed`, `run \`pgrunbook backups verify ${plan.backupId}\`; restore another backup with --backup`);
      }
      return { target: facts.target, serverVersion: facts.version, serverMajor: facts.major, pgRestoreVersion: tools.version.replace('pg_dump', 'pg_restore'), verification, freeSpace, warnings };
    },

    /** swap step "restore": into the scratch database, while the application still runs. */
    async restoreIntoScratch(input: { plan: RestorePlan; like: DatabaseInfo | null }): Promise<RestoreStepResult> {
      if (!isScratchDatabaseName(input.plan.scratch)) throw failure('InvalidInput', `${input.plan.scratch} is not a scratch database name`);
      await freshDatabase(input.plan, input.plan.scratch, input.like);
      return restoreInto({ plan: input.plan, into: input.plan.scratch, step: 'restore' });
    },

    /** in-place step "restore": into the target, which drop-and-recreate emptied. */
    async restoreIntoTarget(input: { plan: RestorePlan; like: DatabaseInfo | null }): Promise<RestoreStepResult> {
      await freshDatabase(input.plan, input.plan.target, input.like);
      return restoreInto({ plan: input.plan, into: input.plan.target, step: 'restore' });
    },

    /** Step "verify": row counts and schema version against the backup's manifest, smoke queries, ANALYZE. */
    async verifyRestoredDatabase(input: { plan: RestorePlan; database: string }): Promise<RestoredCheck> {
      const { plan } = input;
      const manifest = await readManifest(repository(plan.repository), plan.backupId);
      const db = databaseConfig(plan.database);
      let check: RestoredCheck;
      try {
        check = await withHeartbeat(() =>
          checkRestoredDatabase(connection(plan.database), input.database, {
            rowCounts: manifest.rowCounts,
            schemaVersion: manifest.schemaVersion,
            smokeQueries: db.restore.smokeQueries,
            analyze: db.restore.analyze,
          }),
        );
      } catch (error) {
        throw classifyPostgresError(error, describeConnection({ ...connection(plan.database), database: input.database }));
      }
      if (!check.ok) {
        throw ApplicationFailure.create({
          type: 'VerificationFailed',
          nonRetryable: true,
          message: `${input.database} does not match backup ${plan.backupId}: ${check.problems.join('; ')}`,
          details: [check],
        });
      }
      return check;
    },

    /** Step "scale-down", part 1: remember how the application runs now (read-only). */
    async captureApp(input: { database: string }): Promise<AppSnapshot> {
      try {
        return await appController(input.database).capture(Context.current().cancellationSignal);
      } catch (error) {
        throw appFailure(error, 'AppControllerFailed');
      }
    },

    /** Step "scale-down", part 2: stop it and wait until it is really down. */
    async stopApp(input: { database: string; snapshot: AppSnapshot }): Promise<void> {
      try {
        await withHeartbeat(() => appController(input.database).stop(input.snapshot, Context.current().cancellationSignal));
      } catch (error) {
        throw appFailure(error, 'AppControllerFailed');
      }
    },

    /** Step "scale-up" (and its undo): back to the remembered state. */
    async startApp(input: { database: string; snapshot: AppSnapshot }): Promise<void> {
      try {
        await withHeartbeat(() => appController(input.database).start(input.snapshot, Context.current().cancellationSignal));
      } catch (error) {
        throw appFailure(error, 'AppControllerFailed');
      }
    },

    /** Step "health": the configured endpoint answers ready. */
    async waitForAppHealth(input: { database: string }): Promise<{ attempts: number; seconds: number } | null> {
      const health = databaseConfig(input.database).app.health;
      if (!health) return null;
      const started = Date.now();
      let attempts = 0;
      try {
        await withHeartbeat((beat) => waitUntilHealthy(health, Context.current().cancellationSignal, (a) => {
          attempts = a.attempt;
          beat({ bytes: 0, bytesPerSecond: 0 });
        }));
      } catch (error) {
        throw appFailure(error, 'HealthCheckFailed');
      }
      return { attempts, seconds: (Date.now() - started) / 1000 };
    },

    /** Step "block-connections": ALLOW_CONNECTIONS false, terminate sessions, wait until none remain. */
    async blockConnections(input: { database: string; name: string; timeoutSeconds: number }): Promise<{ terminated: number }> {
      return maintenance(input.database, async (client) => {
        if (!(await setAllowConnections(client, input.name, false))) return { terminated: 0 };
        try {
          const terminated = await withHeartbeat(() => drainConnections(client, input.name, { timeoutMs: input.timeoutSeconds * 1000, signal: Context.current().cancellationSignal }));
          return { terminated };
        } catch (error) {
          if (error instanceof DrainTimeoutError) {
            throw failure('ConnectionsRemain', error.message, 'something reconnects as a superuser or keeps a session open; stop it, then retry the step (`pgrunbook step retry`)');
          }
          throw error;
        }
      });
    },

    /** Step "allow-connections" (and the undo of block-connections). Missing databases are skipped. */
    async allowConnections(input: { database: string; names: string[] }): Promise<{ allowed: string[] }> {
      return maintenance(input.database, async (client) => {
        const allowed: string[] = [];
        for (const name of input.names) if (await setAllowConnections(client, name, true)) allowed.push(name);
        return { allowed };
      });
    },

    /**
     * Step "swap": in one transaction, the live database becomes `<db>__pre_restore_<ts>` and the
     * verified scratch database takes its name. Idempotent: a retry after it happened is a no-op.
     */
    async swapDatabases(input: { plan: RestorePlan; timeoutSeconds: number }): Promise<{ swapped: boolean; preRestore: string | null }> {
      const { plan } = input;
      return maintenance(plan.database, async (client) => {
        const scratch = await databaseExists(client, plan.scratch);
        const live = await databaseExists(client, plan.target);
        const pre = await databaseExists(client, plan.preRestore);
        if (!scratch) {
          if (live && pre) return { swapped: false, preRestore: plan.preRestore }; // done by an earlier attempt
          if (live) return { swapped: false, preRestore: null }; // target was absent: scratch already renamed into place
          throw failure('RestoreFailed', `neither ${plan.scratch} nor ${plan.target} exists; nothing to swap`, 'the restored copy is gone; retry the restore from the start');
        }
        const renames: [string, string][] = [];
        if (live) {
          // block-connections drained it; a session that was mid-login then may still have arrived.
          await drainConnections(client, plan.target, { timeoutMs: input.timeoutSeconds * 1000 });
          renames.push([plan.target, plan.preRestore]);
        }
        renames.push([plan.scratch, plan.target]);
        await drainConnections(client, plan.scratch, { timeoutMs: input.timeoutSeconds * 1000 });
        await renameDatabases(client, renames);
        return { swapped: true, preRestore: live ? plan.preRestore : null };
      });
    },

    /**
     * Undo of "swap": the original gets its name back; the restored copy becomes the scratch
     * database again (dropped by the next undo). Sessions on the restored copy are terminated first.
     */
    async unswapDatabases(input: { plan: RestorePlan; timeoutSeconds: number }): Promise<{ unswapped: boolean }> {
      const { plan } = input;
      return maintenance(plan.database, async (client) => {
        const pre = await databaseExists(client, plan.preRestore);
        const live = await databaseExists(client, plan.target);
        const scratch = await databaseExists(client, plan.scratch);
        if (!pre && (scratch || !live)) return { unswapped: false }; // the swap never happened, or was undone
        const renames: [string, string][] = [];
        if (live) {
          await setAllowConnections(client, plan.target, false);
          await drainConnections(client, plan.target, { timeoutMs: input.timeoutSeconds * 1000 });
          renames.push([plan.target, plan.scratch]);
        }
        if (pre) {
          await drainConnections(client, plan.preRestore, { timeoutMs: input.timeoutSeconds * 1000 });
          renames.push([plan.preRestore, plan.target]);
        }
        await renameDatabases(client, renames);
        return { unswapped: true };
      });
    },

    /** Undo of "restore" (swap): drops the scratch database. Refuses any name that is not one. */
    async dropScratchDatabase(input: { plan: RestorePlan }): Promise<{ dropped: boolean }> {
      if (!isScratchDatabaseName(input.plan.scratch)) throw failure('InvalidInput', `${input.plan.scratch} is not a scratch database name; refusing to drop it`);
      return maintenance(input.plan.database, async (client) => ({ dropped: await dropDatabase(client, input.plan.scratch) }));
    },

    /**
     * in-place step "drop-and-recreate" (seeds 000, 001, 004): DROP DATABASE, CREATE DATABASE.
     * Runs only when a verified safety backup of the live data exists, or when the target never
     * existed; it checks the safety backup's manifest itself.
     */
    async dropAndRecreateTarget(input: { plan: RestorePlan; like: DatabaseInfo | null; safetyBackupId: string | null }): Promise<{ dropped: boolean }> {
      const { plan } = input;
      if (input.like) {
        if (!input.safetyBackupId) throw failure('InvalidInput', `refusing to drop ${plan.target}: no safety backup was taken`, 'in-place restores need a verified safety backup');
        const safety = await readManifest(repository(plan.repository), input.safetyBackupId).catch(() => undefined);
        if (safety?.status !== 'verified') throw failure('VerificationFailed', `refusing to drop ${plan.target}: safety backup ${input.safetyBackupId} is not verified`, 'retry the safety backup');
      }
      return maintenance(plan.database, async (client) => {
        const dropped = await dropDatabase(client, plan.target);
        await createDatabase(client, plan.target, input.like ?? undefined);
        return { dropped };
      });
    },

    /** Undo of in-place "drop-and-recreate": the live data back from the safety backup. */
    async restoreSafetyBackup(input: { plan: RestorePlan; like: DatabaseInfo | null; safetyBackupId: string }): Promise<RestoreStepResult> {
      const safety = await readManifest(repository(input.plan.repository), input.safetyBackupId);
      if (!safety.dump || !safety.format) throw failure('BackupNotFound', `safety backup ${input.safetyBackupId} records no dump`);
      const plan: RestorePlan = {
        ...input.plan,
        backupId: safety.id,
        format: safety.format,
        dumpFile: safety.dump.file,
        dump: { size: safety.dump.size, sha256: safety.dump.sha256, databaseSizeBytes: safety.dump.databaseSizeBytes },
        encryption: safety.encryption ?? null,
        jobs: safety.format === 'plain' ? 1 : input.plan.jobs,
        noOwner: false,
        noPrivileges: false,
        role: null,
      };
      await maintenance(plan.database, async (client) => {
        await dropDatabase(client, plan.target);
        await createDatabase(client, plan.target, input.like ?? undefined);
      });
      return restoreInto({ plan, into: plan.target, step: 'undo:restore-safety-backup' });
    },

    /** Step "prune": drops pre-restore databases older than keepPreRestoreDays, naming each in the report. */
    async prunePreRestoreDatabases(input: { database: string; olderThanDays: number; keep: string[] }): Promise<{ dropped: string[] }> {
      const target = connection(input.database).database;
      return maintenance(input.database, async (client) => ({ dropped: await prunePreRestoreDatabases(client, target, input.olderThanDays, input.keep) }));
    },

    /** Step "report": the JSON result, kept in the backup's repository. */
    async writeRestoreReport(input: { repository: string; report: RestoreReport }): Promise<{ key: string; location: string }> {
      const repo = repository(input.repository);
      const key = restoreReportKey(input.report.database, new Date(input.report.startedAt));
      await writeAll(repo, key, JSON.stringify({ reportVersion: 1, pgrunbookVersion: PGRUNBOOK_VERSION, ...input.report }, null, 2) + '\n');
      deps.metrics?.restoreFinished(input.report);
      return { key, location: `${repo.location}/${key}` };
    },
  };
}

/**
 * The backup a restore or drill uses: `latest` (the newest verified one) or a named one, which
 * must be a verified backup of this database. Failed and cancelled backups are refused.
 */
export type RestorableManifest = Manifest & { dump: NonNullable<Manifest['dump']>; format: NonNullable<Manifest['format']> };

export async function resolveRestorableBackup(repo: Repository, database: string, backup: string): Promise<RestorableManifest> {
  let manifest: Manifest;
  if (backup === 'latest') {
    const latest = await latestGoodBackup(repo, database);
    if (!latest?.manifest) {
      throw failure('BackupNotFound', `no verified backup of ${database} in ${repo.location}`, `run \`pgrunbook backup --database ${database} --wait\` first, or name a backup with --backup`);
    }
    manifest = latest.manifest;
  } else {
    if (!backup.startsWith(`${database}/`)) {
      throw failure('InvalidInput', `backup: ${backup} is a backup of another database, not of ${database}`, 'restore it with --target-database into a new name, or pick one from `pgrunbook backups list`');
    }
    try {
      manifest = await readManifest(repo, backup);
    } catch {
      throw failure('BackupNotFound', `backup ${backup} has no readable manifest in ${repo.location}`, 'see `pgrunbook backups list`; a backup without a manifest is incomplete');
    }
    if (manifest.status !== 'verified') {
      throw failure('BackupNotFound', `backup ${backup} is ${manifest.status}${manifest.error ? ` (${manifest.error.message})` : ''}; only verified backups are restored`, 'pick a verified backup from `pgrunbook backups list`');
    }
  }
  if (!manifest.dump || !manifest.format) throw failure('BackupNotFound', `backup ${manifest.id} records no dump file`, 'pick another backup');
  return manifest as RestorableManifest;
}

/** The plan's description of a backup's archive, from its manifest. */
export function archiveOf(manifest: RestorableManifest): Pick<RestorePlan, 'backupId' | 'format' | 'dumpFile' | 'dump' | 'encryption' | 'backupStartedAt'> {
  return {
    backupId: manifest.id,
    format: manifest.format,
    dumpFile: manifest.dump.file,
    dump: { size: manifest.dump.size, sha256: manifest.dump.sha256, databaseSizeBytes: manifest.dump.databaseSizeBytes },
    encryption: manifest.encryption ?? null,
    backupStartedAt: manifest.startedAt,
  };
}

async function measure(where: string, path: string, neededBytes: number): Promise<FreeSpaceCheck> {
  try {
    const s = await statfs(path);
    const availableBytes = Number(s.bavail) * Number(s.bsize);
    return { where, path, neededBytes, availableBytes, ok: availableBytes >= neededBytes };
  } catch (error) {
    return { where, path, neededBytes, availableBytes: null, ok: null, note: `not measurable: ${(error as Error).message}` };
  }
}

export type RestoreActivities = ReturnType<typeof createRestoreActivities>;
