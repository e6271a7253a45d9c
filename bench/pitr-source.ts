// The PITR benchmark's PostgreSQL side: the archiving source cluster, its data and WAL workload,
// commands run the way the server runs archive_command, and recovered servers started from a
// restored data directory. Linux only; as root, server-side commands run as `postgres`.
import { spawn } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, type Dirent } from 'node:fs';
import { basename, join } from 'node:path';
import { hrtime } from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { asServerUser, isRoot, postgresUid } from '../postgres/server-user.js';
import { runTool } from '../process/run.js';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import { DEFAULT_SEGMENT_SIZE, parseLsn, segmentFileName, segmentOf } from '../pitr/wal-names.js';
import { log, mb, secondsSince } from './common.js';

export const SEGMENT_BYTES = DEFAULT_SEGMENT_SIZE;

/** Makes `path` the server user's when we are root, so archive_command and pgBackRest can use it. */
export function giveToServerUser(path: string): void {
  if (!isRoot()) return;
  const { uid, gid } = postgresUid();
  chownSync(path, uid, gid);
}

export function serverOwnedDir(path: string, mode = 0o755): string {
  mkdirSync(path, { recursive: true, mode });
  giveToServerUser(path);
  return path;
}

export interface ServerCommandRun {
  seconds: number;
  code: number | null;
  stderr: string;
}

/**
 * Runs `/bin/sh -c COMMAND` as the server user with `cwd`, as the postmaster runs archive_command
 * and restore_command (system(3) from the data directory). The uid/gid switch happens in the
 * spawn itself, not through runuser, so neither tool pays for a PAM session per call.
 */
export async function runAsServer(command: string, cwd: string, env: NodeJS.ProcessEnv = serverEnv()): Promise<ServerCommandRun> {
  const ids = isRoot() ? postgresUid() : undefined;
  const start = hrtime.bigint();
  const child = spawn('/bin/sh', ['-c', command], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  return { seconds: secondsSince(start), code, stderr };
}

/** The environment a server-side command gets: no secrets of this process, PATH and a home. */
export function serverEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: isRoot() ? '/var/lib/postgresql' : (process.env.HOME ?? '/tmp'), LANG: 'C.UTF-8', ...extra };
}

/** Runs a server binary (pg_ctl, pgbackrest) as the server user; throws with its stderr on failure. */
export async function runServerTool(binary: string, args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<string> {
  const [file, fileArgs] = asServerUser(isRoot(), binary, args);
  return runTool(file, fileArgs, { cwd: options.cwd, env: options.env });
}

// ---------------------------------------------------------------------------------------------
// The source cluster

/**
 * Turns the bench stack's cluster into an archiving one: wal_level replica, archive_mode on,
 * full_page_writes on (PITR needs torn-page protection; the throwaway default turns it off), with
 * a restart. archive_command starts as /bin/true: nothing archives until a part needs it.
 */
export async function enableArchiving(cluster: PostgresCluster): Promise<void> {
  await cluster.sql("ALTER SYSTEM SET wal_level = 'replica'");
  await cluster.sql("ALTER SYSTEM SET archive_mode = 'on'");
  await cluster.sql("ALTER SYSTEM SET full_page_writes = 'on'");
  await cluster.sql("ALTER SYSTEM SET archive_command = '/bin/true'");
  await runServerTool(join(cluster.binDir, 'pg_ctl'), ['-D', cluster.dataDir, '-l', join(cluster.baseDir, 'server.log'), '-w', '-t', '120', 'restart'], { cwd: cluster.baseDir });
  const settings = await cluster.sql("SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('wal_level', 'archive_mode', 'full_page_writes', 'archive_command')");
  log(`  source cluster restarted for archiving: ${settings}`);
}

/** Sets archive_command (a reload, no restart) and waits until the server uses it. */
export async function setArchiveCommand(cluster: PostgresCluster, command: string): Promise<void> {
  await cluster.sql(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`);
  await cluster.sql('SELECT pg_reload_conf()');
  for (let i = 0; i < 100; i++) {
    if ((await cluster.sql('SHOW archive_command')) === command) return;
    await sleep(50);
  }
  throw new Error(`archive_command did not change to ${command} after a reload`);
}

/** Waits until pg_stat_archiver reports `segment` (or a later one) archived; a failing archive_command is reported. */
export async function waitArchived(cluster: PostgresCluster, segment: string, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [archived = '', failed = '', failedAt = ''] = (await cluster.sql("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver")).split('|');
    if (/^[0-9A-F]{24}$/.test(archived) && archived >= segment) return;
    if (Date.now() > deadline) throw new Error(`segment ${segment} was not archived within ${timeoutMs / 1000} s (last archived ${archived || 'none'}, last failed ${failed || 'none'} at ${failedAt || '-'}); see ${join(cluster.baseDir, 'server.log')}`);
    await sleep(100);
  }
}

/** pg_switch_wal() and waits until the segment it closed is archived; returns its name. */
export async function switchAndWaitArchived(cluster: PostgresCluster): Promise<string> {
  const segment = await cluster.sql('SELECT pg_walfile_name(pg_switch_wal())');
  await waitArchived(cluster, segment);
  return segment;
}

async function currentLsn(cluster: PostgresCluster): Promise<bigint> {
  return parseLsn(await cluster.sql('SELECT pg_current_wal_lsn()'))!;
}

// A ledger of poorly compressible rows (~0.9 kB each: base64 of random bytes, as real payloads
// and encrypted columns are): the data base backups copy and the WAL the archivers compress.
const LEDGER_SQL = `
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE ledger (
  id bigint PRIMARY KEY,
  account_id int NOT NULL,
  booked_at timestamptz NOT NULL,
  amount numeric(12,2) NOT NULL,
  memo text NOT NULL
);
CREATE TABLE orders (id bigserial PRIMARY KEY, phase text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());`;
const insertLedger = (table: string, from: number, to: number): string => `
INSERT INTO ${table} (id, account_id, booked_at, amount, memo)
SELECT g, 1 + floor(random() * 100000)::int, timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days',
       round((random() * 10000)::numeric, 2), md5(g::text) || ' ' || encode(gen_random_bytes(512), 'base64')
  FROM generate_series(${from}, ${to}) AS g`;
const BATCH_ROWS = 50_000;

/** Creates the ledger with `rows` rows in database `database`; returns the database size in bytes. */
export async function loadLedger(cluster: PostgresCluster, database: string, rows: number): Promise<number> {
  await cluster.sql(LEDGER_SQL, database);
  const start = hrtime.bigint();
  for (let from = 1; from <= rows; from += BATCH_ROWS) {
    const to = Math.min(rows, from + BATCH_ROWS - 1);
    await cluster.sql(insertLedger('ledger', from, to), database);
    if (to === rows || (to / BATCH_ROWS) % 4 === 0) log(`  loaded ${to.toLocaleString('en')} of ${rows.toLocaleString('en')} ledger rows (${(to / secondsSince(start)).toFixed(0)} rows/s)`);
  }
  await cluster.sql('VACUUM ANALYZE', database);
  await cluster.sql('CHECKPOINT');
  return Number(await cluster.sql('SELECT sum(pg_database_size(datname)) FROM pg_database'));
}

/**
 * Produces `count` complete 16 MiB WAL segments with a write workload (INSERTs of ledger-like rows
 * into a scratch table) and copies them into `dir` (owned by the server user) while the server
 * still has them: wal_keep_size holds them in pg_wal, and pg_switch_wal() flushes the last one.
 * Returns the copied segment paths, oldest first.
 */
export async function generateSegments(cluster: PostgresCluster, database: string, count: number, dir: string): Promise<string[]> {
  await cluster.sql("ALTER SYSTEM SET wal_keep_size = '8GB'");
  await cluster.sql('SELECT pg_reload_conf()');
  await cluster.sql('CREATE TABLE wal_churn (LIKE ledger)', database);
  const startLsn = await currentLsn(cluster);
  // The segment being written now is partly older WAL; the first copied one starts after it.
  const first = segmentOf(startLsn) + 1n;
  const needed = (first + BigInt(count)) * BigInt(SEGMENT_BYTES);
  const started = hrtime.bigint();
  let next = 1;
  while ((await currentLsn(cluster)) < needed) {
    await cluster.sql(insertLedger('wal_churn', next, next + BATCH_ROWS - 1), database);
    next += BATCH_ROWS;
  }
  await cluster.sql('SELECT pg_switch_wal()');
  const timeline = Number(await cluster.sql('SELECT timeline_id FROM pg_control_checkpoint()'));
  const paths: string[] = [];
  for (let i = 0n; i < BigInt(count); i++) {
    const name = segmentFileName(timeline, first + i);
    const from = join(cluster.dataDir, 'pg_wal', name);
    if (!existsSync(from)) throw new Error(`WAL segment ${name} is no longer in pg_wal; cannot copy it for the wal-push measurement`);
    const to = join(dir, name);
    copyFileSync(from, to);
    giveToServerUser(to);
    paths.push(to);
  }
  log(`  ${count} segments (${mb(count * SEGMENT_BYTES)} MB of WAL, ${(next - 1).toLocaleString('en')} rows inserted) in ${secondsSince(started).toFixed(1)} s; copied to ${dir}`);
  await cluster.sql('DROP TABLE wal_churn', database);
  await cluster.sql('ALTER SYSTEM RESET wal_keep_size');
  await cluster.sql('SELECT pg_reload_conf()');
  await cluster.sql('CHECKPOINT');
  return paths;
}

/**
 * A directory shaped like a data directory whose archiver has a backlog: `global/pg_control` and
 * PG_VERSION of `source` (pgBackRest reads pg_control from pg1-path), `pg_wal/` holding
 * `segments` (hard links to the copies, or copies across filesystems) and
 * `pg_wal/archive_status/<name>.ready` for each. Everything belongs to the server user.
 * Returns the segment names, oldest first: the order the archiver hands them out.
 */
export function layOutPgWal(dataDir: string, source: string, segments: string[]): string[] {
  serverOwnedDir(dataDir, 0o700);
  serverOwnedDir(join(dataDir, 'global'), 0o700);
  for (const file of ['global/pg_control', 'PG_VERSION']) {
    copyFileSync(join(source, file), join(dataDir, file));
    giveToServerUser(join(dataDir, file));
  }
  const status = serverOwnedDir(join(dataDir, 'pg_wal', 'archive_status'), 0o700);
  giveToServerUser(join(dataDir, 'pg_wal'));
  const sorted = [...segments].sort((a, b) => (basename(a) < basename(b) ? -1 : 1));
  for (const from of sorted) {
    const to = join(dataDir, 'pg_wal', basename(from));
    try {
      linkSync(from, to);
    } catch {
      copyFileSync(from, to);
      giveToServerUser(to);
    }
    const name = basename(from);
    writeFileSync(join(status, `${name}.ready`), '');
    giveToServerUser(join(status, `${name}.ready`));
  }
  return sorted.map((path) => basename(path));
}

/** What the archiver does once archive_command succeeded for `name`: archive_status/<name>.ready becomes .done. */
export function markArchived(dataDir: string, name: string): void {
  const status = join(dataDir, 'pg_wal', 'archive_status');
  renameSync(join(status, `${name}.ready`), join(status, `${name}.done`));
}

/** WAL-like files (24 hex digits first) under `dir` by segment name: how many stored objects each name has. */
export function archivedNames(dir: string): Map<string, number> {
  const names = new Map<string, number>();
  forEachFileUnder(dir, (entry) => {
    const name = /^[0-9A-F]{24}/.exec(entry.name)?.[0];
    if (name) names.set(name, (names.get(name) ?? 0) + 1);
  });
  return names;
}

/** UPDATEs ledger rows in batches until about `segments` segments of WAL were written: the WAL recovery replays. */
export async function updateWorkload(cluster: PostgresCluster, database: string, rows: number, segments: number): Promise<number> {
  const startLsn = await currentLsn(cluster);
  const target = startLsn + BigInt(segments * SEGMENT_BYTES);
  const batch = 20_000;
  let from = 1;
  let updated = 0;
  while ((await currentLsn(cluster)) < target) {
    const to = Math.min(rows, from + batch - 1);
    await cluster.sql(`UPDATE ledger SET amount = amount + 1, booked_at = clock_timestamp() WHERE id BETWEEN ${from} AND ${to}`, database);
    updated += to - from + 1;
    from = to >= rows ? 1 : to + 1;
  }
  return updated;
}

/** The incident of seed 001 scenario 1 around the returned target time T. */
export interface Incident {
  /** The recovery target: the server's clock with microseconds, UTC (2026-03-14 14:30:00.123456+00). */
  targetTime: string;
  keptRows: number;
  rowsAfterTarget: number;
}

/**
 * Seed 001 scenario 1: orders are written, T is noted, then they are all deleted and new ones are
 * written. Recovering to T must give back exactly the orders written before T, and none after.
 */
export async function incident(cluster: PostgresCluster, database: string): Promise<Incident> {
  const keptRows = 1000;
  const rowsAfterTarget = 250;
  await cluster.sql(`INSERT INTO orders (phase) SELECT 'before-target' FROM generate_series(1, ${keptRows})`, database);
  await sleep(1_000);
  // pgBackRest reads "YYYY-MM-DD HH:MM:SS[.frac]+00" only; pgrunbook reads that too.
  const targetTime = await cluster.sql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US"+00"')`);
  await sleep(1_000);
  await cluster.sql('DELETE FROM orders', database);
  await cluster.sql(`INSERT INTO orders (phase) SELECT 'after-target' FROM generate_series(1, ${rowsAfterTarget})`, database);
  return { targetTime, keptRows, rowsAfterTarget };
}

/** What a recovered server holds of the incident: orders written before and after T. */
export async function incidentRows(psqlEnv: Record<string, string>, binDir: string, database: string): Promise<{ before: number; after: number }> {
  const out = await runTool(join(binDir, 'psql'), ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', database, '-c', "SELECT count(*) FILTER (WHERE phase = 'before-target') || '|' || count(*) FILTER (WHERE phase = 'after-target') FROM orders"], { env: psqlEnv });
  const [before, after] = out.split('|').map(Number);
  return { before: before!, after: after! };
}

// ---------------------------------------------------------------------------------------------
// A recovered server (pgBackRest's restore): started on its own port and socket directory

export interface RecoveredServer {
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

/** Starts PostgreSQL on a restored data directory (recovery settings already written) and returns once it accepts connections. */
export async function startRecoveredServer(binDir: string, dataDir: string, port: number, socketDir: string, logFile: string): Promise<RecoveredServer> {
  await runServerTool(join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', logFile, '-o', `-p ${port} -k ${socketDir} -c archive_mode=off`, '-w', '-t', '3600', 'start'], { cwd: socketDir });
  let stopped = false;
  return {
    port,
    dataDir,
    stop: async () => {
      if (stopped || !existsSync(join(dataDir, 'postmaster.pid'))) return;
      stopped = true;
      await runServerTool(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], { cwd: socketDir }).catch(() => undefined);
    },
  };
}

/** Polls until the server at `psqlEnv` has left recovery (promoted); returns the seconds it waited. */
export async function waitPromoted(psqlEnv: Record<string, string>, binDir: string, timeoutMs: number, logFile: string): Promise<number> {
  const start = hrtime.bigint();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const inRecovery = await runTool(join(binDir, 'psql'), ['-X', '-At', '-d', 'postgres', '-c', 'SELECT pg_is_in_recovery()'], { env: psqlEnv }).catch(() => 't');
    if (inRecovery === 'f') return secondsSince(start);
    if (Date.now() > deadline) throw new Error(`the recovered server did not finish recovery within ${timeoutMs / 1000} s; see ${logFile}`);
    await sleep(50);
  }
}

/** WAL segments a recovered server fetched through its restore_command, from its log ("restored log file ... from archive"). */
export function restoredSegments(serverLog: string): number {
  if (!existsSync(serverLog)) return 0;
  const names = new Set<string>();
  for (const m of readFileSync(serverLog, 'utf8').matchAll(/restored log file "([0-9A-F]{24})" from archive/g)) names.add(m[1]!);
  return names.size;
}

/** Bytes and files of WAL-like files (24 hex digits first) under `dir`, recursively. */
export function archivedFiles(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  forEachFileUnder(dir, (entry, path) => {
    if (!/^[0-9A-F]{24}/.test(entry.name)) return;
    files++;
    bytes += statSync(path).size;
  });
  return { files, bytes };
}

/** Total bytes of the files under `dir`. */
export function treeBytes(dir: string): number {
  let bytes = 0;
  forEachFileUnder(dir, (entry, path) => {
    if (entry.isFile()) bytes += statSync(path).size;
  });
  return bytes;
}

/** Calls `visit` for every entry under `dir` that is not a directory, recursively; a missing `dir` has none. */
function forEachFileUnder(dir: string, visit: (entry: Dirent, path: string) => void): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) forEachFileUnder(path, visit);
    else visit(entry, path);
  }
}

export function removeTree(path: string): void {
  rmSync(path, { recursive: true, force: true });
}
