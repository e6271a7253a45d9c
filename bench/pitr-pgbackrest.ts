// The PITR benchmark's anchor: Debian's pgBackRest, configured for the same cluster with the same
// compression (zstd level 3) and no encryption, run as the server user like a real installation.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import { giveToServerUser, runServerTool, serverEnv, serverOwnedDir } from './pitr-source.js';

export const PGBACKREST = '/usr/bin/pgbackrest';
export const STANZA = 'bench';

/** Installs Debian's pgbackrest when it is missing (as root, with apt); says so on stderr. Returns its version. */
export function ensurePgbackrest(): string {
  if (!existsSync(PGBACKREST)) {
    if (process.getuid?.() !== 0) throw new Error('pgbackrest is not installed\nHINT: install it (sudo apt-get install pgbackrest) or run the benchmark as root');
    process.stderr.write('bench:pitr: installing Debian\'s pgbackrest (apt-get install pgbackrest) ...\n');
    execFileSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbackrest'], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return execFileSync(PGBACKREST, ['version'], { encoding: 'utf8' }).trim();
}

export interface PgBackRest {
  configPath: string;
  repoPath: string;
  /** spool-path: in async mode, where archive-push's background process reports each segment done (archive/<stanza>/out/<name>.ok). */
  spoolPath: string;
  /** archive_command / restore_command prefix: `pgbackrest --config=... --stanza=bench`. */
  command: string;
  /** Runs `pgbackrest --config=... --stanza=bench ARGS` as the server user; the database password only in its environment. */
  run(args: string[]): Promise<string>;
}

/** archive-async=y: archive-push hands segments to a background process that pushes every `.ready` one, `processMax` at a time. */
export interface AsyncArchiving {
  /** pg1-path: the data directory archive_command runs in (cwd, and where the background process finds pg_wal/archive_status). */
  pgPath: string;
  processMax: number;
}

/**
 * A pgBackRest configuration in `dir` (repository, logs, locks, spool: all there, all the server
 * user's) for the stanza `bench` on `cluster`. Without `async`: synchronous archive-push (the
 * default), one process per segment, as PostgreSQL runs archive_command. With it: archive-async=y
 * on the data directory `async.pgPath`; stanza-create must then pass `--pg1-path=` the cluster's
 * own data directory (it checks that the server runs there).
 */
export function configurePgbackrest(cluster: PostgresCluster, dir: string, async?: AsyncArchiving): PgBackRest {
  serverOwnedDir(dir, 0o750);
  const repoPath = serverOwnedDir(join(dir, 'repo'), 0o750);
  for (const sub of ['log', 'lock', 'spool']) serverOwnedDir(join(dir, sub), 0o750);
  const configPath = join(dir, 'pgbackrest.conf');
  writeFileSync(
    configPath,
    [
      '[global]',
      `repo1-path=${repoPath}`,
      'repo1-retention-full=2',
      `log-path=${join(dir, 'log')}`,
      `lock-path=${join(dir, 'lock')}`,
      `spool-path=${join(dir, 'spool')}`,
      'compress-type=zst',
      'compress-level=3',
      'start-fast=y',
      'log-level-console=warn',
      ...(async ? ['archive-async=y', `process-max=${async.processMax}`] : []),
      '',
      `[${STANZA}]`,
      `pg1-path=${async?.pgPath ?? cluster.dataDir}`,
      `pg1-port=${cluster.port}`,
      `pg1-socket-path=${cluster.baseDir}`,
      'pg1-user=postgres',
      '',
    ].join('\n'),
    { mode: 0o640 },
  );
  giveToServerUser(configPath);
  const prefix = [`--config=${configPath}`, `--stanza=${STANZA}`];
  return {
    configPath,
    repoPath,
    spoolPath: join(dir, 'spool'),
    command: `${PGBACKREST} ${prefix.join(' ')}`,
    run: (args) => runServerTool(PGBACKREST, [...prefix, ...args], { cwd: dir, env: serverEnv({ PGPASSWORD: cluster.password }) as Record<string, string> }),
  };
}
