import { existsSync, readFileSync, statSync } from 'node:fs';
import { open, readFile, rm, writeFile, chown } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { runTool, ToolError } from '../process/run.js';
import { isRoot } from './server-user.js';

// A recovering PostgreSQL server (point-in-time recovery): the recovery settings written into an
// extracted base backup, the server started and stopped as the data directory's owner, and the
// recovery state read over a connection. Every function here is idempotent: a worker that died
// half-way runs it again and converges.

/** Marks the settings pgrunbook wrote into postgresql.auto.conf, so a re-run replaces them. */
const BEGIN = '# pgrunbook point-in-time recovery: BEGIN (written by pgrunbook, do not edit)';
const END = '# pgrunbook point-in-time recovery: END';

/** A conf file value: single-quoted, quotes doubled. */
export function confString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** One shell word (restore_command runs through /bin/sh): bare when safe, else single-quoted. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

export type RecoveryTarget = { time: string } | { lsn: string } | { name: string } | { latest: true };

export interface RecoverySettingsRequest {
  restoreCommand: string;
  target: RecoveryTarget;
  /** pause: wait at the target for promote/discard (a new copy); promote: end recovery there (replace). */
  targetAction: 'pause' | 'promote';
  /** A new copy beside the source: its own port and private socket, no TCP, never archiving. */
  newCopy: { port: number; socketDir: string; hbaFile: string } | null;
}

/** The settings written into postgresql.auto.conf, values already quoted for the conf file. */
export function recoverySettings(request: RecoverySettingsRequest): Record<string, string> {
  const settings: Record<string, string> = { restore_command: confString(request.restoreCommand) };
  const { target } = request;
  if ('time' in target) settings.recovery_target_time = confString(target.time);
  if ('lsn' in target) settings.recovery_target_lsn = confString(target.lsn);
  if ('name' in target) settings.recovery_target_name = confString(target.name);
  if (!('latest' in target)) {
    settings.recovery_target_inclusive = 'on';
    settings.recovery_target_action = confString(request.targetAction);
  }
  // Follow the archive's newest timeline: a target after an earlier PITR's promotion is reachable.
  settings.recovery_target_timeline = confString('latest');
  // Connections during recovery: pgrunbook reads the replay position, and pause needs it.
  settings.hot_standby = 'on';
  if (request.newCopy) {
    Object.assign(settings, {
      port: String(request.newCopy.port),
      listen_addresses: confString(''),
      unix_socket_directories: confString(request.newCopy.socketDir),
      unix_socket_permissions: '0700',
      hba_file: confString(request.newCopy.hbaFile),
      // A copy must never push its WAL into the source's archive (its new timeline would mix in).
      archive_mode: 'off',
      // The server log goes to pg_ctl's -l file, where pgrunbook reads why recovery stopped.
      logging_collector: 'off',
      log_destination: confString('stderr'),
      // The source's replication settings mean nothing here.
      primary_conninfo: confString(''),
      primary_slot_name: confString(''),
    });
  }
  return settings;
}

/** postgresql.auto.conf without pgrunbook's block. */
function withoutOurBlock(text: string): string {
  const start = text.indexOf(BEGIN);
  if (start === -1) return text;
  const end = text.indexOf(END, start);
  const after = end === -1 ? '' : text.slice(end + END.length).replace(/^\n/, '');
  return text.slice(0, start) + after;
}

export interface Owner {
  uid: number;
  gid: number;
}

async function writeOwned(path: string, content: string, owner: Owner | null, mode = 0o600): Promise<void> {
  await writeFile(path, content, { mode });
  if (owner) await chown(path, owner.uid, owner.gid);
}

/**
 * Writes the recovery settings (replacing any pgrunbook wrote before), recovery.signal, and in a
 * new copy a pg_hba that lets only local socket users in; removes a stale postmaster.pid.
 */
export async function writeRecoveryConfig(options: { dataDir: string; settings: Record<string, string>; owner: Owner | null; hba?: { file: string; content: string }; label: string }): Promise<void> {
  const { dataDir, owner } = options;
  // pg_basebackup leaves neither, but a copied directory might: a stale pid file blocks the start.
  await rm(join(dataDir, 'postmaster.pid'), { force: true });
  await rm(join(dataDir, 'postmaster.opts'), { force: true });
  await rm(join(dataDir, 'standby.signal'), { force: true });
  // A data directory without postgresql.conf (Debian keeps it in /etc): an empty one; ours are in auto.conf.
  if (!existsSync(join(dataDir, 'postgresql.conf'))) await writeOwned(join(dataDir, 'postgresql.conf'), '', owner);
  const autoConf = join(dataDir, 'postgresql.auto.conf');
  const before = existsSync(autoConf) ? await readFile(autoConf, 'utf8') : '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n';
  const block = [BEGIN, `# ${options.label}`, ...Object.entries(options.settings).map(([k, v]) => `${k} = ${v}`), END].join('\n');
  const kept = withoutOurBlock(before);
  await writeOwned(autoConf, `${kept}${kept.endsWith('\n') || kept === '' ? '' : '\n'}${block}\n`, owner);
  if (options.hba) await writeOwned(options.hba.file, options.hba.content, owner);
  await writeOwned(join(dataDir, 'recovery.signal'), '', owner);
}

/** Removes pgrunbook's recovery settings again (a replaced cluster after promotion). */
export async function removeRecoverySettings(dataDir: string, owner: Owner | null): Promise<boolean> {
  const autoConf = join(dataDir, 'postgresql.auto.conf');
  if (!existsSync(autoConf)) return false;
  const before = await readFile(autoConf, 'utf8');
  const after = withoutOurBlock(before);
  if (after === before) return false;
  await writeOwned(autoConf, after, owner);
  return true;
}

/** The owner of a directory, and the user name to run the server as (root runs it through runuser). */
export function ownerOf(dir: string): Owner & { user: string } {
  const { uid, gid } = statSync(dir);
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').find((line) => line.split(':')[2] === String(uid));
  const user = passwd?.split(':')[0];
  if (!user) throw new Error(`the owner of ${dir} (uid ${uid}) has no user name in /etc/passwd\nHINT: the server must run as a named user; chown the directory to it`);
  return { uid, gid, user };
}

/** [file, args] to run a server binary as `user` (pg_ctl refuses root). */
function asUser(user: string, binary: string, args: string[]): [string, string[]] {
  return isRoot() && user !== 'root' ? ['runuser', ['-u', user, '--', binary, ...args]] : [binary, args];
}

export interface ServerLocation {
  binDir: string;
  /** pg_ctl -D: the data directory, or the directory of postgresql.conf (Debian: /etc/postgresql/15/main). */
  pgctlDir: string;
  /** The data directory itself (postmaster.pid lives here). */
  dataDir: string;
  logFile: string;
  /** Who runs the server. */
  user: string;
}

/** pg_ctl status: is a server running on this data directory? */
export async function serverRunning(server: ServerLocation): Promise<boolean> {
  if (!existsSync(join(server.dataDir, 'postmaster.pid'))) return false;
  const [file, args] = asUser(server.user, join(server.binDir, 'pg_ctl'), ['-D', server.pgctlDir, 'status']);
  try {
    await runTool(file, args);
    return true;
  } catch (error) {
    // 3: not running (a stale pid file); 4: no data directory.
    if (error instanceof ToolError && (error.exitCode === 3 || error.exitCode === 4)) return false;
    throw error;
  }
}

/**
 * Starts the server unless it runs already. Its environment is exactly `env` (what its
 * restore_command/archive_command need), not the worker's: the worker's other secrets stay out
 * of the server. Returns without waiting for recovery; `recover` watches that.
 */
export async function startServer(server: ServerLocation, env: Record<string, string>): Promise<'started' | 'already running'> {
  if (await serverRunning(server)) return 'already running';
  const [file, args] = asUser(server.user, join(server.binDir, 'pg_ctl'), ['-D', server.pgctlDir, '-l', server.logFile, '-W', 'start']);
  try {
    await runTool(file, args, { env, extendEnv: false, cwd: '/' });
  } catch (error) {
    if (!(error instanceof ToolError)) throw error;
    throw new ToolError(join(server.binDir, 'pg_ctl'), error.exitCode, error.signal, `${error.stderr}\n${await logTail(server.logFile)}`);
  }
  // -W returns at once: wait until the postmaster has written its pid file (or died).
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (await serverRunning(server)) return 'started';
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the server on ${server.dataDir} did not start within 30 s; its log ends with:\n${await logTail(server.logFile)}`);
}

/** Stops the server if it runs (fast: sessions end, a clean shutdown checkpoint; immediate: no checkpoint). */
export async function stopServer(server: ServerLocation, mode: 'fast' | 'immediate'): Promise<'stopped' | 'not running'> {
  if (!(await serverRunning(server))) return 'not running';
  const [file, args] = asUser(server.user, join(server.binDir, 'pg_ctl'), ['-D', server.pgctlDir, '-m', mode, '-w', '-t', '300', 'stop']);
  try {
    await runTool(file, args, { cwd: '/' });
  } catch (error) {
    if (!(await serverRunning(server))) return 'stopped';
    throw error;
  }
  return 'stopped';
}

/** The last `bytes` of a server log, from its last start on (older runs' lines say nothing now). */
export async function logTail(logFile: string, bytes = 64 * 1024): Promise<string> {
  try {
    const handle = await open(logFile, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, bytes);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      const text = buffer.toString('utf8');
      const lastStart = text.lastIndexOf('starting PostgreSQL');
      return (lastStart === -1 ? text : text.slice(text.lastIndexOf('\n', lastStart) + 1)).trimEnd();
    } finally {
      await handle.close();
    }
  } catch {
    return '(no server log)';
  }
}

/** Why a recovering server stopped, from its log: the target was not reached, or another FATAL/PANIC. */
export function recoveryStopReason(log: string): { targetNotReached: boolean; lines: string[] } {
  const lines = log.split('\n').filter((line) => /(FATAL|PANIC|LOG):\s+(recovery ended before|requested recovery stop point|could not|invalid|database system is shut down)|FATAL|PANIC/.test(line));
  return { targetNotReached: /recovery ended before configured recovery target was reached/.test(log), lines: lines.slice(-8) };
}

export interface RecoveryState {
  inRecovery: boolean;
  replayedLsn: string | null;
  pauseState: string | null;
  lastTransactionAt: string | null;
  timeline: number | null;
}

/** Connection errors that mean "not yet": the server is starting or not yet consistent. */
export function isNotReadyYet(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  return e?.code === '57P03' || e?.code === 'ECONNREFUSED' || e?.code === 'ENOENT' || /starting up|not yet accepting connections|shutting down|Connection terminated/i.test(e?.message ?? '');
}

/** Where recovery is: in recovery or not, replay position, pause state, last replayed commit. */
export async function readRecoveryState(client: pg.ClientBase): Promise<RecoveryState> {
  const { rows } = await client.query<{ r: boolean; replayed: string | null; current: string | null; pause: string | null; last: Date | null; tli: number | null }>(
    `SELECT pg_is_in_recovery() AS r, pg_last_wal_replay_lsn()::text AS replayed,
            CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current,
            CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause,
            pg_last_xact_replay_timestamp() AS last,
            (SELECT timeline_id FROM pg_control_checkpoint()) AS tli`,
  );
  const row = rows[0]!;
  return {
    inRecovery: row.r,
    replayedLsn: row.r ? row.replayed : (row.current ?? row.replayed),
    pauseState: row.pause,
    lastTransactionAt: row.last ? row.last.toISOString() : null,
    timeline: row.tli,
  };
}

/** Runs `run` on a fresh connection, closed afterwards. */
export async function withServerClient<T>(config: pg.ClientConfig, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: 5_000 });
  // A server that shuts down under an idle client emits 'error'; the query that follows says so.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
