import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { chown, copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type pg from 'pg';
import { createAppController } from '../app-controllers/registry.js';
import { clusterRepositoryId, type ClusterConfig } from '../config/schema.js';
import { resolveRepositoryKeys } from '../encryption/keys.js';
import { listBaseBackups, readBaseManifest } from '../pitr/base-catalog.js';
import { extractBaseBackup } from '../pitr/base-extract.js';
import { baseBackupFolder, pitrReportKey, restorePointKey, restorePointsPrefix } from '../pitr/layout.js';
import { RestorePointRecord, type BaseBackupManifest } from '../pitr/manifest.js';
import { walReachability, type WalTarget } from '../pitr/wal-inventory.js';
import { formatLsn, parseLsn, parseWalFileName } from '../pitr/wal-names.js';
import { removePrefetchedSegments } from '../pitr/wal-prefetch.js';
import { countRows, listTables } from '../postgres/catalog.js';
import { pgClientConfig } from '../postgres/connection.js';
import { classifyPostgresError, failure } from '../postgres/errors.js';
import {
  isNotReadyYet, logTail, ownerOf, readRecoveryState, recoverySettings, recoveryStopReason, removeRecoverySettings, serverRunning, shellWord,
  startServer, stopServer, withServerClient, writeRecoveryConfig, type RecoveryState, type RecoveryTarget, type ServerLocation,
} from '../postgres/recovery.js';
import { isRoot, postgresUid } from '../postgres/server-user.js';
import { checkRestoredDatabase, type SmokeResult } from '../postgres/verify-restored.js';
import { runTool } from '../process/run.js';
import { scrubSecrets } from '../process/secrets.js';
import { readAll, writeAll } from '../repository/types.js';
import { postgresServerBinDirs, projectRoot } from '../stack/binaries.js';
import { freePort } from '../stack/ports.js';
import { describeTarget, parsePitrTime, recoveryProgressSignal, type ParsedPitrInput, type RecoveryProgress } from '../workflows/pitr-input.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { PGRUNBOOK_VERSION } from './version.js';

// Point-in-time restore activities (issue 6; seed 001 §4B and disaster scenario 1): pick the
// base backup and prove the WAL reaches the target before anything is created, extract it into a
// new data directory (or the cluster's own, moved aside first), write the recovery settings,
// start the server as its owner, watch it replay to the target, verify, promote or discard.
// Every activity is idempotent: a worker killed mid-step leaves something a re-run converges.

/** The recovered server as the activities reach it. */
export interface RecoveredServer {
  /** mode new: the directory holding data/, the socket and the log; replace: the data directory's parent. */
  dir: string;
  dataDir: string;
  /** pg_ctl -D (the data directory, or where postgresql.conf lives). */
  pgctlDir: string;
  logFile: string;
  /** mode new: the private socket directory (no TCP); replace: null (the cluster's own settings). */
  socketDir: string | null;
  /** mode new: chosen at provision; replace: null (the cluster's own port). */
  port: number | null;
  binDir: string;
  /** Who runs the server: the data directory's owner. */
  user: string;
  /** Written once the base backup is fully extracted; its absence means "extract again". */
  extractedMarker: string;
}

export interface PitrTargetPlan {
  kind: 'time' | 'lsn' | 'restore-point' | 'latest';
  /** In words: `time 2026-03-14 14:30:00 +00:00`. */
  description: string;
  /** What PostgreSQL is told (recovery_target_time/lsn/name); null for latest. */
  value: string | null;
  /** The LSN recovery ends at when known (LSN, restore point, the end of the archive for latest). */
  lsn: string | null;
  /** time: the instant, to the millisecond. */
  time: string | null;
}

export interface PitrPlan {
  cluster: string;
  /** The configured database: its connection (replace), its app and its smoke queries. */
  database: string;
  /** Its database name on the server, verified after recovery. */
  databaseName: string;
  repository: string;
  mode: 'new' | 'replace';
  stamp: string;
  target: PitrTargetPlan;
  baseBackup: { id: string; startLsn: string; stopLsn: string; timeline: number; startedAt: string; finishedAt: string; storedBytes: number; serverVersion: string };
  wal: { segmentsNeeded: number; lastSegment: string | null; timelines: number[] };
  server: RecoveredServer;
  /** The server's restore_command: names and paths only, never a secret. */
  restoreCommand: string;
  /** replace: the live data directory and where it goes aside (kept for the operator to delete). */
  replace: { dataDirectory: string; aside: string } | null;
  approval: { required: boolean; timeoutSeconds: number };
  /** mode new: how long the recovered cluster waits for promote or discard. */
  promoteTimeoutSeconds: number;
  recoveryTimeoutSeconds: number;
  app: { type: string; description: string; health: string | null };
  onStepFailure: 'ask' | 'abort';
  decisionTimeoutSeconds: number;
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

export interface RecoveryResult extends RecoveryState {
  seconds: number;
}

export interface PitrVerification {
  ok: boolean;
  database: string;
  rowCounts: Record<string, number>;
  totalRows: number;
  smokeQueries: SmokeResult[];
  schemaVersion: string | null;
  problems: string[];
}

export interface PitrReport {
  workflowId: string;
  runId: string;
  cluster: string;
  mode: 'new' | 'replace';
  target: string;
  baseBackupId: string | null;
  outcome: 'promoted' | 'discarded' | 'replaced' | 'failed' | 'cancelled' | 'rejected';
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  steps: unknown[];
  decisions: unknown[];
  undo: unknown[];
  dataDir: string | null;
  movedAside: string | null;
  recovered: RecoveryResult | null;
  verification: PitrVerification | null;
  error: { step: string; type: string; message: string } | null;
  requestedBy: string | null;
}

/** The worker's deps; its config file's path (deps.configPath) is what the recovered server's restore_command needs. */
export type PitrDeps = ActivityDeps;

const PITR_DIR = /^pgrunbook-pitr-[a-z0-9_-]+-\d{14}$/;
const MARKER = 'pgrunbook-pitr.json';

/** A point-in-time restore's failure: a type an operator can act on, a message and a HINT. */
function pitrFailure(type: string, message: string, hint: string, nonRetryable = true): ApplicationFailure {
  return ApplicationFailure.create({ type, message: scrubSecrets(`${message}\nHINT: ${hint}`), nonRetryable });
}

export function createPitrActivities(deps: PitrDeps) {
  const { env, stepSettings, databaseConfig, connection, repository, withHeartbeat, byteProgress, resolving } = activitySupport(deps);

  function clusterConfig(cluster: string): ClusterConfig {
    const config = deps.config.clusters[cluster];
    if (!config) throw failure('InvalidInput', `unknown cluster "${cluster}"`, `clusters in the worker's config: ${Object.keys(deps.config.clusters).join(', ') || '(none)'}`);
    return config;
  }

  /** The recovered server's environment: what wal-fetch (and a replaced cluster's wal-push) need, nothing else of the worker's. */
  function serverEnv(plan: PitrPlan): Record<string, string> {
    const names = new Set(['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR']);
    const repo = deps.config.repositories[plan.repository];
    if (repo?.type === 's3') for (const name of [repo.accessKeyIdEnv, repo.secretAccessKeyEnv, repo.sessionTokenEnv]) if (name) names.add(name);
    if (repo?.encryption?.identityEnv) names.add(repo.encryption.identityEnv);
    const result: Record<string, string> = {};
    for (const name of names) if (env[name] !== undefined) result[name] = env[name]!;
    return result;
  }

  function location(server: RecoveredServer): ServerLocation {
    return { binDir: server.binDir, pgctlDir: server.pgctlDir, dataDir: server.dataDir, logFile: server.logFile, user: server.user };
  }

  /** How to reach the recovered server: its private socket as postgres (new), or the database's own connection (replace). */
  function clientConfig(plan: PitrPlan, server: RecoveredServer, database: string): pg.ClientConfig {
    if (plan.mode === 'new') return { host: server.socketDir!, port: server.port!, user: 'postgres', database, application_name: 'pgrunbook' };
    return pgClientConfig(connection(plan.database), database);
  }

  const describeServer = (plan: PitrPlan, server: RecoveredServer): string =>
    plan.mode === 'new' ? `the recovered server (socket ${server.socketDir}, port ${server.port})` : `${plan.cluster}'s server on ${server.dataDir}`;

  /** Best effort: the workflow's status shows where replay is. */
  function progressSender() {
    const info = Context.current().info;
    let last = 0;
    let pending: Promise<unknown> = Promise.resolve();
    return (progress: RecoveryProgress, force = false): void => {
      if (!force && Date.now() - last < 2_000) return;
      last = Date.now();
      pending = pending.then(() =>
        Context.current().client.workflow.getHandle(info.workflowExecution!.workflowId, info.workflowExecution!.runId).signal(recoveryProgressSignal, progress).catch(() => undefined),
      );
    };
  }

  /** The server binaries of the backup's major version (pg_ctl of another major refuses the data directory). */
  async function serverBinDir(cluster: ClusterConfig, manifest: BaseBackupManifest): Promise<string> {
    const major = Math.floor(manifest.serverVersionNum / 10_000);
    const candidates = cluster.pgBinDir ? [cluster.pgBinDir] : postgresServerBinDirs();
    for (const dir of candidates) {
      const version = await runTool(join(dir, 'postgres'), ['--version']).catch(() => '');
      if (Number(/\(PostgreSQL\)\s+(\d+)/.exec(version)?.[1]) === major) return dir;
    }
    throw failure('VersionIncompatible', `base backup ${manifest.id} is of PostgreSQL ${major}; no PostgreSQL ${major} server binaries on ${hostname()} (looked in ${candidates.join(', ') || 'nowhere'})`, `install PostgreSQL ${major} server binaries on the worker host, or set clusters.<id>.pgBinDir`);
  }

  /** Refuses a path the server user cannot read (the config file its restore_command passes to wal-fetch). */
  async function assertReadableBy(user: string, path: string, what: string): Promise<void> {
    if (!isRoot() || user === 'root') return;
    try {
      await runTool('runuser', ['-u', user, '--', 'test', '-r', path]);
    } catch {
      throw failure('ConfigError', `${what} ${path} is not readable by ${user}, who runs the recovered server and its restore_command`, `make it readable by ${user} (chmod o+r, or group), or set clusters.<id>.restore.walFetchCommand`);
    }
  }

  /** The newest verified base backup that can recover to the target (or the one asked for). */
  async function chooseBaseBackup(cluster: string, request: ParsedPitrInput, targetLsn: bigint | null, targetTime: Date | null): Promise<BaseBackupManifest> {
    const repo = repository(clusterRepositoryId(deps.config, cluster));
    const entries = await listBaseBackups(repo, cluster);
    const verified = entries.filter((e) => e.state === 'verified' && e.manifest).map((e) => e.manifest!);
    const before = (m: BaseBackupManifest): boolean => {
      if (targetTime) return new Date(m.finishedAt).getTime() <= targetTime.getTime() && new Date(m.startedAt).getTime() <= targetTime.getTime();
      if (targetLsn !== null) return parseLsn(m.stopLsn)! <= targetLsn;
      return true;
    };
    const target = describeTarget(request.target);
    if (request.baseBackup) {
      const entry = entries.find((e) => e.id === request.baseBackup);
      if (!entry) throw failure('BackupNotFound', `base backup ${request.baseBackup} is not in ${repo.location}`, `see \`pgrunbook basebackups list --cluster ${cluster}\``);
      if (entry.state !== 'verified') throw failure('BackupNotFound', `base backup ${entry.id} is ${entry.state}; only verified base backups are recovered from`, `pick a verified one from \`pgrunbook basebackups list --cluster ${cluster}\``);
      if (!before(entry.manifest!)) throw failure('InvalidInput', `baseBackup: ${entry.id} ended (${entry.manifest!.finishedAt}, LSN ${entry.manifest!.stopLsn}) after the target ${target}; recovery cannot go back in time`, 'pick an older base backup, or leave --base-backup out to choose the newest one before the target');
      return entry.manifest!;
    }
    if (verified.length === 0) throw failure('BackupNotFound', `no verified base backup of cluster ${cluster} in ${repo.location}`, `take one with \`pgrunbook basebackup --cluster ${cluster} --wait\``);
    const chosen = verified.find(before);
    if (!chosen) {
      const oldest = verified.at(-1)!;
      throw pitrFailure('TargetUnreachable', `the target ${target} is before the oldest verified base backup of ${cluster} (${oldest.id}, finished ${oldest.finishedAt}, stop LSN ${oldest.stopLsn}); nothing older can be recovered`, 'choose a later target; base backups older than retention keeps are gone');
    }
    return chosen;
  }

  async function readRestorePoint(cluster: string, name: string): Promise<RestorePointRecord> {
    const repo = repository(clusterRepositoryId(deps.config, cluster));
    if (!(await repo.stat(restorePointKey(cluster, name)))) {
      const known = (await repo.list(restorePointsPrefix(cluster))).map((o) => basename(o.key).replace(/\.json$/, ''));
      throw pitrFailure('TargetUnreachable', `no restore point "${name}" is recorded for cluster ${cluster}`, known.length ? `known restore points: ${known.join(', ')}` : `none are recorded; make one with \`pgrunbook wal restore-point NAME --cluster ${cluster}\``);
    }
    return RestorePointRecord.parse(JSON.parse((await readAll(repo, restorePointKey(cluster, name))).toString('utf8')));
  }

  /** Replace mode: which directory pg_ctl -D takes (where postgresql.conf is), found before the server is stopped. */
  async function pgctlDirOf(plan: { database: string }, dataDirectory: string): Promise<string> {
    if (existsSync(join(dataDirectory, 'postgresql.conf'))) return dataDirectory;
    try {
      const configFile = await withServerClient(pgClientConfig(connection(plan.database)), async (client) => (await client.query<{ f: string }>("SELECT current_setting('config_file') AS f")).rows[0]!.f);
      return dirname(configFile);
    } catch (error) {
      throw failure('ConfigError', `${dataDirectory} has no postgresql.conf and the server could not tell where its config is: ${(error as Error).message}`, 'start the server, or keep postgresql.conf in the data directory');
    }
  }

  /** pg_controldata's system identifier: is this data directory the backed-up cluster? */
  async function systemIdentifierOf(binDir: string, dataDirectory: string, user: string): Promise<string | null> {
    const [file, args] = isRoot() && user !== 'root' ? ['runuser', ['-u', user, '--', join(binDir, 'pg_controldata'), '-D', dataDirectory]] : [join(binDir, 'pg_controldata'), ['-D', dataDirectory]];
    const text = await runTool(file, args, { env: { LC_ALL: 'C' } }).catch(() => '');
    return /Database system identifier:\s+(\d+)/.exec(text)?.[1] ?? null;
  }

  return {
    /**
     * Step "resolve": the plan, from the worker's config, and the proof that the target can be
     * reached. The base backup is the newest verified one before the target; the archived WAL must
     * reach from its start to the target without a gap. A target that cannot be reached is refused
     * here, before anything is created.
     */
    async planPitr(input: { request: ParsedPitrInput; stamp: string }): Promise<PitrPlan> {
      const { request, stamp } = input;
      const cluster = clusterConfig(request.cluster);
      const db = databaseConfig(cluster.database);
      const repositoryId = clusterRepositoryId(deps.config, request.cluster);
      const repo = repository(repositoryId);

      // The target, as PostgreSQL will be told and as the archive is checked.
      let target: PitrTargetPlan;
      let targetLsn: bigint | null = null;
      let targetTime: Date | null = null;
      if (request.target.time !== undefined) {
        const time = parsePitrTime(request.target.time)!;
        targetTime = new Date(time.iso);
        target = { kind: 'time', description: describeTarget(request.target), value: time.text, lsn: null, time: time.iso };
      } else if (request.target.lsn !== undefined) {
        targetLsn = parseLsn(request.target.lsn)!;
        target = { kind: 'lsn', description: describeTarget(request.target), value: formatLsn(targetLsn), lsn: formatLsn(targetLsn), time: null };
      } else if (request.target.restorePoint !== undefined) {
        const point = await readRestorePoint(request.cluster, request.target.restorePoint);
        targetLsn = parseLsn(point.lsn)!;
        target = { kind: 'restore-point', description: `${describeTarget(request.target)} (LSN ${point.lsn}, made ${point.createdAt})`, value: point.name, lsn: point.lsn, time: null };
      } else {
        target = { kind: 'latest', description: describeTarget(request.target), value: null, lsn: null, time: null };
      }

      const manifest = await chooseBaseBackup(request.cluster, request, targetLsn, targetTime);
      const until: WalTarget = targetTime ? { time: targetTime } : targetLsn !== null ? { lsn: targetLsn } : { latest: true };
      const reach = await walReachability(repo, request.cluster, { timeline: manifest.timeline, startLsn: parseLsn(manifest.startLsn)! }, until, manifest.segmentSize);
      if (!reach.reachable) {
        const gaps = reach.gaps.map((g) => `timeline ${g.timeline}: ${g.from}${g.to !== g.from ? `..${g.to}` : ''} (${g.missing} segment${g.missing === 1 ? '' : 's'})`).join('; ');
        const [reason, ...hint] = (reach.reason ?? 'the archived WAL does not reach it').split('\nHINT: ');
        throw pitrFailure(
          'TargetUnreachable',
          `cannot recover cluster ${request.cluster} to ${target.description} from base backup ${manifest.id}: ${reason}${gaps ? `; missing WAL: ${gaps}` : ''}; nothing was created`,
          hint.join(' ') || 'choose a target the archive reaches (`pgrunbook wal verify`), or a later base backup',
        );
      }
      if (target.kind === 'latest' && reach.lastSegment) {
        // The archive's end: replay stops at the end of the last archived segment at the latest.
        const last = parseWalFileName(reach.lastSegment, manifest.segmentSize);
        if (last?.segment !== undefined && last.segment !== null) target.lsn = formatLsn((last.segment + 1n) * BigInt(manifest.segmentSize));
      }

      const binDir = await serverBinDir(cluster, manifest);
      const configPath = deps.configPath ?? env.PGRUNBOOK_CONFIG;
      if (!configPath) {
        throw failure('ConfigError', "the worker does not know its config file's path, which the recovered server's restore_command (wal-fetch --config) needs", 'start the worker with `pgrunbook worker --config FILE` or set PGRUNBOOK_CONFIG in its environment');
      }
      const walFetch = cluster.restore.walFetchCommand ?? `${shellWord(process.execPath)} ${shellWord(join(projectRoot, 'dist', 'client', 'main.js'))} wal-fetch`;
      const restoreCommand = `${walFetch} %f %p --cluster ${shellWord(request.cluster)} --config ${shellWord(configPath)}`;

      let server: RecoveredServer;
      let replace: PitrPlan['replace'] = null;
      if (request.mode === 'new') {
        const parent = cluster.restore.dir ?? (cluster.dataDirectory ? dirname(cluster.dataDirectory) : tmpdir());
        const dir = join(parent, `pgrunbook-pitr-${request.cluster}-${stamp}`);
        server = { dir, dataDir: join(dir, 'data'), pgctlDir: join(dir, 'data'), logFile: join(dir, 'server.log'), socketDir: dir, port: null, binDir, user: isRoot() ? 'postgres' : (env.USER ?? 'postgres'), extractedMarker: join(dir, 'extracted.json') };
      } else {
        const dataDirectory = cluster.dataDirectory;
        if (!dataDirectory) throw failure('InvalidInput', `mode: replace needs clusters.${request.cluster}.dataDirectory (the live data directory, as this worker sees it)`, 'set it in the config of the worker on the database host, or use mode new (a new data directory and port)');
        const aside = `${dataDirectory}.pre-pitr-${stamp}`;
        if (!existsSync(dataDirectory) && !existsSync(aside)) {
          throw failure('TargetUnavailable', `${dataDirectory} (clusters.${request.cluster}.dataDirectory) is not on this worker's host (${hostname()})`, 'replace mode runs on a worker on the database host: give that host its own task queue');
        }
        const owner = ownerOf(existsSync(dataDirectory) ? dataDirectory : aside);
        if (isRoot() && owner.uid !== postgresUid().uid) {
          throw failure('InvalidInput', `${dataDirectory} belongs to ${owner.user}; replace mode recovers clusters run by postgres`, 'use mode new, or run the cluster as postgres');
        }
        if (existsSync(dataDirectory) && !existsSync(aside)) {
          // The base backup must be of this very cluster: moving a stranger's data aside for it would be a disaster.
          const live = await systemIdentifierOf(binDir, dataDirectory, owner.user);
          if (live && live !== manifest.systemIdentifier) {
            throw failure('InvalidInput', `${dataDirectory} is cluster ${live}, but base backup ${manifest.id} is of cluster ${manifest.systemIdentifier}`, `check clusters.${request.cluster}.dataDirectory; nothing was changed`);
          }
        }
        // After a crash past move-aside, the live postgresql.conf is in the aside directory (and comes back with configure).
        const pgctlDir = existsSync(join(aside, 'postgresql.conf')) ? dataDirectory : await pgctlDirOf({ database: cluster.database }, dataDirectory);
        server = { dir: dirname(dataDirectory), dataDir: dataDirectory, pgctlDir, logFile: `${dataDirectory}.pitr-${stamp}.log`, socketDir: null, port: null, binDir, user: owner.user, extractedMarker: `${dataDirectory}.pitr-${stamp}.extracted` };
        replace = { dataDirectory, aside };
      }
      // The server runs restore_command as its own user: the config file must be readable to it.
      await assertReadableBy(server.user, configPath, 'the config file');

      const params = connection(cluster.database);
      const replacing = request.mode === 'replace';
      const controller = replacing ? createAppController(db.app, env) : undefined;
      return {
        cluster: request.cluster,
        database: cluster.database,
        databaseName: params.database,
        repository: repositoryId,
        mode: request.mode,
        stamp,
        target,
        baseBackup: {
          id: manifest.id,
          startLsn: manifest.startLsn,
          stopLsn: manifest.stopLsn,
          timeline: manifest.timeline,
          startedAt: manifest.startedAt,
          finishedAt: manifest.finishedAt,
          storedBytes: Object.values(manifest.files).reduce((sum, f) => sum + f.size, 0),
          serverVersion: manifest.serverVersion,
        },
        wal: { segmentsNeeded: reach.segmentsNeeded, lastSegment: reach.lastSegment, timelines: reach.timelines },
        server,
        restoreCommand,
        replace,
        approval: {
          required: replacing && (request.approval === 'required' || (request.approval !== 'skip' && db.restore.approval.required)),
          timeoutSeconds: Math.round(db.restore.approval.timeoutMinutes * 60),
        },
        promoteTimeoutSeconds: Math.round(cluster.restore.decisionTimeoutHours * 3600),
        recoveryTimeoutSeconds: Math.round(cluster.restore.recoveryTimeoutMinutes * 60),
        app: { type: replacing ? db.app.type : 'none', description: controller ? controller.describe() : 'not touched (a new data directory beside the cluster)', health: replacing ? (db.app.health?.url ?? null) : null },
        onStepFailure: db.restore.onStepFailure,
        decisionTimeoutSeconds: Math.round(db.restore.decisionTimeoutHours * 3600),
        ...stepSettings(),
      };
    },

    /**
     * Step "provision" (mode new): the recovered cluster's directory (0700, the server user's) and
     * its port, recorded in a marker so a re-run finds the same ones. Its undo is registered first.
     */
    async provisionPitrCluster(input: { plan: PitrPlan }): Promise<RecoveredServer> {
      const { server } = input.plan;
      if (!PITR_DIR.test(basename(server.dir))) throw failure('InvalidInput', `refusing to provision ${server.dir}: not a pgrunbook-pitr directory name`);
      const marker = join(server.dir, MARKER);
      if (existsSync(marker)) {
        const recorded = JSON.parse(readFileSync(marker, 'utf8')) as { port: number };
        return { ...server, port: recorded.port };
      }
      // The parent must be traversable by the server's user.
      mkdirSync(dirname(server.dir), { recursive: true, mode: 0o755 });
      await mkdir(server.dir, { recursive: true, mode: 0o700 });
      if (isRoot()) {
        const { uid, gid } = postgresUid();
        await chown(server.dir, uid, gid);
      }
      const port = clusterConfig(input.plan.cluster).restore.port ?? (await freePort());
      // Written last: a directory without it is a half-made one, provisioned again.
      await writeFile(marker, JSON.stringify({ port, workflowStamp: input.plan.stamp, baseBackup: input.plan.baseBackup.id, createdAt: new Date().toISOString() }) + '\n');
      return { ...server, port };
    },

    /** Undo of "provision", and "discard": the recovered server stopped at once and its directory removed. Idempotent; only pgrunbook-pitr directories. */
    async removePitrCluster(input: { plan: PitrPlan }): Promise<{ removed: boolean; dir: string }> {
      const { server } = input.plan;
      if (!PITR_DIR.test(basename(server.dir))) throw failure('InvalidInput', `refusing to remove ${server.dir}: not a pgrunbook-pitr directory`);
      if (!existsSync(server.dir)) return { removed: false, dir: server.dir };
      await stopServer(location(server), 'immediate');
      await rm(server.dir, { recursive: true, force: true });
      return { removed: true, dir: server.dir };
    },

    /**
     * Step "extract": the base backup into the data directory, streamed (checksummed, decrypted,
     * decompressed). A re-run after a crash wipes the half-extracted directory and extracts again;
     * after a success (the marker) it does nothing. Replace mode only ever extracts once the live
     * data directory has been moved aside.
     */
    async extractPitrBase(input: { plan: PitrPlan; server: RecoveredServer }): Promise<{ bytes: number; skipped: boolean }> {
      const { plan, server } = input;
      if (existsSync(server.extractedMarker)) {
        const done = JSON.parse(readFileSync(server.extractedMarker, 'utf8')) as { baseBackup: string; bytes: number };
        if (done.baseBackup === plan.baseBackup.id && existsSync(join(server.dataDir, 'PG_VERSION'))) return { bytes: done.bytes, skipped: true };
      }
      if (plan.mode === 'new') {
        if (!PITR_DIR.test(basename(server.dir)) || !existsSync(join(server.dir, MARKER))) throw failure('InvalidInput', `refusing to extract into ${server.dataDir}: not a provisioned pgrunbook-pitr directory`);
      } else {
        // Defence in depth: extraction wipes its directory first; the live data must be aside by now.
        if (!existsSync(join(plan.replace!.aside, 'PG_VERSION'))) {
          throw failure('InvalidInput', `refusing to extract into ${server.dataDir}: the live data directory has not been moved aside to ${plan.replace!.aside}`, 'run the move-aside step first');
        }
      }
      if (await serverRunning(location(server))) throw failure('InvalidInput', `refusing to extract into ${server.dataDir}: a server runs on it`, 'stop it first');
      const repo = repository(plan.repository);
      const manifest = await readBaseManifest(repo, plan.baseBackup.id);
      const keys = await resolving(() => resolveRepositoryKeys(plan.repository, deps.config.repositories[plan.repository]!, env));
      const signal = Context.current().cancellationSignal;
      const { bytes } = await withHeartbeat(async (report) =>
        extractBaseBackup({ repository: repo, manifest, keys, dataDir: server.dataDir, asServerUser: isRoot(), signal, onBytes: byteProgress(report) }),
      );
      await writeFile(server.extractedMarker, JSON.stringify({ baseBackup: plan.baseBackup.id, bytes, at: new Date().toISOString(), folder: baseBackupFolder(plan.baseBackup.id) }) + '\n');
      return { bytes, skipped: false };
    },

    /**
     * Step "configure": the recovery settings (restore_command through wal-fetch, the target,
     * its action, timeline latest), recovery.signal; in mode new a private socket on its own port,
     * no TCP, no archiving; in replace mode the cluster's own config files from the moved-aside
     * directory. Returns the settings written (no secret is among them).
     */
    async configurePitrRecovery(input: { plan: PitrPlan; server: RecoveredServer }): Promise<{ settings: Record<string, string>; alreadyRunning: boolean }> {
      const { plan, server } = input;
      const target: RecoveryTarget =
        plan.target.kind === 'time' ? { time: plan.target.value! } : plan.target.kind === 'lsn' ? { lsn: plan.target.value! } : plan.target.kind === 'restore-point' ? { name: plan.target.value! } : { latest: true };
      const hbaFile = join(server.dir, 'pg_hba.conf');
      const settings = recoverySettings({
        restoreCommand: plan.restoreCommand,
        target,
        targetAction: plan.mode === 'new' ? 'pause' : 'promote',
        newCopy: plan.mode === 'new' ? { port: server.port!, socketDir: server.socketDir!, hbaFile } : null,
      });
      // Written before the start only: a running (or promoted) server keeps what it started with.
      if (await serverRunning(location(server))) return { settings, alreadyRunning: true };
      const owner = isRoot() ? postgresUid() : null;
      if (plan.mode === 'replace') {
        // The cluster's current settings, not the backup's older copy of them.
        for (const file of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf', 'postgresql.auto.conf']) {
          const from = join(plan.replace!.aside, file);
          if (!existsSync(from)) continue;
          await copyFile(from, join(server.dataDir, file));
          if (owner) await chown(join(server.dataDir, file), owner.uid, owner.gid);
        }
      }
      await writeRecoveryConfig({
        dataDir: server.dataDir,
        settings,
        owner,
        label: `cluster ${plan.cluster}, target ${plan.target.description}, base backup ${plan.baseBackup.id}`,
        // Only the server's user (and root) reach the 0700 socket directory: trust is safe there and needs no password.
        ...(plan.mode === 'new' ? { hba: { file: hbaFile, content: '# pgrunbook: a recovered copy, reachable only through its private socket directory\nlocal all all trust\n' } } : {}),
      });
      return { settings, alreadyRunning: false };
    },

    /** Step "start": pg_ctl start as the data directory's owner; already running is fine. */
    async startPitrServer(input: { plan: PitrPlan; server: RecoveredServer }): Promise<{ state: string }> {
      const { plan, server } = input;
      if (plan.mode === 'replace' && !existsSync(server.logFile)) {
        await writeFile(server.logFile, '', { mode: 0o640 });
        if (isRoot()) await chown(server.logFile, postgresUid().uid, postgresUid().gid);
      }
      try {
        return { state: await startServer(location(server), serverEnv(plan)) };
      } catch (error) {
        throw failure('ToolFailed', `${describeServer(plan, server)} did not start: ${(error as Error).message}`, `read ${server.logFile}`);
      }
    },

    /**
     * Step "recover": watches replay until the server pauses at the target (mode new) or leaves
     * recovery (latest, replace). A worker that died meanwhile does not stop the server; a re-run
     * just watches again. A server that stopped because the archive ends before the target fails
     * the step with the reason from its log.
     */
    async waitForRecovery(input: { plan: PitrPlan; server: RecoveredServer; deadline: string }): Promise<RecoveryResult> {
      const { plan, server } = input;
      const started = Date.now();
      const deadline = new Date(input.deadline).getTime();
      const signal = Context.current().cancellationSignal;
      const send = progressSender();
      const startLsn = parseLsn(plan.baseBackup.startLsn)!;
      const pausesAtTarget = plan.mode === 'new' && plan.target.kind !== 'latest';
      const config = clientConfig(plan, server, 'postgres');
      return withHeartbeat(async (report) => {
        // A server that is not running (a host reboot, an operator's retry) is started once per attempt.
        if (!(await serverRunning(location(server)))) await startServer(location(server), serverEnv(plan));
        for (;;) {
          if (signal.aborted) throw signal.reason ?? new Error('cancelled');
          let state: RecoveryState | undefined;
          try {
            state = await withServerClient(config, readRecoveryState);
          } catch (error) {
            if (!isNotReadyYet(error)) throw classifyPostgresError(error, describeServer(plan, server));
          }
          if (!state && !(await serverRunning(location(server)))) {
            const log = await logTail(server.logFile);
            const why = recoveryStopReason(log);
            if (why.targetNotReached) {
              throw pitrFailure('TargetUnreachable', `recovery ended before reaching ${plan.target.description}: the archived WAL stops before it\n${why.lines.join('\n')}`, `archive more WAL (pg_switch_wal() on the source) and \`pgrunbook step retry\`, or abort and choose an earlier target; the server log is ${server.logFile}`);
            }
            throw pitrFailure('RecoveryFailed', `${describeServer(plan, server)} stopped during recovery:\n${(why.lines.length ? why.lines : log.split('\n').slice(-8)).join('\n')}`, `read ${server.logFile}; \`pgrunbook step retry\` starts it again`);
          }
          if (state) {
            const replayed = state.replayedLsn ? parseLsn(state.replayedLsn) : undefined;
            const bytes = replayed !== undefined && replayed > startLsn ? Number(replayed - startLsn) : 0;
            byteProgress(report, started)(bytes);
            const done = pausesAtTarget ? state.inRecovery && state.pauseState === 'paused' : !state.inRecovery;
            send({ inRecovery: state.inRecovery, replayedLsn: state.replayedLsn, targetLsn: plan.target.lsn, pauseState: state.pauseState, lastTransactionAt: state.lastTransactionAt, at: new Date().toISOString() }, done);
            if (done) {
              // A replaced cluster runs on: its recovery settings have done their job.
              if (plan.mode === 'replace') await removeRecoverySettings(server.dataDir, isRoot() ? postgresUid() : null);
              // Out of recovery: segments wal-fetch fetched ahead are never asked for again.
              if (!state.inRecovery) removePrefetchedSegments(server.dataDir);
              return { ...state, seconds: (Date.now() - started) / 1000 };
            }
          }
          if (Date.now() > deadline) {
            throw pitrFailure('RecoveryTimedOut', `recovery did not reach ${plan.target.description} within ${Math.round(plan.recoveryTimeoutSeconds / 60)} min (replayed up to ${state?.replayedLsn ?? 'unknown'})`, `see ${server.logFile}; raise clusters.${plan.cluster}.restore.recoveryTimeoutMinutes and \`pgrunbook step retry\``);
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      });
    },

    /** Step "verify": row counts of the database's user tables and its smoke queries, on the recovered server. */
    async verifyPitrServer(input: { plan: PitrPlan; server: RecoveredServer }): Promise<PitrVerification> {
      const { plan, server } = input;
      const db = databaseConfig(plan.database);
      const config = clientConfig(plan, server, plan.databaseName);
      try {
        const rowCounts = await withServerClient(config, async (client) => {
          await client.query('BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ');
          const counts = await countRows(client, await listTables(client));
          await client.query('COMMIT');
          return counts;
        });
        const params = plan.mode === 'new' ? { host: server.socketDir!, port: server.port!, user: 'postgres', database: plan.databaseName } : connection(plan.database);
        const check = await checkRestoredDatabase(params, plan.databaseName, { rowCounts: null, schemaVersion: null, smokeQueries: db.restore.smokeQueries, analyze: false });
        const problems = check.smokeQueries.filter((s) => !s.ok).map((s) => `smoke query "${s.name}": ${s.error ?? `returned ${s.actual ?? 'no row'}, expected ${s.expected}`}`);
        const verification: PitrVerification = {
          ok: problems.length === 0,
          database: plan.databaseName,
          rowCounts,
          totalRows: Object.values(rowCounts).reduce((a, b) => a + b, 0),
          smokeQueries: check.smokeQueries,
          schemaVersion: check.schemaVersion.actual,
          problems,
        };
        if (!verification.ok) throw pitrFailure('VerificationFailed', `the recovered ${plan.databaseName} failed verification: ${problems.join('; ')}`, 'look at the recovered data; `pgrunbook step retry|skip|abort`');
        return verification;
      } catch (error) {
        if (error instanceof ApplicationFailure) throw error;
        throw classifyPostgresError(error, describeServer(plan, server));
      }
    },

    /** Step "promote" (mode new): pg_wal_replay_resume() ends the pause at the target and recovery; waits until the server accepts writes. */
    async promotePitrServer(input: { plan: PitrPlan; server: RecoveredServer }): Promise<RecoveryState> {
      const { plan, server } = input;
      const config = clientConfig(plan, server, 'postgres');
      const send = progressSender();
      return withHeartbeat(async () => {
        const deadline = Date.now() + 10 * 60_000;
        let resumed = false;
        for (;;) {
          const state = await withServerClient(config, async (client) => {
            const now = await readRecoveryState(client);
            if (now.inRecovery && !resumed) {
              await client.query('SELECT pg_wal_replay_resume()');
              resumed = true;
            }
            return now;
          }).catch((error: unknown) => {
            if (isNotReadyYet(error)) return undefined;
            throw classifyPostgresError(error, describeServer(plan, server));
          });
          if (state && !state.inRecovery) {
            removePrefetchedSegments(server.dataDir);
            send({ inRecovery: false, replayedLsn: state.replayedLsn, targetLsn: plan.target.lsn, pauseState: null, lastTransactionAt: state.lastTransactionAt, at: new Date().toISOString() }, true);
            return state;
          }
          if (Date.now() > deadline) throw pitrFailure('RecoveryFailed', `${describeServer(plan, server)} did not leave recovery within 10 min of pg_wal_replay_resume()`, `read ${server.logFile}`, false);
          await new Promise((r) => setTimeout(r, 300));
        }
      });
    },

    /** Step "stop-server" (replace): the live server stopped (fast) as its owner. Its undo, registered first, starts it again. */
    async stopLiveServer(input: { plan: PitrPlan }): Promise<{ state: 'stopped' | 'not running' }> {
      const { plan } = input;
      // Only the live cluster: never a server this restore started on the recovered data.
      if (existsSync(plan.server.extractedMarker)) return { state: 'not running' };
      return withHeartbeat(async () => ({ state: await stopServer(location(plan.server), 'fast') }));
    },

    /** Undo of "stop-server": the cluster's server running again (on whatever data directory is in place: the old one after move-back). */
    async startLiveServer(input: { plan: PitrPlan }): Promise<{ state: string }> {
      const { plan } = input;
      const { server } = plan;
      if (!existsSync(server.logFile)) {
        await writeFile(server.logFile, '', { mode: 0o640 });
        if (isRoot()) await chown(server.logFile, postgresUid().uid, postgresUid().gid);
      }
      return withHeartbeat(async () => {
        const state = await startServer(location(server), serverEnv(plan));
        // Running is not serving: wait until it accepts connections (crash recovery after an immediate stop).
        const deadline = Date.now() + 120_000;
        for (;;) {
          try {
            await withServerClient(pgClientConfig(connection(plan.database)), (client) => client.query('SELECT 1'));
            return { state };
          } catch (error) {
            if (!isNotReadyYet(error) || Date.now() > deadline) throw classifyPostgresError(error, describeServer(plan, server));
          }
          await new Promise((r) => setTimeout(r, 300));
        }
      });
    },

    /**
     * Step "move-aside" (replace): the live data directory renamed to `<dir>.pre-pitr-<stamp>`,
     * nothing deleted. Idempotent: once the aside directory exists, it never moves anything again.
     */
    async moveDataDirectoryAside(input: { plan: PitrPlan }): Promise<{ aside: string; moved: boolean }> {
      const { dataDirectory, aside } = input.plan.replace!;
      if (existsSync(aside)) return { aside, moved: false };
      if (!existsSync(join(dataDirectory, 'PG_VERSION'))) throw failure('InvalidInput', `${dataDirectory} is not a PostgreSQL data directory (no PG_VERSION)`, `check clusters.${input.plan.cluster}.dataDirectory`);
      if (await serverRunning(location(input.plan.server))) throw failure('InvalidInput', `refusing to move ${dataDirectory} aside: its server still runs`, 'the stop-server step stops it first');
      await rename(dataDirectory, aside);
      return { aside, moved: true };
    },

    /**
     * Undo of "move-aside": whatever was recovered into the data directory stopped and removed,
     * the live data directory renamed back. Idempotent: without the aside directory there is
     * nothing to put back (never moved, or already back).
     */
    async moveDataDirectoryBack(input: { plan: PitrPlan }): Promise<{ restored: boolean }> {
      const { plan } = input;
      const { dataDirectory, aside } = plan.replace!;
      if (!existsSync(aside)) return { restored: false };
      if (existsSync(dataDirectory)) {
        await stopServer(location(plan.server), 'immediate');
        await rm(dataDirectory, { recursive: true, force: true });
      }
      await rename(aside, dataDirectory);
      await rm(plan.server.extractedMarker, { force: true });
      return { restored: true };
    },

    /** Step "report": the JSON result under pitr/<cluster>/reports/, success or failure. */
    async writePitrReport(input: { report: PitrReport }): Promise<{ key: string; location: string }> {
      const repo = repository(clusterRepositoryId(deps.config, input.report.cluster));
      const key = pitrReportKey(input.report.cluster, new Date(input.report.startedAt));
      await writeAll(repo, key, JSON.stringify({ reportVersion: 1, pgrunbookVersion: PGRUNBOOK_VERSION, ...input.report }, null, 2) + '\n');
      deps.metrics?.pitrFinished(input.report);
      return { key, location: `${repo.location}/${key}` };
    },
  };
}

export type PitrActivities = ReturnType<typeof createPitrActivities>;
