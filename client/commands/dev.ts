import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { stringify } from 'yaml';
import { startRestore } from '../restore.js';
import { describeRestoreResult } from './restore.js';
import { dropDatabase, withMaintenanceClient } from '../../postgres/admin.js';
import { resolveConnection } from '../../postgres/connection.js';
import type { RestoreResult } from '../../workflows/restore-database.js';
import { Config } from '../../config/schema.js';
import { registerSecret } from '../../process/secrets.js';
import { newestClientTools } from '../../postgres/tools.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { verifyStoredBackup } from '../../repository/verify-stored.js';
import { freePort } from '../../stack/ports.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { loadSampleData } from '../../stack/sample-data.js';
import { spawnTemporalDevServer } from '../../stack/temporal-dev-server.js';
import { startWorker } from '../../worker/run.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { describeProgress, follow, startBackup } from '../backup.js';
import { describeDrillReport, startDrill } from '../drill.js';
import { postgresServerBinDirs } from '../../stack/binaries.js';
import type { DrillResult } from '../../workflows/restore-drill.js';
import { EXIT, type Output } from '../output.js';
import { describeBackupResult } from './backup.js';
import { clientDataConverter } from '../../encryption/payload-codec.js';

const DEV_URL_VAR = 'PGRUNBOOK_DEV_DATABASE_URL';
const DEV_CODEC_KEY_VAR = 'PGRUNBOOK_PAYLOAD_CODEC_KEY';

async function portOr(preferred: number): Promise<number> {
  const { createServer } = await import('node:net');
  const free = await new Promise<boolean>((done) => {
    const server = createServer().once('error', () => done(false)).listen(preferred, '127.0.0.1', () => server.close(() => done(true)));
  });
  return free ? preferred : freePort();
}

/**
 * The embedded default: a Temporal dev server (UI on :8233), a worker, a local repository
 * ./backups, and either $DATABASE_URL or a throwaway PostgreSQL cluster with sample data.
 * With --demo it runs one backup end to end, verifies it, restores it under another name (seed
 * 000's test restore), checks it against the manifest, drops the copy, prints the result and exits.
 */
export async function devCommand(out: Output, flags: { demo?: boolean }): Promise<number> {
  const stateDir = resolve('.pgrunbook');
  mkdirSync(stateDir, { recursive: true });
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const step of cleanups.reverse()) await step().catch((e: unknown) => out.info(`cleanup: ${(e as Error).message}`));
  };
  try {
    const port = await portOr(7233);
    const uiPort = await portOr(8233);
    out.info(`starting Temporal dev server on 127.0.0.1:${port} (UI http://127.0.0.1:${uiPort}) ...`);
    const temporal = await spawnTemporalDevServer({ port, uiPort, dbFilename: flags.demo ? undefined : join(stateDir, 'temporal.db'), logFile: join(stateDir, 'temporal.log') });
    cleanups.push(() => temporal.stop());

    let databaseUrl = process.env.DATABASE_URL;
    let databaseId = 'app';
    let cluster: PostgresCluster | undefined;
    if (databaseUrl) {
      const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1)) || 'postgres';
      databaseId = name.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63) || 'app';
      out.info(`using DATABASE_URL (database ${name}, id "${databaseId}")`);
    } else {
      out.info('no DATABASE_URL: starting a throwaway PostgreSQL cluster with sample data ...');
      cluster = await startPostgresCluster();
      cleanups.push(() => cluster!.stop());
      await cluster.sql('CREATE DATABASE app');
      databaseUrl = cluster.url('app');
      await loadSampleData(databaseUrl);
      out.info(`  cluster on 127.0.0.1:${cluster.port}, database "app" loaded`);
    }
    // The URL (with its password) stays in this process's environment, read only by the worker.
    process.env[DEV_URL_VAR] = databaseUrl;
    registerSecret(new URL(databaseUrl).password ? decodeURIComponent(new URL(databaseUrl).password) : undefined);

    const fileConfig = {
      // With $PGRUNBOOK_PAYLOAD_CODEC_KEY set, workflow data is encrypted in the dev server's history too.
      temporal: { address: temporal.address, namespace: 'default', taskQueue: 'pgrunbook', ...(process.env[DEV_CODEC_KEY_VAR] ? { payloadCodec: { keyEnv: DEV_CODEC_KEY_VAR } } : {}) },
      repositories: { local: { type: 'local', path: resolve('backups') } },
      databases: { [databaseId]: { url: `\${${DEV_URL_VAR}}` } },
      metrics: { port: await portOr(9464) },
    };
    const config = Config.parse(fileConfig);
    const configFile = join(stateDir, 'dev.yaml');
    writeFileSync(configFile, `# written by \`pgrunbook dev\`; the database URL lives only in that process's environment\n${stringify(fileConfig)}`);

    const worker = await startWorker(config, { handleSignals: false });
    cleanups.push(() => worker.shutdown());
    out.info(`worker polling task queue "${config.temporal.taskQueue}"`);
    if (worker.metricsUrl) out.info(`metrics on ${worker.metricsUrl}/metrics`);

    if (!flags.demo) {
      out.info('');
      out.info('ready. In another terminal:');
      out.info(`  export PGRUNBOOK_CONFIG=${configFile}`);
      out.info(`  pgrunbook backup --database ${databaseId} --wait`);
      out.info(`  pgrunbook backups list --database ${databaseId}`);
      out.info(`  pgrunbook restore --database ${databaseId} --target-database ${databaseId}_copy --wait`);
      out.info(`  pgrunbook drill --database ${databaseId} --wait`);
      out.info(`  pgrunbook report --out ${join(stateDir, 'report')}`);
      out.info(`  temporal workflow start --address 127.0.0.1:${port} --type backupDatabase --task-queue pgrunbook --input '{"database":"${databaseId}"}'`);
      out.info('Ctrl-C stops everything.');
      await new Promise<void>((done) => {
        // on, not once: a running tool's signal-exit handler re-raises the signal when it is the last listener.
        process.on('SIGINT', () => done());
        process.on('SIGTERM', () => done());
      });
      return EXIT.ok;
    }

    const connection = await Connection.connect({ address: temporal.address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: clientDataConverter(config.temporal) });
    const handle = await startBackup(client, config, { database: databaseId, label: 'demo' });
    out.info(`backup workflow ${handle.workflowId} started`);
    const result = await follow<BackupResult>(handle, (p) => out.progress(describeProgress(p)));
    out.info(describeBackupResult(result));
    const repository = new RepositoryRegistry(config).get(result.repository);
    const check = await verifyStoredBackup(repository, result.backupId, (await newestClientTools()).pgRestore);
    out.info(`independent re-verification (pgrunbook backups verify): ${check.ok ? 'OK' : `FAILED: ${check.problems.join('; ')}`}`);
    out.info(`artifacts: ${join(repository.location, result.backupId)}`);
    const { manifest: _manifest, ...reverification } = check;

    // Seed 000's non-destructive test restore: into another name, verify, then drop when done.
    const live = resolveConnection(databaseId, config.databases[databaseId]!);
    const target = `${live.database}_restore_test`;
    const restoreHandle = await startRestore(client, config, { database: databaseId, backup: result.backupId, targetDatabase: target });
    out.info(`restore workflow ${restoreHandle.workflowId} started (into ${target})`);
    const restored = await follow<RestoreResult>(restoreHandle, (p) => out.progress(describeProgress(p)));
    out.info(describeRestoreResult(restored));
    await withMaintenanceClient(live, config.databases[databaseId]!.restore.maintenanceDatabase, (c) => dropDatabase(c, target));
    out.info(`dropped ${target}`);

    // The monthly drill, once: the same backup into a throwaway cluster, checked, timed, torn down.
    // It needs PostgreSQL server binaries on this host (a DATABASE_URL-only machine may lack them).
    let drill: { workflowId: string; outcome: string; rtoSeconds: number | null; rpoSeconds: number | null; reportKey: string | null } | null = null;
    if (postgresServerBinDirs().length > 0) {
      const drillHandle = await startDrill(client, config, { database: databaseId, backup: result.backupId, canary: false, requestedBy: 'pgrunbook dev --demo' });
      out.info(`drill workflow ${drillHandle.workflowId} started`);
      const drilled = await follow<DrillResult>(drillHandle, (p) => out.progress(describeProgress(p)));
      out.info(describeDrillReport(drilled.report, drilled.reportKey));
      drill = { workflowId: drillHandle.workflowId, outcome: drilled.report.outcome, rtoSeconds: drilled.report.rto_seconds, rpoSeconds: drilled.report.rpo_seconds, reportKey: drilled.reportKey };
    } else {
      out.info('no PostgreSQL server binaries on this host: skipping the restore drill (it needs initdb for its throwaway cluster)');
    }

    const ok = check.ok && restored.verification.ok && (drill === null || drill.outcome === 'passed');
    out.result({ ok, workflowId: handle.workflowId, ...result, reverification, restore: { workflowId: restoreHandle.workflowId, ...restored }, drill }, () =>
      ok ? `demo: backup verified, restored under another name and checked${drill ? ', drill passed' : ''}` : 'demo: verification FAILED',
    );
    return ok ? EXIT.ok : EXIT.failed;
  } finally {
    await cleanup();
  }
}
