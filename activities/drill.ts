import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import type pg from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { defaultRepositoryId, type DrillServerTarget } from '../config/schema.js';
import { createDatabase, databaseExists, dropDatabase, userRelationCount, withMaintenanceClient } from '../postgres/admin.js';
import { quoteIdent } from '../postgres/catalog.js';
import { describeConnection, pgClientConfig, resolveConnection, type ConnectionParams } from '../postgres/connection.js';
import { byteLength, MAX_IDENTIFIER_BYTES } from '../postgres/database-names.js';
import { drillClusterName, isDrillClusterDir, provisionDrillCluster, removeDrillCluster } from '../postgres/drill-cluster.js';
import { classifyPostgresError, failure } from '../postgres/errors.js';
import { clientToolsFor } from '../postgres/tools.js';
import { checkRestoredDatabase, type RestoredCheck } from '../postgres/verify-restored.js';
import { readManifest } from '../repository/catalog.js';
import { drillReportKey, type DrillCheck, type DrillReport } from '../repository/reports.js';
import { writeAll } from '../repository/types.js';
import { postgresServerBinDir } from '../stack/binaries.js';
import { freePort } from '../stack/ports.js';
import type { ParsedDrillInput } from '../workflows/drill-input.js';
import { archiveOf, resolveRestorableBackup, type RestorePlan, type RestoreStepResult } from './restore.js';
import { createEncryptionSupport } from './encryption.js';
import { createRestoreSteps, type RestoreTarget } from './restore-into.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { postWebhook } from './notify.js';
import { PGRUNBOOK_VERSION } from './version.js';

// Restore drill activities (seed 001 §5, seed 002 §3-4): restore a backup somewhere disposable,
// prove it holds what the backup recorded, measure how long that took, tear it all down. The
// disposable target is named after the drill's start, so every retried step (and the teardown)
// finds the same one.

export interface DrillTargetPlan {
  type: 'cluster' | 'server';
  /** The database restored into on the target. */
  database: string;
  /** cluster: its directory on the worker host. */
  clusterDir: string | null;
  /** server: the drill server, as an operator reads it (no credentials). */
  server: string | null;
}

export interface DrillPlan {
  database: string;
  /** Nothing to restore yet: the canary is on, so the drill takes a fresh backup first. */
  needsFreshBackup: boolean;
  /** The backup and restore settings; null until the fresh backup exists. */
  restore: RestorePlan | null;
  target: DrillTargetPlan;
  canary: { enabled: boolean; table: string; token: string | null };
  queryBudgetMs: number;
  repository: string;
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: RestorePlan['retry'];
}

export interface ProvisionedTarget {
  type: 'cluster' | 'server';
  database: string;
  server: string;
  serverVersion: string;
  /** cluster: the port its socket listens on; and the host that runs it. */
  port: number | null;
  host: string;
}

export interface DrillCheckResult {
  checks: DrillCheck[];
  rowCountsAfter: Record<string, number | null> | null;
  schemaVersionAfter: string | null;
  canaryFound: boolean | null;
  analyzed: boolean;
}

/** Scratch databases on a drill server: `<db>__drill_<14 digits>`; nothing else is ever dropped there. */
const DRILL_DATABASE = /__drill_\d{14}$/;
export const drillDatabaseName = (database: string, stamp: string): string => `${database}__drill_${stamp}`;

export function createDrillActivities(deps: ActivityDeps) {
  const { env, stepSettings, databaseConfig, connection, repository, withHeartbeat, resolving } = activitySupport(deps);
  const { restoreInto, verifyArchive } = createRestoreSteps(deps);
  const { assertDecryptable } = createEncryptionSupport(deps);

  /** The drill server's connection: the database's drill.target, resolved in the worker like a database's. */
  function serverParams(database: string, target: DrillServerTarget): ConnectionParams {
    // The same resolution as a database's connection (URL or fields, ${VAR}, passwordEnv); config validation required url or host.
    return resolving(() => resolveConnection(`${database}.drill.target`, { ...target, dbname: target.maintenanceDatabase }, env));
  }

  /** Where the drill's restore goes: the throwaway cluster's socket, or the drill server. */
  function targetOf(plan: DrillPlan, provisioned?: ProvisionedTarget): RestoreTarget {
    const drill = databaseConfig(plan.database).drill;
    if (drill.target.type === 'server') {
      return { params: serverParams(plan.database, drill.target), maintenanceDatabase: drill.target.maintenanceDatabase, pgBinDir: databaseConfig(plan.database).pgBinDir };
    }
    const dir = plan.target.clusterDir!;
    if (!existsSync(dir)) {
      // A cluster lives on one host; another worker of this task queue retries until the right one runs the step.
      throw failure('TargetUnavailable', `drill cluster ${dir} is not on this worker's host (${hostname()})${provisioned ? `; it runs on ${provisioned.host}` : ''}`, 'run drills with a cluster target on a task queue served from one host, or use a drill server target');
    }
    const port = provisioned?.port;
    if (!port) throw failure('TargetUnavailable', `drill cluster ${dir} has no known port yet`, 'provision the target first');
    return { params: { host: dir, port, user: 'postgres', database: 'postgres' }, maintenanceDatabase: 'postgres', pgBinDir: drill.target.pgBinDir ?? undefined };
  }

  const onTarget = async <T>(target: RestoreTarget, run: (client: pg.Client) => Promise<T>): Promise<T> =>
    withMaintenanceClient(target.params, target.maintenanceDatabase, run).catch((error: unknown) => {
      throw classifyPostgresError(error, describeConnection({ ...target.params, database: target.maintenanceDatabase }));
    });

  return {
    /**
     * Step "resolve": the backup (latest verified, or the given one; never a failed one), the
     * disposable target's name, and the checks to run, all from the worker's config.
     */
    async planDrill(input: { request: ParsedDrillInput; stamp: string; canaryToken: string | null }): Promise<DrillPlan> {
      const { request } = input;
      const db = databaseConfig(request.database);
      const params = connection(request.database);
      const repositoryId = request.repository ?? defaultRepositoryId(deps.config, request.database);
      const canaryEnabled = request.canary ?? db.drill.canary.enabled;
      const needsFreshBackup = canaryEnabled && request.backup === 'latest' && input.canaryToken === null;
      const target: DrillTargetPlan =
        db.drill.target.type === 'cluster'
          ? { type: 'cluster', database: params.database, clusterDir: join(db.drill.target.dir ?? tmpdir(), drillClusterName(request.database, input.stamp)), server: null }
          : { type: 'server', database: drillDatabaseName(params.database, input.stamp), clusterDir: null, server: describeConnection(serverParams(request.database, db.drill.target)) };
      if (byteLength(target.database) > MAX_IDENTIFIER_BYTES) {
        throw failure('InvalidInput', `drill database name ${target.database} is ${byteLength(target.database)} bytes; PostgreSQL allows ${MAX_IDENTIFIER_BYTES}`, 'use a cluster target (it restores under the original name)');
      }
      const settings = stepSettings();
      let restore: RestorePlan | null = null;
      if (!needsFreshBackup) {
        const manifest = await resolveRestorableBackup(repository(repositoryId), request.database, request.backup);
        // A throwaway cluster has no roles but postgres: ownership and grants cannot be restored there.
        const cluster = target.type === 'cluster';
        restore = {
          database: request.database,
          ...archiveOf(manifest),
          repository: repositoryId,
          target: target.database,
          liveDatabase: params.database,
          targetIsLive: false,
          strategy: 'in-place',
          scratch: target.database,
          preRestore: target.database,
          jobs: manifest.format === 'plain' ? 1 : db.drill.jobs,
          noOwner: cluster || db.restore.noOwner,
          noPrivileges: cluster || db.restore.noPrivileges,
          role: cluster ? null : (db.restore.role ?? null),
          approval: { required: false, timeoutSeconds: 0 },
          safetyBackup: false,
          app: { type: 'none', description: 'not touched (drill)', health: null },
          onStepFailure: 'abort',
          decisionTimeoutSeconds: 0,
          keepPreRestoreDays: null,
          drainTimeoutSeconds: db.restore.drainTimeoutSeconds,
          ...settings,
        };
      }
      return {
        database: request.database,
        needsFreshBackup,
        restore,
        target,
        canary: { enabled: canaryEnabled, table: db.drill.canary.table, token: input.canaryToken },
        queryBudgetMs: db.drill.queryBudgetMs,
        repository: repositoryId,
        ...settings,
      };
    },

    /**
     * Step "canary" (seed 002: "seeds test records"): a marker row in a dedicated table of the
     * live database, written just before the fresh backup. The drill later looks for it in the
     * restored copy. Idempotent (the token is the primary key); rows older than a year are pruned.
     */
    async writeCanary(input: { database: string; table: string; token: string }): Promise<{ writtenAt: string }> {
      const params = connection(input.database);
      return withMaintenanceClient(params, params.database, async (client) => {
        const table = quoteIdent(input.table);
        await client.query(`CREATE TABLE IF NOT EXISTS ${table} (token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now(), note text)`);
        await client.query(`COMMENT ON TABLE ${table} IS 'pgrunbook restore drill canaries: one row per drill, checked in the restored copy'`);
        const { rows } = await client.query<{ written_at: Date }>(
          `INSERT INTO ${table} (token, note) VALUES ($1, 'pgrunbook drill canary') ON CONFLICT (token) DO UPDATE SET token = EXCLUDED.token RETURNING written_at`,
          [input.token],
        );
        await client.query(`DELETE FROM ${table} WHERE written_at < now() - interval '400 days'`);
        return { writtenAt: rows[0]!.written_at.toISOString() };
      }).catch((error: unknown) => {
        throw classifyPostgresError(error, describeConnection(params));
      });
    },

    /** Check "checksum": the stored artifact read back end to end (sha256, size, pg_restore -l). */
    async verifyDrillArtifact(input: { plan: RestorePlan }): Promise<DrillCheck> {
      const { plan } = input;
      const manifest = await readManifest(repository(plan.repository), plan.backupId);
      const dumpedBy = Number(/\(PostgreSQL\)\s+(\d+)/.exec(manifest.pgDumpVersion ?? '')?.[1] ?? 0);
      const tools = await clientToolsFor(dumpedBy, databaseConfig(plan.database).pgBinDir);
      try {
        // An encrypted backup this worker cannot decrypt is a failed drill (it proves a restore would fail), not a crash.
        await assertDecryptable(plan, repository(plan.repository));
      } catch (error) {
        if (!(error instanceof ApplicationFailure) || (error.type !== 'DecryptionFailed' && error.type !== 'VerificationFailed')) throw error;
        return { name: 'artifact checksum', kind: 'checksum', outcome: 'fail', expected: { sha256: plan.dump.sha256, size: plan.dump.size }, actual: { sha256: null, size: null, tocEntries: null }, detail: error.message };
      }
      const verification = await verifyArchive(plan, tools.pgRestore);
      return {
        name: 'artifact checksum',
        kind: 'checksum',
        outcome: verification.ok ? 'pass' : 'fail',
        expected: { sha256: plan.dump.sha256, size: plan.dump.size },
        actual: { sha256: verification.sha256 ?? null, size: verification.size ?? null, tocEntries: verification.tocEntries },
        ...(verification.error ? { detail: verification.error } : {}),
      };
    },

    /**
     * Step "provision": the disposable target. A throwaway cluster (initdb, start; found again if
     * an earlier attempt made it) or an empty scratch database on the drill server.
     */
    async provisionDrillTarget(input: { plan: DrillPlan }): Promise<ProvisionedTarget> {
      const { plan } = input;
      const drill = databaseConfig(plan.database).drill;
      if (drill.target.type === 'cluster') {
        const binDir = drill.target.pgBinDir ?? resolving(() => postgresServerBinDir());
        const cluster = await withHeartbeat(() => provisionDrillCluster({ dir: plan.target.clusterDir!, binDir, port: freePort }));
        const provisioned: ProvisionedTarget = { type: 'cluster', database: plan.target.database, server: `${cluster.dir} (socket, port ${cluster.port})`, serverVersion: '', port: cluster.port, host: hostname() };
        const version = await onTarget(targetOf(plan, provisioned), async (client) => (await client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v);
        return { ...provisioned, serverVersion: version };
      }
      const target = targetOf(plan);
      return onTarget(target, async (client) => {
        if (await databaseExists(client, plan.target.database)) {
          // Left by an earlier attempt of this drill: start from empty.
          await dropDatabase(client, plan.target.database);
        }
        await createDatabase(client, plan.target.database);
        const version = (await client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
        return { type: 'server', database: plan.target.database, server: describeConnection({ ...target.params, database: plan.target.database }), serverVersion: version, port: null, host: hostname() };
      });
    },

    /** Step "restore": the backup into the disposable target, timed (the drill's RTO starts here). */
    async restoreDrillTarget(input: { plan: DrillPlan; target: ProvisionedTarget }): Promise<RestoreStepResult> {
      const { plan } = input;
      const target = targetOf(plan, input.target);
      const name = plan.target.database;
      // Idempotent: an earlier attempt's half restore is dropped and the database made again.
      await onTarget(target, async (client) => {
        if (await databaseExists(client, name)) {
          if ((await userRelationCount(target.params, name)) === 0) return;
          await dropDatabase(client, name);
        }
        await createDatabase(client, name);
      });
      return restoreInto({ plan: plan.restore!, into: name, step: 'restore', target });
    },

    /**
     * Step "checks" (seed 002 §4): row counts and schema version against the backup's manifest,
     * the canary, smoke queries, and the query-time budget. Each recorded as pass or fail with
     * expected and actual values; the workflow decides what a failure means.
     */
    async checkDrillTarget(input: { plan: DrillPlan; target: ProvisionedTarget }): Promise<DrillCheckResult> {
      const { plan } = input;
      const restore = plan.restore!;
      const db = databaseConfig(plan.database);
      const manifest = await readManifest(repository(restore.repository), restore.backupId);
      const target = targetOf(plan, input.target);
      let check: RestoredCheck;
      try {
        check = await withHeartbeat(() =>
          checkRestoredDatabase(target.params, plan.target.database, {
            rowCounts: manifest.rowCounts,
            schemaVersion: manifest.schemaVersion,
            smokeQueries: [...db.restore.smokeQueries, ...db.drill.smokeQueries],
            analyze: db.restore.analyze,
          }),
        );
      } catch (error) {
        throw classifyPostgresError(error, describeConnection({ ...target.params, database: plan.target.database }));
      }
      const checks: DrillCheck[] = [];

      if (manifest.rowCounts) {
        const expectedRows = Object.values(manifest.rowCounts).reduce((a, b) => a + b, 0);
        const actualRows = Object.values(check.rowCounts ?? {}).reduce<number>((a, b) => a + (b ?? 0), 0);
        checks.push({
          name: 'row counts',
          kind: 'row-counts',
          outcome: check.rowCountMismatches.length === 0 ? 'pass' : 'fail',
          expected: { tables: Object.keys(manifest.rowCounts).length, rows: expectedRows },
          actual: { tables: Object.values(check.rowCounts ?? {}).filter((n) => n !== null).length, rows: actualRows, mismatches: check.rowCountMismatches },
          ...(check.rowCountMismatches.length > 0 ? { detail: check.problems.find((p) => p.startsWith('row counts')) ?? '' } : {}),
        });
      } else {
        checks.push({ name: 'row counts', kind: 'row-counts', outcome: 'skipped', expected: null, actual: null, detail: 'the backup recorded no row counts (dump.rowCounts off)' });
      }

      const expectedVersion = manifest.schemaVersion?.value ?? null;
      checks.push(
        expectedVersion === null && check.schemaVersion.actual === null
          ? { name: 'schema version', kind: 'schema-version', outcome: 'skipped', expected: null, actual: null, detail: 'no schema version recorded (no schemaVersionQuery and no known migrations table)' }
          : { name: 'schema version', kind: 'schema-version', outcome: check.schemaVersion.ok ? 'pass' : 'fail', expected: expectedVersion, actual: check.schemaVersion.actual },
      );

      let canaryFound: boolean | null = null;
      if (plan.canary.token) {
        canaryFound = await findCanary(target.params, plan.target.database, plan.canary.table, plan.canary.token);
        checks.push({ name: 'canary present', kind: 'canary', outcome: canaryFound ? 'pass' : 'fail', expected: { table: plan.canary.table, token: plan.canary.token }, actual: canaryFound ? 'found' : 'missing' });
      } else {
        checks.push({
          name: 'canary present',
          kind: 'canary',
          outcome: 'skipped',
          expected: null,
          actual: null,
          detail: plan.canary.enabled ? 'drill of a given backup: no canary was written before it' : 'canary off (drill.canary.enabled)',
        });
      }

      for (const smoke of check.smokeQueries) {
        checks.push({ name: `smoke: ${smoke.name}`, kind: 'smoke-query', outcome: smoke.ok ? 'pass' : 'fail', expected: smoke.expected ?? 'a row', actual: smoke.actual, ...(smoke.error ? { detail: smoke.error } : {}) });
      }

      const slowest = [...check.queryTimings].sort((a, b) => b.ms - a.ms)[0];
      checks.push(
        slowest
          ? {
              name: 'query-time budget',
              kind: 'query-budget',
              outcome: slowest.ms <= plan.queryBudgetMs ? 'pass' : 'fail',
              expected: { maxMs: plan.queryBudgetMs },
              actual: { slowestMs: Math.round(slowest.ms * 10) / 10, query: slowest.query, queries: check.queryTimings.length },
            }
          : { name: 'query-time budget', kind: 'query-budget', outcome: 'skipped', expected: { maxMs: plan.queryBudgetMs }, actual: null, detail: 'no queries ran (no row counts, no smoke queries)' },
      );
      return { checks, rowCountsAfter: check.rowCounts, schemaVersionAfter: check.schemaVersion.actual, canaryFound, analyzed: check.analyzed };
    },

    /**
     * Step "teardown" (always: success, failure, cancellation): the throwaway cluster stopped and
     * removed, or the scratch database dropped. Idempotent; touches only drill-named things.
     */
    async teardownDrillTarget(input: { plan: DrillPlan }): Promise<{ removed: boolean; what: string }> {
      const { plan } = input;
      if (plan.target.type === 'cluster') {
        const dir = plan.target.clusterDir!;
        if (!isDrillClusterDir(dir)) throw failure('InvalidInput', `${dir} is not a drill cluster directory; refusing to remove it`);
        if (!existsSync(dir)) return { removed: false, what: `${dir} (not present on ${hostname()})` };
        const { removed } = await removeDrillCluster(dir);
        return { removed, what: dir };
      }
      if (!DRILL_DATABASE.test(plan.target.database)) throw failure('InvalidInput', `${plan.target.database} is not a drill database name; refusing to drop it`);
      const target = targetOf(plan);
      const dropped = await onTarget(target, (client) => dropDatabase(client, plan.target.database));
      return { removed: dropped, what: `${plan.target.database} on ${plan.target.server}` };
    },

    /**
     * Step "report": the drill's JSON result under the repository's reports/, completed with the
     * backup manifest's "before" values (schema version, row counts) and returned as written.
     */
    async writeDrillReport(input: { report: DrillReport }): Promise<{ key: string; location: string; report: DrillReport }> {
      const repositoryId = input.report.repository ?? defaultRepositoryId(deps.config, input.report.database);
      const repo = repository(repositoryId);
      const manifest = input.report.backup_id ? await readManifest(repo, input.report.backup_id).catch(() => undefined) : undefined;
      const report: DrillReport = {
        ...input.report,
        pgrunbook_version: PGRUNBOOK_VERSION,
        schema_version_before: manifest?.schemaVersion?.value ?? null,
        row_counts_before: manifest?.rowCounts ?? null,
      };
      const key = drillReportKey(report.database, new Date(report.started_at));
      await writeAll(repo, key, JSON.stringify(report, null, 2) + '\n');
      deps.metrics?.drillFinished(report);
      return { key, location: `${repo.location}/${key}`, report };
    },

    /**
     * Step "notify": a failed drill is posted to the configured Slack-compatible webhook. Its URL
     * is a secret (it is the credential) and stays in the worker.
     */
    async notifyDrillFailure(input: { database: string; workflowId: string; summary: string; reportLocation: string | null }): Promise<{ sent: boolean; detail: string }> {
      // Kept for drills started before the generic notify activity (their histories call this one).
      const text = `:rotating_light: pgrunbook restore drill of *${input.database}* FAILED: ${input.summary}`;
      return postWebhook(deps, {
        text,
        blocks: [
          { type: 'section', text: { type: 'mrkdwn', text } },
          { type: 'context', elements: [{ type: 'mrkdwn', text: `workflow \`${input.workflowId}\`${input.reportLocation ? ` · report ${input.reportLocation}` : ''} · \`pgrunbook drills list --database ${input.database}\`` }] },
        ],
      });
    },
  };
}

/** The canary row in the restored copy; a missing table means a missing canary. */
async function findCanary(params: ConnectionParams, database: string, table: string, token: string): Promise<boolean> {
  const { default: pgModule } = await import('pg');
  const client = new pgModule.Client(pgClientConfig(params, database));
  await client.connect();
  try {
    const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [quoteIdent(table)]);
    if (!exists.rows[0]?.t) return false;
    const { rows } = await client.query(`SELECT 1 FROM ${quoteIdent(table)} WHERE token = $1`, [token]);
    return rows.length > 0;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export type DrillActivities = ReturnType<typeof createDrillActivities>;
