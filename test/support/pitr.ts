import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { Config } from '../../config/schema.js';
import { asServerUser, isRoot, postgresUid } from '../../postgres/server-user.js';
import { runTool } from '../../process/run.js';
import { registerSecret } from '../../process/secrets.js';
import { projectRoot } from '../../stack/binaries.js';
import { freePort } from '../../stack/ports.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { startS3Server, type S3Server } from '../../stack/seaweedfs.js';
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
  /** Writes a WAL record, pg_switch_wal(), and waits until the server has archived the segment it closed; returns its name. */
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

/** What startArchivingCluster needs of a stack: a full TestStack, or the light one of startWalTestStack. */
export type ArchivingStack = Pick<TestStack, 'configObject' | 'workerEnv'>;

export async function startArchivingCluster(stack: ArchivingStack, options: PitrOptions = {}): Promise<PitrSetup> {
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
      // pg_switch_wal() is a no-op when nothing was written since the last switch; a WAL record
      // (a logical message, logged at any wal_level) makes every call close a segment of its own.
      await source.sql("SELECT pg_logical_emit_message(false, 'pgrunbook-test', 'switch')");
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

/**
 * A stack for tests that need no Temporal server (wal-push, wal-fetch, wal verify run without
 * one): the same config shape as startTestStack's, SeaweedFS when asked for.
 */
export interface WalTestStack extends ArchivingStack {
  s3?: S3Server;
  teardown(): Promise<void>;
}

export async function startWalTestStack(options: { s3?: boolean } = {}): Promise<WalTestStack> {
  const s3 = options.s3 ? await startS3Server() : undefined;
  const workerEnv: NodeJS.ProcessEnv = { ...process.env };
  if (s3) {
    workerEnv.TEST_S3_ACCESS_KEY = s3.accessKeyId;
    workerEnv.TEST_S3_SECRET_KEY = s3.secretAccessKey;
  }
  return {
    s3,
    workerEnv,
    configObject: (databases, overrides = {}) => ({
      repositories: s3
        ? { s3: { type: 's3', bucket: s3.bucket, prefix: 'pgrunbook', endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyIdEnv: 'TEST_S3_ACCESS_KEY', secretAccessKeyEnv: 'TEST_S3_SECRET_KEY', partSizeMiB: 5 } }
        : {},
      databases,
      metrics: { enabled: false },
      ...overrides,
    }),
    teardown: async () => {
      await s3?.stop();
    },
  };
}

/** pg_basebackup -Fp -X none of the archiving cluster: a stock base backup whose WAL must come from the archive. */
export async function plainBaseBackup(setup: PitrSetup, name: string): Promise<string> {
  const dataDir = join(setup.dir, 'restores', name);
  await runTool(join(setup.source.binDir, 'pg_basebackup'), ['-D', dataDir, '-Fp', '-X', 'none', '--checkpoint=fast', '--no-sync'], { env: setup.source.env() });
  if (isRoot()) {
    const { uid, gid } = postgresUid();
    execFileSync('chown', ['-R', `${uid}:${gid}`, dataDir]);
  }
  chmodSync(dataDir, 0o700);
  return dataDir;
}

export interface RecoveredCluster {
  dataDir: string;
  sql(query: string, database?: string): Promise<string>;
  /** The server log (restore_command's stderr lands here). */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts a copy of the archiving cluster's data directory in archive recovery with
 * `restoreCommand` (no target: recovery replays all archived WAL, then promotes), and waits until
 * it has promoted. Archiving is off, so the recovered server never writes into the archive.
 */
export async function recoverToLatest(setup: PitrSetup, dataDir: string, restoreCommand: string, timeoutMs = 120_000): Promise<RecoveredCluster> {
  const port = await freePort();
  const socketDir = dirname(dataDir);
  const logFile = join(socketDir, `${basename(dataDir)}.log`);
  appendFileSync(join(dataDir, 'postgresql.conf'), [
    `port = ${port}`,
    `unix_socket_directories = '${socketDir}'`,
    'archive_mode = off',
    `restore_command = '${restoreCommand.replace(/'/g, "''")}'`,
    "recovery_target_timeline = 'latest'",
    '',
  ].join('\n'));
  writeFileSync(join(dataDir, 'recovery.signal'), '');
  if (isRoot()) {
    const { uid, gid } = postgresUid();
    chownSync(join(dataDir, 'recovery.signal'), uid, gid);
  }
  const pgCtl = (args: string[]): Promise<string> => {
    const [file, argv] = asServerUser(isRoot(), join(setup.source.binDir, 'pg_ctl'), ['-D', dataDir, ...args]);
    const serverEnv: Record<string, string> = {};
    for (const [key, value] of Object.entries(setup.env)) if (key.startsWith('TEST_S3_') && value) serverEnv[key] = value;
    return runTool(file, argv, { cwd: socketDir, env: serverEnv });
  };
  const env = { ...setup.source.env(), PGPORT: String(port) };
  const sql = (query: string, database = 'postgres'): Promise<string> => runTool(join(setup.source.binDir, 'psql'), ['-X', '-v', 'ON_ERROR_STOP=1', '-At', '-d', database, '-c', query], { env });
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async (): Promise<void> => {
    if (existsSync(join(dataDir, 'postmaster.pid'))) await pgCtl(['-m', 'immediate', '-w', 'stop']).catch(() => undefined);
  };
  try {
    await pgCtl(['-l', logFile, '-w', '-t', String(Math.round(timeoutMs / 1000)), 'start']);
    const deadline = Date.now() + timeoutMs;
    while ((await sql('SELECT pg_is_in_recovery()').catch(() => 't')) !== 'f') {
      if (Date.now() > deadline) throw new Error(`recovery did not finish within ${timeoutMs} ms`);
      await sleep(200);
    }
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n--- server log ---\n${log().slice(-3000)}`);
  }
  return { dataDir, sql, log, stop };
}
