import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdtempSync, rmSync, writeFileSync, appendFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool } from '../process/run.js';
import { asServerUser, isRoot, postgresUid } from '../postgres/server-user.js';
import { postgresServerBinDir } from './binaries.js';
import { freePort } from './ports.js';

/**
 * A throwaway PostgreSQL cluster: initdb in a temp dir, loopback only, a random free port,
 * password (SCRAM) authentication, torn down by stop(). Used by tests, benchmarks and
 * `pgrunbook dev`. Not for production data: durability settings are relaxed for speed.
 */
export interface PostgresCluster {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly superuser: 'postgres';
  /** The superuser's password. Tests register it as a secret and check it never leaks. */
  readonly password: string;
  readonly binDir: string;
  readonly baseDir: string;
  /** PGDATA: baseDir/data. */
  readonly dataDir: string;
  /** Connection URL for a database on this cluster (includes the password). */
  url(database?: string): string;
  /** Environment for libpq tools, password included (never argv). */
  env(): Record<string, string>;
  /** Runs SQL with psql as the superuser and returns unaligned, tuples-only output. */
  sql(query: string, database?: string): Promise<string>;
  /** Stops the server (fast) and removes the data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  binDir?: string;
  /** Extra postgresql.conf settings. */
  settings?: Record<string, string | number>;
  /**
   * Extra environment of the server process, e.g. what its archive_command needs (S3 keys by
   * the names the config gives). Never argv.
   */
  serverEnv?: Record<string, string>;
}

const running = new Set<{ binDir: string; dataDir: string; asPostgres: boolean; baseDir: string }>();

// A test runner that dies must not leave postmasters behind.
process.once('exit', () => {
  for (const c of running) stopSync(c);
});

export async function startPostgresCluster(options: StartClusterOptions = {}): Promise<PostgresCluster> {
  const binDir = options.binDir ?? postgresServerBinDir();
  const asPostgres = isRoot();
  const baseDir = mkdtempSync(join(tmpdir(), 'pgrunbook-pg-'));
  const dataDir = join(baseDir, 'data');
  const password = randomBytes(18).toString('base64url');
  const pwFile = join(baseDir, 'pwfile');
  writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  if (asPostgres) {
    const { uid, gid } = postgresUid();
    chownSync(baseDir, uid, gid);
    chownSync(pwFile, uid, gid);
  }
  const handle = { binDir, dataDir, asPostgres, baseDir };
  running.add(handle);
  try {
    const [initFile, initArgs] = asServerUser(asPostgres, join(binDir, 'initdb'), [
      '-D', dataDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwFile}`,
      '--encoding=UTF8', '--locale=C', '--no-instructions', '--no-sync',
    ]);
    await runTool(initFile, initArgs);
    rmSync(pwFile);
    const port = await freePort();
    const settings: Record<string, string | number> = {
      listen_addresses: "'127.0.0.1'",
      port,
      unix_socket_directories: `'${baseDir}'`,
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      max_connections: 100,
      ...options.settings,
    };
    appendFileSync(join(dataDir, 'postgresql.conf'), Object.entries(settings).map(([k, v]) => `${k} = ${v}\n`).join(''));
    const [ctlFile, ctlArgs] = asServerUser(asPostgres, join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', join(baseDir, 'server.log'), '-w', '-t', '60', 'start']);
    await runTool(ctlFile, ctlArgs, { cwd: baseDir, ...(options.serverEnv ? { env: { ...process.env, ...options.serverEnv } } : {}) });
    const env = (): Record<string, string> => ({ PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGPASSWORD: password, PGDATABASE: 'postgres' });
    const psql = join(binDir, 'psql');
    return {
      host: '127.0.0.1',
      port,
      superuser: 'postgres',
      password,
      binDir,
      baseDir,
      dataDir,
      url: (database = 'postgres') => `postgresql://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
      env,
      sql: (query, database = 'postgres') =>
        runTool(existsSync(psql) ? psql : 'psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-At', '-d', database, '-c', query], { env: env() }),
      stop: async () => {
        if (!running.has(handle)) return;
        running.delete(handle);
        stopSync(handle);
      },
    };
  } catch (error) {
    running.delete(handle);
    stopSync(handle);
    const log = join(baseDir, 'server.log');
    throw new Error(`could not start a throwaway PostgreSQL cluster with ${binDir}: ${(error as Error).message}${existsSync(log) ? `\n${readFileSync(log, 'utf8').slice(-2000)}` : ''}`);
  }
}

function stopSync(c: { binDir: string; dataDir: string; asPostgres: boolean; baseDir: string }): void {
  if (existsSync(join(c.dataDir, 'postmaster.pid'))) {
    const [file, args] = asServerUser(c.asPostgres, join(c.binDir, 'pg_ctl'), ['-D', c.dataDir, '-m', 'immediate', '-w', 'stop']);
    try {
      execFileSync(file, args, { stdio: 'ignore', cwd: c.baseDir });
    } catch {
      // Already stopped, or the data directory is gone; removal below still runs.
    }
  }
  rmSync(c.baseDir, { recursive: true, force: true });
}
