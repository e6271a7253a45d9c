import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { Config } from '../../config/schema.js';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { registerSecret } from '../../process/secrets.js';
import { projectRoot } from '../../stack/binaries.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { runCli, type CliResult } from './cli.js';
import type { TestStack } from './stack.js';

// A PostgreSQL 15 cluster that archives its WAL with pgrunbook itself (archive_command =
// `pgrunbook wal-push %p`), for the point-in-time recovery tests. The built CLI must exist
// (`npm run build`, which `npm test` runs first).
//
// The server runs as `postgres` when the tests run as root, so everything it touches (the
// repository, the config file) lives in a directory it can read and write.

export const PITR_CLUSTER = 'main';
export const PITR_DATABASE = 'app';

export interface PitrSetup {
  /** The archiving cluster: wal_level replica, archive_mode on, pgrunbook as archive_command. */
  source: PostgresCluster;
  /** A directory the server user owns: repo/ (local repository), restores/, pgrunbook.yaml. */
  dir: string;
  configObject: Record<string, unknown>;
  config: Config;
  configPath: string;
  /** Environment for the CLI and the worker: the database URL variable, S3 keys. */
  env: NodeJS.ProcessEnv;
  /** Runs the built CLI with this setup's config. */
  cli(args: string[]): Promise<CliResult>;
  /** pg_switch_wal() and waits until the server has archived the segment it closed; returns its name. */
  switchAndArchive(): Promise<string>;
  /** Waits until pg_stat_archiver reports `segment` (or a later one) archived. */
  waitArchived(segment: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface PitrOptions {
  /** Repository id for WAL and base backups: 'local' (default) or 's3' (the stack needs s3: true). */
  repository?: 'local' | 's3';
  /** repositories.<id>.encryption for the chosen repository. */
  encryption?: Record<string, unknown>;
  /** Overrides merged into clusters.main (wal, basebackup, retention, restore, ...). */
  cluster?: Record<string, unknown>;
  /** Overrides merged into databases.app (restore.smokeQueries, app, ...). */
  database?: Record<string, unknown>;
  /** Extra environment for the server (its archive_command) and the CLI/worker. */
  env?: Record<string, string>;
}

export async function startArchivingCluster(stack: TestStack, options: PitrOptions = {}): Promise<PitrSetup> {
  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-pitr-'));
  chmodSync(dir, 0o755);
  for (const sub of ['repo', 'restores']) mkdirSync(join(dir, sub));
  if (isRoot()) {
    const { uid, gid } = postgresUid();
    for (const path of [dir, join(dir, 'repo'), join(dir, 'restores')]) chownSync(path, uid, gid);
  }
  const configPath = join(dir, 'pgrunbook.yaml');
  const repositoryId = options.repository ?? 'local';
  const urlVar = `TEST_PITR_URL_${process.pid}`;
  const env: NodeJS.ProcessEnv = { ...stack.workerEnv, ...options.env };

  const base = stack.configObject({});
  const repositories = { ...(base.repositories as Record<string, Record<string, unknown>>) };
  repositories.local = { type: 'local', path: join(dir, 'repo') };
  if (options.encryption) repositories[repositoryId] = { ...repositories[repositoryId], encryption: options.encryption };
  const configObject: Record<string, unknown> = {
    ...base,
    repositories,
    databases: { [PITR_DATABASE]: { url: `\${${urlVar}}`, repository: repositoryId, ...options.database } },
    clusters: { [PITR_CLUSTER]: { database: PITR_DATABASE, repository: repositoryId, restore: { dir: join(dir, 'restores') }, ...options.cluster } },
  };
  writeFileSync(configPath, stringify(configObject), { mode: 0o644 });
  const config = Config.parse(configObject);

  const pgrunbook = `${process.execPath} ${join(projectRoot, 'dist', 'client', 'main.js')}`;
  const serverEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (key.startsWith('TEST_S3_') && value) serverEnv[key] = value;
  Object.assign(serverEnv, options.env);
  const source = await startPostgresCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'${pgrunbook} wal-push %p --cluster ${PITR_CLUSTER} --config ${configPath}'`,
      // PITR needs torn-page protection; the throwaway default turns it off for speed.
      full_page_writes: 'on',
      max_wal_senders: 4,
    },
    serverEnv,
  });
  registerSecret(source.password);
  await source.sql(`CREATE DATABASE ${PITR_DATABASE}`);
  env[urlVar] = source.url(PITR_DATABASE);

  const waitArchived = async (segment: string, timeoutMs = 60_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const [archived = '', failed = '', failure = ''] = (await source.sql("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver")).split('|');
      if (archived >= segment && /^[0-9A-F]{24}$/.test(archived.slice(0, 24))) return;
      if (Date.now() > deadline) throw new Error(`segment ${segment} was not archived within ${timeoutMs} ms (last archived: ${archived || 'none'}, last failed: ${failed || 'none'} at ${failure || '-'})`);
      await sleep(100);
    }
  };

  return {
    source,
    dir,
    configObject,
    config,
    configPath,
    env,
    cli: (args) => runCli([...args, '--config', configPath], env),
    switchAndArchive: async () => {
      // pg_switch_wal() returns the end of the segment it closed; that segment is the one to wait for.
      const segment = (await source.sql('SELECT pg_walfile_name(pg_switch_wal())')).trim();
      await waitArchived(segment);
      return segment;
    },
    waitArchived,
    stop: async () => {
      await source.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
