import { Context } from '@temporalio/activity';
import { defaultRepositoryId } from '../config/schema.js';
import { extensionsInventory, toTsv, viewReloptions, type SchemaVersion } from '../postgres/catalog.js';
import { describeConnection, pgClientConfig } from '../postgres/connection.js';
import { compressionArgs, dumpSchemaToRepository, dumpToRepository } from '../postgres/dump.js';
import { classifyPostgresError, classifyToolError, failure } from '../postgres/errors.js';
import { probeServer } from '../postgres/probe.js';
import { clientToolsFor, newestClientTools } from '../postgres/tools.js';
import { verifyArtifact } from '../postgres/verify.js';
import { ARTIFACT, artifactKey, dumpFileName, type DumpFormat } from '../repository/layout.js';
import { Manifest, type ArchiveEncryption, type FileEntry, type Verification } from '../repository/manifest.js';
import { writeAll } from '../repository/types.js';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { PGRUNBOOK_VERSION } from './version.js';
import { createEncryptionSupport, storedName } from './encryption.js';
import { activitySupport, type ActivityDeps } from './support.js';

export type { ActivityDeps } from './support.js';

export interface BackupPlan {
  repository: string;
  format: DumpFormat;
  compression: string;
  dumpFile: string;
  /** The repository encrypts (age): the dump and schema.sql are stored as *.age, to these recipients. */
  encryption?: ArchiveEncryption | null;
  /** databases.<id>.retention is configured: the workflow starts pruneBackups after a verified backup. */
  retention?: boolean;
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

export interface ProbeResult {
  serverVersion: string;
  serverMajor: number;
  databaseSizeBytes: number;
  pgDumpVersion: string;
  target: string;
}

export interface DumpResult {
  file: string;
  size: number;
  sha256: string;
  rowCounts: Record<string, number> | null;
  schemaVersion: SchemaVersion;
}

export interface MetadataResult {
  files: Record<string, FileEntry>;
  serverVersion: string;
}

/** A manifest before the activity stamps pgrunbook's version on it. */
export type ManifestDraft = Omit<Manifest, 'pgrunbookVersion' | 'manifestVersion'>;

/**
 * Backup activities. Each one is idempotent: a retry after a crash converges to the same state
 * (a rewritten artifact under the same key, leftovers of the dead attempt removed first).
 * Workflows pass ids only; connections and credentials are resolved here, from the worker's config.
 */
export function createBackupActivities(deps: ActivityDeps) {
  const { databaseConfig, stepSettings, connection, repository, withHeartbeat, withDumpSlot, byteProgress } = activitySupport(deps);
  const { encryptionFor, verificationKeys } = createEncryptionSupport(deps);

  return {
    /** Resolves config for a backup: repository, format, compression, timeouts. No I/O. */
    async planBackup(input: { database: string; repository?: string }): Promise<BackupPlan> {
      const db = databaseConfig(input.database);
      const repositoryId = input.repository ?? defaultRepositoryId(deps.config, input.database);
      repository(repositoryId);
      const { format, compression } = db.dump;
      if (format === 'plain' && !/^(gzip(:\d)?|none)$/.test(compression)) {
        throw failure('ConfigError', `databases.${input.database}.dump.compression: plain dumps are gzipped; ${compression} is not available for them`, 'use compression: gzip:6 with format: plain, or format: custom');
      }
      // Recipients are read (and checked) now: a bad recipients file fails the plan, not the dump.
      const encryption = await encryptionFor(repositoryId);
      return {
        repository: repositoryId,
        format,
        compression,
        dumpFile: storedName(dumpFileName(format), encryption),
        encryption,
        retention: db.retention !== undefined,
        ...stepSettings(),
      };
    },

    /** Step 1: server version, database exists, size, pg_dump able to dump this server. */
    async probeDatabase(input: { database: string; format?: DumpFormat; compression?: string }): Promise<ProbeResult> {
      const params = connection(input.database);
      const where = describeConnection(params);
      let facts;
      try {
        facts = await probeServer(params);
      } catch (error) {
        throw classifyPostgresError(error, where);
      }
      const tools = await clientToolsFor(facts.serverMajor, databaseConfig(input.database).pgBinDir);
      // Refuse a compression this pg_dump cannot do now, not after connecting for the dump.
      if (input.format && input.compression) compressionArgs(input.format, input.compression, tools.major);
      return { serverVersion: facts.serverVersion, serverMajor: facts.serverMajor, databaseSizeBytes: facts.databaseSizeBytes, pgDumpVersion: tools.version, target: where };
    },

    /** Step 2: pg_dump streamed into the repository, with sha256, size and snapshot-consistent row counts. */
    async dumpDatabase(input: { database: string; backupId: string; plan: BackupPlan; serverMajor: number }): Promise<DumpResult> {
      const db = databaseConfig(input.database);
      const params = connection(input.database);
      const repo = repository(input.plan.repository);
      const key = artifactKey(input.backupId, input.plan.dumpFile);
      const tools = await clientToolsFor(input.serverMajor, db.pgBinDir);
      // A previous attempt that died (worker killed) may have left an incomplete write behind.
      await repo.removeIncompleteWrites(key).catch(() => 0);
      const signal = Context.current().cancellationSignal;
      try {
        const outcome = await withHeartbeat((report) => withDumpSlot(() => dumpToRepository({
          params, tools, repository: repo, key,
          format: input.plan.format,
          compression: input.plan.compression,
          excludeSchemas: db.dump.excludeSchemas,
          excludeTables: db.dump.excludeTables,
          rowCounts: db.dump.rowCounts,
          schemaVersionQuery: db.schemaVersionQuery,
          ...(input.plan.encryption ? { encryptTo: input.plan.encryption.recipients } : {}),
          signal,
          onBytes: byteProgress(report),
        })));
        return { file: input.plan.dumpFile, ...outcome };
      } catch (error) {
        if (signal.aborted) throw error;
        throw classifyToolError(error, describeConnection(params));
      }
    },

    /** Step 4 (seed 003): schema-only SQL, version, extensions, view reloptions, row counts, schema version. */
    async snapshotMetadata(input: {
      database: string;
      backupId: string;
      repository: string;
      serverMajor: number;
      rowCounts: Record<string, number> | null;
      schemaVersion: SchemaVersion;
      /** The plan's: schema.sql is encrypted like the dump (schema.sql.age). */
      encryption?: ArchiveEncryption | null;
    }): Promise<MetadataResult> {
      const db = databaseConfig(input.database);
      const params = connection(input.database);
      const repo = repository(input.repository);
      const tools = await clientToolsFor(input.serverMajor, db.pgBinDir);
      const files: Record<string, FileEntry> = {};
      const put = async (name: string, content: string): Promise<void> => {
        const { size } = await writeAll(repo, artifactKey(input.backupId, name), content);
        files[name] = { size, sha256: createHash('sha256').update(content).digest('hex') };
      };
      const client = new pg.Client(pgClientConfig(params));
      let serverVersion: string;
      try {
        await client.connect();
        const banner = await client.query<{ version: string; v: string }>("SELECT version() AS version, current_setting('server_version') AS v");
        serverVersion = banner.rows[0]!.v;
        await put(ARTIFACT.version, `${banner.rows[0]!.version}\n`);
        const extensions = await extensionsInventory(client);
        await put(ARTIFACT.extensions, toTsv(['name', 'version', 'schema'], extensions.map((e) => [e.name, e.version, e.schema])));
        const views = await viewReloptions(client);
        await put(ARTIFACT.viewsReloptions, toTsv(['schema', 'view', 'kind', 'reloptions'], views.map((v) => [v.schema, v.view, v.kind, v.reloptions])));
      } catch (error) {
        throw classifyPostgresError(error, describeConnection(params));
      } finally {
        await client.end().catch(() => undefined);
      }
      if (input.rowCounts) {
        await put(ARTIFACT.rowCounts, toTsv(['table', 'rows'], Object.entries(input.rowCounts).map(([t, n]) => [t, n])));
      }
      const sv = input.schemaVersion;
      await put(ARTIFACT.schemaVersion, sv.query ? `${sv.value ?? ''}\n-- query: ${sv.query}\n${sv.error ? `-- error: ${sv.error}\n` : ''}` : '-- no schema version query configured or detected\n');
      try {
        const schemaFile = storedName(ARTIFACT.schema, input.encryption);
        const encryptTo = input.encryption?.recipients;
        files[schemaFile] = await withHeartbeat(() => withDumpSlot(() => dumpSchemaToRepository({ params, tools, repository: repo, key: artifactKey(input.backupId, schemaFile), signal: Context.current().cancellationSignal, ...(encryptTo ? { encryptTo } : {}) })));
      } catch (error) {
        throw classifyToolError(error, describeConnection(params));
      }
      return { files, serverVersion };
    },

    /** Step 5: re-read the stored artifact; sha256 and size must match; pg_restore -l must read it. */
    async verifyBackup(input: { backupId: string; repository: string; file: string; format: DumpFormat; expected: { size: number; sha256: string }; encryption?: ArchiveEncryption | null }): Promise<Verification> {
      const tools = await newestClientTools();
      // Encrypted: decrypted in-stream if this worker holds the key, else checksum only (and said so).
      const encryption = await verificationKeys(input.repository, input.encryption);
      return withHeartbeat((report) =>
        verifyArtifact({
          repository: repository(input.repository),
          key: artifactKey(input.backupId, input.file),
          format: input.format,
          expected: input.expected,
          pgRestore: tools.pgRestore,
          ...(encryption ? { encryption } : {}),
          signal: Context.current().cancellationSignal,
          onBytes: byteProgress(report),
        }),
      );
    },

    /** Step 6: the manifest, written last and atomically; it alone makes a backup listable as good. */
    async writeManifest(draft: ManifestDraft): Promise<{ key: string }> {
      const manifest = Manifest.parse({ manifestVersion: 1, ...draft, pgrunbookVersion: PGRUNBOOK_VERSION });
      const key = artifactKey(manifest.id, ARTIFACT.manifest);
      await writeAll(repository(manifest.repository), key, JSON.stringify(manifest, null, 2) + '\n');
      deps.metrics?.backupFinished(manifest);
      return { key };
    },
  };
}

export type BackupActivities = ReturnType<typeof createBackupActivities>;
