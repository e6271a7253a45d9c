/**
 * Benchmark (not a test): pgrunbook's point-in-time recovery against Debian's pgBackRest (2.45) on
 * the same PostgreSQL 15 cluster, data and WAL, in one run. Three ratios, pgrunbook / pgBackRest
 * (times: lower is better):
 *
 *   1. wal-push: --segments real 16 MiB WAL segments (a write workload on the archiving cluster,
 *      copied out of pg_wal) pushed one process per segment, exactly as archive_command runs
 *      (`/bin/sh -c` as the server user, the data directory as cwd): `pgrunbook wal-push` vs
 *      `pgbackrest archive-push` (synchronous, the default), each to its own local repository,
 *      zstd level 3 on both, no encryption. Interleaved per segment, never concurrent. Also the
 *      fixed cost of one invocation and of re-pushing a segment the archive already has.
 *  1b. asynchronous archiving: the same segments laid out as PostgreSQL leaves a backlog (a
 *      directory shaped like a data directory: global/pg_control, pg_wal/<name> and
 *      pg_wal/archive_status/<name>.ready), archived one call per segment in name order with the
 *      data directory as cwd and pg_wal/<name> as argument, .ready renamed to .done after each
 *      success, as the archiver does: `pgrunbook wal-push` with clusters.<id>.wal.pushAhead 8 vs
 *      `pgbackrest archive-push` with archive-async=y and process-max = the number of CPUs. Each
 *      into a fresh repository, checked afterwards to hold every segment exactly once. Also the
 *      time of a call whose segment was already archived ahead (pgrunbook's fast path).
 *   2. base backup: the basebackupCluster workflow through a real Temporal dev server and a
 *      separate worker process (start to result) vs `pgbackrest backup --type=full`.
 *   3. time to recover to a target time T (seed 001 scenario 1: orders written, T, all deleted,
 *      more written): from start until the recovered server, promoted, answers queries at T —
 *      pointInTimeRestore (mode new, promoted through its approve update as soon as it waits for
 *      the decision) vs `pgbackrest restore --type=time --target=T --target-action=promote` +
 *      starting the server + waiting until it leaves recovery. Both recovered servers are then
 *      checked to hold exactly the orders written before T, and their logs say how many WAL
 *      segments each fetched through its restore_command (wal-fetch / archive-get).
 *
 * For parts 2 and 3 the server archives every segment with both tools (archive_command runs
 * `pgrunbook wal-push` then `pgbackrest archive-push`), so both archives hold the same WAL and
 * both backups are taken of the same data; archiving is off (/bin/true) while part 1 measures.
 *
 *   npm run bench:pitr [-- --segments 64] [--rows 350000] [--replay-segments 16] [--json] [--keep]
 *
 * Prints tables and the ratios, then one `BENCH_RESULT {...}` line (with --json: only the JSON
 * document on stdout, everything else on stderr). A pgrunbook piece that is not there or fails is
 * reported as "not measured: <why>", never as a number. Linux only (/proc), PostgreSQL 15.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { hrtime } from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { stringify } from 'yaml';
import { startBackup } from '../client/backup.js';
import { table } from '../client/output.js';
import { Config } from '../config/schema.js';
import { projectRoot } from '../stack/binaries.js';
import { freePort } from '../stack/ports.js';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import type { PitrResult } from '../workflows/point-in-time-restore.js';
import { statusQuery, type RunbookStatus } from '../workflows/runbook.js';
import { log, mb, positiveFlag, reportBenchFailure, resultOrStuck, round, runBench, secondsSince, startBenchStack, teardownStack, warnAboutNoise, stayUpIfKept } from './common.js';
import { CpuAccounting, describeCpu, type CpuUse } from './cpu.js';
import { configurePgbackrest, ensurePgbackrest, STANZA, type PgBackRest } from './pitr-pgbackrest.js';
import {
  archivedFiles,
  archivedNames,
  enableArchiving,
  generateSegments,
  incident,
  incidentRows,
  layOutPgWal,
  loadLedger,
  markArchived,
  removeTree,
  restoredSegments,
  runAsServer,
  runServerTool,
  SEGMENT_BYTES,
  serverOwnedDir,
  setArchiveCommand,
  startRecoveredServer,
  switchAndWaitArchived,
  treeBytes,
  updateWorkload,
  waitPromoted,
  type Incident,
} from './pitr-source.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

const TASK_QUEUE = 'bench-pitr';
/** The cluster id in pgrunbook's config for parts 2-3, and for part 1's separate archive. */
const CLUSTER = 'bench';
const WAL_BENCH_CLUSTER = 'walbench';
/** Part 1b's pgrunbook archive: clusters.<id>.wal.pushAhead = PUSH_AHEAD. */
const WAL_AHEAD_CLUSTER = 'walbench-ahead';
const PUSH_AHEAD = 8;
const DATABASE = 'bench';
/** Repeats of the fixed-cost probes (missing segment, duplicate push); the median is reported. */
const PROBES = 5;

// ---------------------------------------------------------------------------------------------
// Results

type NotMeasured = { measured: false; why: string };

interface WalPushSide {
  measured: true;
  segments: number;
  seconds: number;
  segmentsPerSecond: number;
  msPerSegment: { median: number; p90: number; max: number };
  archivedBytes: number;
  /** archived / original bytes. */
  compressionRatio: number;
  /** Median of PROBES invocations that fail at once (a segment that does not exist): start-up, config, argument checks. */
  startupMs: number;
  /** Median of PROBES re-pushes of a segment the archive already holds with the same content (they succeed). */
  duplicatePushMs: number;
  cpu: CpuUse;
}

/** Part 1b: a pg_wal backlog archived one call per segment, in name order, as PostgreSQL's archiver does. */
interface AsyncPushSide {
  measured: true;
  segments: number;
  /** From the first call until the last one returned (every segment archived). */
  seconds: number;
  segmentsPerSecond: number;
  archivedBytes: number;
  compressionRatio: number;
  /** Calls whose segment was already archived ahead (pgrunbook: a push-ahead marker; pgBackRest: a .ok in its spool) and the median of their times. */
  acknowledged: { calls: number; medianMs: number | null };
  /** The other calls (they archive their segment, and start archiving those after it). */
  pushing: { calls: number; medianMs: number | null; maxMs: number | null };
  cpu: CpuUse;
}

interface BasebackupSide {
  measured: true;
  seconds: number;
  storedBytes: number;
  /** pgrunbook: the workflow's steps (seconds); pgBackRest: none. */
  steps: Record<string, number>;
  id: string;
  cpu: CpuUse;
}

interface RecoverySide {
  measured: true;
  /** From start until the promoted server answered a query. */
  seconds: number;
  /** pgrunbook: until the workflow waited for the promote/discard decision (recovered, verified, read-only at T). */
  readySeconds: number | null;
  phases: Record<string, number>;
  /** WAL segments the recovered server fetched with restore_command (its log). */
  segmentsFetched: number;
  rows: { before: number; after: number };
  correct: boolean;
  cpu: CpuUse;
}

interface Comparison<T> {
  pgrunbook: T | NotMeasured;
  pgbackrest: T | NotMeasured;
  ratio: number | null;
  why: string | null;
}

function compare<T extends { measured: true }>(pgrunbook: T | NotMeasured, pgbackrest: T | NotMeasured, seconds: (side: T) => number): Comparison<T> {
  if (!pgrunbook.measured) return { pgrunbook, pgbackrest, ratio: null, why: `pgrunbook: ${pgrunbook.why}` };
  if (!pgbackrest.measured) return { pgrunbook, pgbackrest, ratio: null, why: `pgBackRest: ${pgbackrest.why}` };
  return { pgrunbook, pgbackrest, ratio: round(seconds(pgrunbook) / seconds(pgbackrest), 3), why: null };
}

const notMeasured = (why: string): NotMeasured => ({ measured: false, why: why.split('\n').slice(0, 6).join(' | ') });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const percentile = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)]!;

// ---------------------------------------------------------------------------------------------
// The run's shared state

interface Harness {
  cluster: PostgresCluster;
  client: Client;
  config: Config;
  configPath: string;
  worker: WorkerProcess;
  cpu: CpuAccounting;
  workDir: string;
  /** `node dist/client/main.js` as the server runs it. */
  pgrunbookCommand: string;
  addCleanup: (name: string, run: () => Promise<void>) => void;
}

/** Which pgrunbook pieces this build has; the reason when one is missing. */
interface Pieces {
  walPush: string | null;
  basebackup: string | null;
  pitr: string | null;
}

async function findPieces(h: Harness, probeSegment: string): Promise<Pieces> {
  const workflows = (await import('../workflows/index.js')) as Record<string, unknown>;
  const missingWorkflow = (name: string): string | null => (typeof workflows[name] === 'function' ? null : `this build has no ${name} workflow (workflows/index.ts does not export it)`);
  // wal-push: one real push of a segment into a scratch archive; whatever it prints when it cannot is the reason.
  const scratch = `${h.pgrunbookCommand} wal-push ${probeSegment} --cluster ${WAL_BENCH_CLUSTER}-probe --config ${h.configPath}`;
  const probe = await runAsServer(scratch, h.cluster.dataDir);
  const walPush = probe.code === 0 ? null : `wal-push exits ${probe.code}: ${probe.stderr.trim() || '(no output)'}`;
  return { walPush, basebackup: missingWorkflow('basebackupCluster'), pitr: missingWorkflow('pointInTimeRestore') };
}

// ---------------------------------------------------------------------------------------------
// Part 1: wal-push throughput

async function measureWalPush(h: Harness, segments: string[], pieces: Pieces, pgbackrest: PgBackRest, repos: { pgrunbook: string; pgbackrest: string }): Promise<Comparison<WalPushSide>> {
  const commands = {
    pgbackrest: (path: string) => `${pgbackrest.command} archive-push ${path}`,
    pgrunbook: (path: string) => `${h.pgrunbookCommand} wal-push ${path} --cluster ${WAL_BENCH_CLUSTER} --config ${h.configPath}`,
  };
  const tools = (['pgbackrest', 'pgrunbook'] as const).filter((t) => t === 'pgbackrest' || pieces.walPush === null);
  const times: Record<string, number[]> = { pgbackrest: [], pgrunbook: [] };
  const failures: Record<string, string | undefined> = {};
  const cpuUse: Record<string, CpuUse[]> = { pgbackrest: [], pgrunbook: [] };
  log(`part 1: pushing ${segments.length} segments with ${tools.join(' and ')}, interleaved, one process per segment ...`);
  for (const [i, segment] of segments.entries()) {
    // Alternate who goes first, so neither always finds the segment in the page cache first.
    for (const tool of i % 2 === 0 ? tools : [...tools].reverse()) {
      if (failures[tool]) continue;
      const before = h.cpu.read();
      const run = await runAsServer(commands[tool](segment), h.cluster.dataDir);
      cpuUse[tool]!.push(CpuAccounting.since(before, h.cpu.read(), run.seconds));
      if (run.code !== 0) failures[tool] = `${tool === 'pgrunbook' ? 'wal-push' : 'archive-push'} of segment ${i + 1} exited ${run.code}: ${run.stderr.trim()}`;
      times[tool]!.push(run.seconds);
    }
  }
  const side = async (tool: 'pgbackrest' | 'pgrunbook', repo: string): Promise<WalPushSide | NotMeasured> => {
    if (tool === 'pgrunbook' && pieces.walPush) return notMeasured(pieces.walPush);
    if (failures[tool]) return notMeasured(failures[tool]);
    const archived = archivedFiles(repo);
    if (archived.files < segments.length) return notMeasured(`only ${archived.files} of ${segments.length} segments are in ${repo} after the pushes`);
    // Fixed costs: an invocation that fails at once, and a duplicate push that succeeds.
    const missing = join(h.workDir, 'segments', '000000010000FFFF000000FF');
    const startup: number[] = [];
    const duplicate: number[] = [];
    for (let i = 0; i < PROBES; i++) {
      const fail = await runAsServer(commands[tool](missing), h.cluster.dataDir);
      if (fail.code === 0) return notMeasured(`pushing a segment that does not exist succeeded (${tool})`);
      startup.push(fail.seconds);
      const again = await runAsServer(commands[tool](segments[0]!), h.cluster.dataDir);
      if (again.code !== 0) return notMeasured(`re-pushing an archived segment failed: ${again.stderr.trim()}`);
      duplicate.push(again.seconds);
    }
    const seconds = times[tool]!.reduce((a, b) => a + b, 0);
    const ms = times[tool]!.map((s) => s * 1000);
    const cpuTotal = sumCpu(cpuUse[tool]!, seconds);
    return {
      measured: true,
      segments: segments.length,
      seconds: round(seconds),
      segmentsPerSecond: round(segments.length / seconds, 1),
      msPerSegment: { median: round(median(ms), 1), p90: round(percentile(ms, 0.9), 1), max: round(Math.max(...ms), 1) },
      archivedBytes: archived.bytes,
      compressionRatio: round(archived.bytes / (segments.length * SEGMENT_BYTES), 3),
      startupMs: round(median(startup) * 1000, 1),
      duplicatePushMs: round(median(duplicate) * 1000, 1),
      cpu: cpuTotal,
    };
  };
  const pgbackrestSide = await side('pgbackrest', repos.pgbackrest);
  const pgrunbookSide = await side('pgrunbook', repos.pgrunbook);
  return compare(pgrunbookSide, pgbackrestSide, (s) => s.seconds / s.segments);
}

/** The CPU use of several short runs, added up (utilization over their total wall time). */
function sumCpu(runs: CpuUse[], wallSeconds: number): CpuUse {
  const sum = (k: keyof CpuUse): number => round(runs.reduce((a, r) => a + r[k], 0), 1);
  const machineBusy = sum('machineBusy');
  return {
    machineBusy,
    utilization: round(machineBusy / (wallSeconds * cpus().length), 2),
    postgres: sum('postgres'),
    tools: sum('tools'),
    worker: sum('worker'),
    weed: sum('weed'),
    temporal: sum('temporal'),
    bench: sum('bench'),
    other: sum('other'),
  };
}

// ---------------------------------------------------------------------------------------------
// Part 1b: asynchronous archiving of a pg_wal backlog

interface AsyncArchiver {
  /** The data directory the calls run in: its pg_wal holds the backlog. */
  dataDir: string;
  repo: string;
  command: (name: string) => string;
  /** Whether `name` was archived ahead before PostgreSQL asks for it. */
  doneAhead: (name: string) => boolean;
}

/**
 * Calls the archiver's command once per segment in name order with cwd = the data directory and
 * argument pg_wal/<name>, renaming .ready to .done after each success, exactly as PostgreSQL's
 * archiver does with a backlog. Every segment must end up in the (fresh) repository exactly once.
 */
async function archiveBacklog(h: Harness, tool: string, archiver: AsyncArchiver, names: string[]): Promise<AsyncPushSide | NotMeasured> {
  if (archivedNames(archiver.repo).size !== 0) return notMeasured(`${tool}: its repository ${archiver.repo} is not empty before the run`);
  const acknowledged: number[] = [];
  const pushing: number[] = [];
  const cpuBefore = h.cpu.read();
  const start = hrtime.bigint();
  for (const [i, name] of names.entries()) {
    const ahead = archiver.doneAhead(name);
    const run = await runAsServer(archiver.command(name), archiver.dataDir);
    if (run.code !== 0) return notMeasured(`${tool}: the call for segment ${i + 1} (${name}) exited ${run.code}: ${run.stderr.trim()}`);
    markArchived(archiver.dataDir, name);
    (ahead ? acknowledged : pushing).push(run.seconds * 1000);
  }
  const seconds = secondsSince(start);
  const cpu = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
  const stored = archivedNames(archiver.repo);
  const problems = [
    ...names.filter((name) => !stored.has(name)).map((name) => `${name} missing`),
    ...[...stored].filter(([name, copies]) => copies !== 1 || !names.includes(name)).map(([name, copies]) => `${name} stored ${copies} times${names.includes(name) ? '' : ' (not in the backlog)'}`),
  ];
  if (problems.length > 0) {
    const why = `${tool}: the repository does not hold each of the ${names.length} segments exactly once: ${problems.slice(0, 5).join(', ')}${problems.length > 5 ? `, ... (${problems.length} problems)` : ''}`;
    process.stderr.write(`bench:pitr: ARCHIVE CHECK FAILED: ${why}\n`);
    return notMeasured(why);
  }
  const bytes = archivedFiles(archiver.repo).bytes;
  return {
    measured: true,
    segments: names.length,
    seconds: round(seconds),
    segmentsPerSecond: round(names.length / seconds, 1),
    archivedBytes: bytes,
    compressionRatio: round(bytes / (names.length * SEGMENT_BYTES), 3),
    acknowledged: { calls: acknowledged.length, medianMs: acknowledged.length ? round(median(acknowledged), 1) : null },
    pushing: { calls: pushing.length, medianMs: pushing.length ? round(median(pushing), 1) : null, maxMs: pushing.length ? round(Math.max(...pushing), 1) : null },
    cpu,
  };
}

/** Part 1b: pgrunbook wal-push with push-ahead vs pgBackRest archive-push with archive-async=y, each on its own copy of the backlog. */
async function measureAsyncPush(h: Harness, segments: string[], pieces: Pieces, pgrunbookRepo: string): Promise<Comparison<AsyncPushSide>> {
  const base = serverOwnedDir(join(h.workDir, 'async'), 0o755);
  const pgbackrestData = join(base, 'pgbackrest-data');
  const names = layOutPgWal(pgbackrestData, h.cluster.dataDir, segments);
  const processMax = cpus().length;
  const pgbackrest = configurePgbackrest(h.cluster, join(base, 'pgbackrest'), { pgPath: pgbackrestData, processMax });
  log(`part 1b: a backlog of ${names.length} .ready segments in pg_wal, one call per segment in name order: pgbackrest archive-async (process-max=${processMax}), then pgrunbook wal-push (pushAhead ${PUSH_AHEAD}) ...`);
  let pgbackrestSide: AsyncPushSide | NotMeasured;
  try {
    // stanza-create checks that pg1-path is where the server runs.
    await pgbackrest.run(['stanza-create', `--pg1-path=${h.cluster.dataDir}`]);
    pgbackrestSide = await archiveBacklog(h, 'pgbackrest archive-async', {
      dataDir: pgbackrestData,
      repo: pgbackrest.repoPath,
      command: (name) => `${pgbackrest.command} archive-push pg_wal/${name}`,
      doneAhead: (name) => existsSync(join(pgbackrest.spoolPath, 'archive', STANZA, 'out', `${name}.ok`)),
    }, names);
  } catch (error) {
    pgbackrestSide = notMeasured(`pgbackrest archive-async: ${(error as Error).message}`);
  }
  await waitForBackgroundArchiver(pgbackrest);
  removeTree(pgbackrestData);
  let pgrunbookSide: AsyncPushSide | NotMeasured;
  if (pieces.walPush) {
    pgrunbookSide = notMeasured(pieces.walPush);
  } else {
    const pgrunbookData = join(base, 'pgrunbook-data');
    layOutPgWal(pgrunbookData, h.cluster.dataDir, segments);
    pgrunbookSide = await archiveBacklog(h, 'pgrunbook wal-push (push-ahead)', {
      dataDir: pgrunbookData,
      repo: pgrunbookRepo,
      command: (name) => `${h.pgrunbookCommand} wal-push pg_wal/${name} --cluster ${WAL_AHEAD_CLUSTER} --config ${h.configPath}`,
      doneAhead: (name) => existsSync(join(pgrunbookData, 'pg_wal', '.pgrunbook-pushed', name)),
    }, names);
    removeTree(pgrunbookData);
  }
  return compare(pgrunbookSide, pgbackrestSide, (s) => s.seconds / s.segments);
}

/**
 * pgBackRest's background archive-push process exits once nothing is .ready; wait until it has
 * released its lock (flock on <lock-path>/<stanza>-archive.lock), at most 30 s, so it adds nothing
 * to the figures that follow.
 */
async function waitForBackgroundArchiver(pgbackrest: PgBackRest): Promise<void> {
  const lock = join(dirname(pgbackrest.configPath), 'lock', `${STANZA}-archive.lock`);
  const held = (): boolean => existsSync(lock) && spawnSync('flock', ['-n', lock, 'true']).status !== 0;
  for (let i = 0; i < 300 && held(); i++) await sleep(100);
  if (held()) log(`  note: pgBackRest's background archive-push still holds ${lock} after 30 s`);
}

// ---------------------------------------------------------------------------------------------
// Workflows

/** Failed steps and their errors, from the status query. */
function describeSteps(status: RunbookStatus | undefined): string {
  if (!status) return '';
  return `; steps: ${status.finished.map((s) => `${s.step} ${s.outcome}${s.error ? ` (${s.error})` : ''}`).join(', ') || '-'}`;
}


const stepSeconds = (status: RunbookStatus): Record<string, number> => Object.fromEntries(status.finished.map((s) => [s.step, round(s.durationMs / 1000)]));

// ---------------------------------------------------------------------------------------------
// Part 2: base backup

async function pgrunbookBasebackup(h: Harness, timeoutMs: number): Promise<BasebackupSide | NotMeasured> {
  const { startBasebackup } = await import('../client/commands/basebackup.js');
  const cpuBefore = h.cpu.read();
  const start = hrtime.bigint();
  try {
    const handle = await startBasebackup(h.client, h.config, { cluster: CLUSTER, requestedBy: 'bench:pitr' });
    const result = await resultOrStuck<{ backupId: string; size: number }>(handle, 'basebackupCluster', timeoutMs, describeSteps);
    const seconds = secondsSince(start);
    const cpu = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
    return { measured: true, seconds: round(seconds), storedBytes: result.size, steps: stepSeconds(await handle.query(statusQuery)), id: result.backupId, cpu };
  } catch (error) {
    return notMeasured(`basebackupCluster failed: ${(error as Error).message}`);
  }
}

async function pgbackrestBasebackup(h: Harness, pgbackrest: PgBackRest): Promise<BasebackupSide | NotMeasured> {
  const cpuBefore = h.cpu.read();
  const start = hrtime.bigint();
  try {
    await pgbackrest.run(['backup', '--type=full']);
  } catch (error) {
    return notMeasured(`pgbackrest backup failed: ${(error as Error).message}`);
  }
  const seconds = secondsSince(start);
  const cpu = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
  const info = JSON.parse(await pgbackrest.run(['info', '--output=json'])) as { backup: { label: string; info: { repository: { delta: number } } }[] }[];
  const backup = info[0]?.backup.at(-1);
  return { measured: true, seconds: round(seconds), storedBytes: backup?.info.repository.delta ?? treeBytes(join(pgbackrest.repoPath, 'backup')), steps: {}, id: backup?.label ?? '?', cpu };
}

// ---------------------------------------------------------------------------------------------
// Part 3: time to recover to a target

async function pgbackrestRecovery(h: Harness, pgbackrest: PgBackRest, target: Incident): Promise<RecoverySide | NotMeasured> {
  const base = serverOwnedDir(join(h.workDir, 'pgbackrest-recovered'), 0o755);
  const dataDir = serverOwnedDir(join(base, 'data'), 0o700);
  const logFile = join(base, 'server.log');
  const port = await freePort();
  let server: Awaited<ReturnType<typeof startRecoveredServer>> | undefined;
  h.addCleanup('pgBackRest recovered server', async () => {
    await server?.stop();
    removeTree(base);
  });
  const psqlEnv = { ...h.cluster.env(), PGPORT: String(port) };
  const cpuBefore = h.cpu.read();
  const start = hrtime.bigint();
  try {
    await pgbackrest.run(['restore', `--pg1-path=${dataDir}`, '--type=time', `--target=${target.targetTime}`, '--target-action=promote', '--archive-mode=off']);
    const restored = secondsSince(start);
    server = await startRecoveredServer(h.cluster.binDir, dataDir, port, base, logFile);
    const started = secondsSince(start);
    await waitPromoted(psqlEnv, h.cluster.binDir, 30 * 60_000, logFile);
    const seconds = secondsSince(start);
    const cpu = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
    const rows = await incidentRows(psqlEnv, h.cluster.binDir, DATABASE);
    await server.stop();
    removeTree(dataDir);
    return {
      measured: true,
      seconds: round(seconds),
      readySeconds: null,
      segmentsFetched: restoredSegments(logFile),
      phases: { restore: round(restored), 'start (pg_ctl -w)': round(started - restored), 'recover + promote': round(seconds - started) },
      rows,
      correct: rows.before === target.keptRows && rows.after === 0,
      cpu,
    };
  } catch (error) {
    return notMeasured(`pgbackrest restore to ${target.targetTime} failed: ${(error as Error).message}`);
  }
}

/**
 * pointInTimeRestore in mode new to T, timed from start until the workflow has promoted the
 * recovered server and a client sees it out of recovery. The promote decision is sent the moment
 * the workflow waits for it (status query polled every 100 ms), so no person's think time counts;
 * "ready" is that moment: recovered to T, paused there, verified, read-only.
 */
async function pgrunbookRecovery(h: Harness, target: Incident, timeoutMs: number): Promise<RecoverySide | NotMeasured> {
  const { startPitr } = await import('../client/pitr.js');
  const { approveUpdate } = await import('../workflows/restore-messages.js');
  const cpuBefore = h.cpu.read();
  const start = hrtime.bigint();
  let handle: Awaited<ReturnType<typeof startPitr>> | undefined;
  try {
    handle = await startPitr(h.client, h.config, { cluster: CLUSTER, target: { time: target.targetTime }, mode: 'new', requestedBy: 'bench:pitr' });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const status = await handle.query(statusQuery);
      if (status.currentStep === 'decide' && status.waitingFor) break;
      if (status.state !== 'running') return notMeasured(`pointInTimeRestore ended (${status.state}) before waiting for the promote decision${describeSteps(status)}`);
      if (Date.now() > deadline) {
        await handle.terminate('bench: not recovered in time').catch(() => undefined);
        return notMeasured(`pointInTimeRestore did not wait for the promote decision within ${timeoutMs / 1000} s (terminated); current step ${status.currentStep ?? '?'}${describeSteps(status)}`);
      }
      await sleep(100);
    }
    const ready = secondsSince(start);
    await handle.executeUpdate(approveUpdate, { args: [{ by: 'bench:pitr', reason: 'benchmark: promote at once' }] });
    const result = await resultOrStuck<PitrResult>(handle, 'pointInTimeRestore', timeoutMs, describeSteps);
    if (result.outcome !== 'promoted' || result.port === null || result.socketDir === null) return notMeasured(`pointInTimeRestore ended ${result.outcome} without a port and socket to connect to`);
    const psqlEnv = { ...h.cluster.env(), PGHOST: result.socketDir, PGPORT: String(result.port) };
    await waitPromoted(psqlEnv, h.cluster.binDir, 60_000, result.dataDir);
    const seconds = secondsSince(start);
    const cpu = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
    const rows = await incidentRows(psqlEnv, h.cluster.binDir, DATABASE);
    const status = await handle.query(statusQuery);
    await stopServersUnder(h.cluster.binDir, join(h.workDir, 'pgrunbook-recovered'));
    // Mode new keeps the server's log beside its data directory.
    const segmentsFetched = restoredSegments(join(dirname(result.dataDir), 'server.log'));
    return { measured: true, seconds: round(seconds), readySeconds: round(ready), phases: stepSeconds(status), segmentsFetched, rows, correct: rows.before === target.keptRows && rows.after === 0, cpu };
  } catch (error) {
    const status = handle ? await handle.query(statusQuery).catch(() => undefined) : undefined;
    return notMeasured(`pointInTimeRestore to ${target.targetTime} failed: ${(error as Error).message}${describeSteps(status)}`);
  }
}

/** Stops every PostgreSQL server whose data directory lies under `dir` (a recovered cluster left running). */
async function stopServersUnder(binDir: string, dir: string): Promise<void> {
  const dataDirs: string[] = [];
  const walk = (d: string, depth: number): void => {
    if (depth > 3 || !existsSync(d)) return;
    if (existsSync(join(d, 'postmaster.pid'))) dataDirs.push(d);
    for (const entry of readdirSync(d, { withFileTypes: true })) if (entry.isDirectory()) walk(join(d, entry.name), depth + 1);
  };
  walk(dir, 0);
  for (const dataDir of dataDirs) await runServerTool(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], { cwd: dir }).catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------
// Report

interface Summary {
  segments: number;
  rows: number;
  replaySegments: number;
  databaseBytes: number;
  cpus: number;
  pgbackrestVersion: string;
  archiveCommand: string;
  target: Incident;
  walPush: Comparison<WalPushSide>;
  asyncPush: Comparison<AsyncPushSide>;
  /** Median `node -e 0` run as archive_command runs: the floor under wal-push's start-up. */
  nodeStartupMs: number;
  basebackup: Comparison<BasebackupSide>;
  recovery: Comparison<RecoverySide>;
}

function report(s: Summary): void {
  const f = (n: number | null | undefined, d = 2): string => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));
  const out = (text: string): boolean => process.stdout.write(text);
  const cell = <T,>(side: T | NotMeasured, show: (t: T) => string): string => ((side as NotMeasured).measured === false ? 'not measured' : show(side as T));

  out(`\n== pgrunbook vs pgBackRest ${s.pgbackrestVersion.replace(/^pgBackRest /, '')}: point-in-time recovery (${s.cpus} CPUs) ==\n`);
  out(`data: ${mb(s.databaseBytes)} MB cluster (${s.rows.toLocaleString('en')} ledger rows); zstd level 3 on both, no encryption, local repositories\n`);

  out(`\n-- 1. WAL push: ${s.segments} segments of 16 MiB, one process per segment as archive_command runs it --\n`);
  const w = s.walPush;
  out(
    table(
      ['tool', 'total s', 'segments/s', 'ms/segment median', 'p90', 'max', 'archived MB', 'stored/original', 'startup ms', 're-push ms', 'cpu s'],
      (['pgrunbook', 'pgbackrest'] as const).map((tool) => {
        const side = w[tool];
        const name = tool === 'pgrunbook' ? 'pgrunbook wal-push' : 'pgbackrest archive-push';
        if (!side.measured) return [name, 'not measured'];
        return [name, f(side.seconds), f(side.segmentsPerSecond, 1), f(side.msPerSegment.median, 1), f(side.msPerSegment.p90, 1), f(side.msPerSegment.max, 1), f(mb(side.archivedBytes), 1), f(side.compressionRatio, 3), f(side.startupMs, 1), f(side.duplicatePushMs, 1), f(side.cpu.machineBusy, 1)];
      }),
    ) + '\n',
  );
  out(`startup: an invocation on a segment that does not exist (fails at once: process start, config, argument checks); re-push: a segment the archive already holds; \`node -e 0\` alone: ${f(s.nodeStartupMs, 1)} ms\n`);

  const a = s.asyncPush;
  out(`\n-- 1b. asynchronous archiving: a backlog of ${s.segments} .ready segments in pg_wal, one call per segment in name order as PostgreSQL's archiver makes them (cwd = data directory, pg_wal/<name>, .ready -> .done) --\n`);
  out(
    table(
      ['tool', 'total s', 'segments/s', 'archived MB', 'stored/original', 'calls already done: n', 'median ms', 'calls that pushed: n', 'median ms', 'max ms', 'machine cpu s'],
      (['pgrunbook', 'pgbackrest'] as const).map((tool) => {
        const side = a[tool];
        const name = tool === 'pgrunbook' ? `pgrunbook wal-push, pushAhead ${PUSH_AHEAD}` : `pgbackrest archive-push, archive-async (process-max ${s.cpus})`;
        if (!side.measured) return [name, `not measured: ${side.why}`];
        return [name, f(side.seconds), f(side.segmentsPerSecond, 1), f(mb(side.archivedBytes), 1), f(side.compressionRatio, 3), String(side.acknowledged.calls), f(side.acknowledged.medianMs, 1), String(side.pushing.calls), f(side.pushing.medianMs, 1), f(side.pushing.maxMs, 1), f(side.cpu.machineBusy, 1)];
      }),
    ) + '\n',
  );
  out(`calls already done: their segment was archived ahead by an earlier call (pgrunbook: the fast path, a marker in pg_wal/.pgrunbook-pushed; pgBackRest: a .ok in its spool)${a.pgrunbook.measured && a.pgbackrest.measured ? '; each repository was fresh and holds every segment exactly once' : ''}.\n`);
  out('pgBackRest\'s background process is detached from the call that starts it, so its CPU shows as "other processes": compare machine cpu s.\n');

  out('\n-- 2. base backup (full, of the whole cluster) --\n');
  const b = s.basebackup;
  out(
    table(
      ['tool', 'seconds', 'stored MB', 'steps', 'cpu'],
      [
        ['pgrunbook basebackupCluster (workflow, start to result)', cell(b.pgrunbook, (r) => f(r.seconds)), cell(b.pgrunbook, (r) => f(mb(r.storedBytes), 1)), cell(b.pgrunbook, (r) => Object.entries(r.steps).map(([k, v]) => `${k} ${f(v)}`).join(', ')), cell(b.pgrunbook, (r) => describeCpu(r.cpu))],
        ['pgbackrest backup --type=full', cell(b.pgbackrest, (r) => f(r.seconds)), cell(b.pgbackrest, (r) => f(mb(r.storedBytes), 1)), '', cell(b.pgbackrest, (r) => describeCpu(r.cpu))],
      ],
    ) + '\n',
  );

  out(`\n-- 3. recover to a target time (T = ${s.target.targetTime}; ${s.replaySegments} segments of WAL written between the backups and T) --\n`);
  const r = s.recovery;
  out(
    table(
      ['tool', 'seconds to promoted', 'ready at T (awaiting decision)', 'segments fetched', 'phases', `orders before/after T (want ${s.target.keptRows}/0)`],
      [
        ['pgrunbook pointInTimeRestore (mode new, then approve = promote)', cell(r.pgrunbook, (x) => f(x.seconds)), cell(r.pgrunbook, (x) => f(x.readySeconds)), cell(r.pgrunbook, (x) => String(x.segmentsFetched)), cell(r.pgrunbook, (x) => Object.entries(x.phases).map(([k, v]) => `${k} ${f(v)}`).join(', ')), cell(r.pgrunbook, (x) => `${x.rows.before}/${x.rows.after}${x.correct ? '' : ' WRONG'}`)],
        ['pgbackrest restore --type=time --target-action=promote + start', cell(r.pgbackrest, (x) => f(x.seconds)), '-', cell(r.pgbackrest, (x) => String(x.segmentsFetched)), cell(r.pgbackrest, (x) => Object.entries(x.phases).map(([k, v]) => `${k} ${f(v)}`).join(', ')), cell(r.pgbackrest, (x) => `${x.rows.before}/${x.rows.after}${x.correct ? '' : ' WRONG'}`)],
      ],
    ) + '\n',
  );
  out('pgrunbook\'s base backup is taken first, so its recovery also replays the WAL written during pgBackRest\'s backup (hence a segment or two more fetched);\n');
  out('pgBackRest recovers first: its server does not archive (--archive-mode=off), so it cannot add a timeline to the archives the other one reads.\n');
  out(`\narchive_command during parts 2-3 (both archives get every segment): ${s.archiveCommand}\n`);

  const noisy: { seconds: number; cpu: CpuUse }[] = [];
  for (const side of [w.pgrunbook, w.pgbackrest, b.pgrunbook, b.pgbackrest]) if (side.measured) noisy.push({ seconds: side.seconds, cpu: side.cpu });
  warnAboutNoise(noisy);

  out('\n-- ratios: pgrunbook / pgBackRest (time; lower is better) --\n');
  const RATIO_NAME = 46;
  const line = (name: string, c: Comparison<unknown>, detail: string): boolean => out(`${name.padEnd(RATIO_NAME)} ${c.ratio !== null ? `${f(c.ratio, 3)}  (${detail})` : `not measured: ${c.why}`}\n`);
  const sides = <T extends { measured: true }>(c: Comparison<T>, show: (t: T) => string): string => (c.pgrunbook.measured && c.pgbackrest.measured ? `${show(c.pgrunbook)} vs ${show(c.pgbackrest)}` : '');
  line('1. wal-push time per segment', w, sides(w, (x) => `${f(x.seconds / x.segments * 1000, 1)} ms = ${f(x.segmentsPerSecond, 1)} segments/s`));
  line('1b. wal-push with push-ahead vs archive-async', a, sides(a, (x) => `${f(x.seconds / x.segments * 1000, 1)} ms = ${f(x.segmentsPerSecond, 1)} segments/s, a call already done ${f(x.acknowledged.medianMs, 1)} ms`));
  line('2. base backup time', b, sides(b, (x) => `${f(x.seconds)} s`));
  line('3. time to recover to T', r, sides(r, (x) => `${f(x.seconds)} s`));
  // Diagnostics: the same comparisons without what only pgrunbook does (read back + pg_verifybackup; promote on request).
  if (b.ratio !== null && b.pgrunbook.measured && b.pgbackrest.measured && b.pgrunbook.steps.basebackup !== undefined) {
    out(`${'   (pg_basebackup step alone)'.padEnd(RATIO_NAME)} ${f(b.pgrunbook.steps.basebackup / b.pgbackrest.seconds, 3)}  (${f(b.pgrunbook.steps.basebackup)} s; the verify step, ${f(b.pgrunbook.steps.verify)} s, reads the backup back and runs pg_verifybackup)\n`);
  }
  if (r.ratio !== null && r.pgrunbook.measured && r.pgbackrest.measured && r.pgrunbook.readySeconds !== null) {
    out(`${'   (ready at T, before promote)'.padEnd(RATIO_NAME)} ${f(r.pgrunbook.readySeconds / r.pgbackrest.seconds, 3)}  (${f(r.pgrunbook.readySeconds)} s: recovered, paused at T and verified, read-only)\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      segments: { type: 'string', default: '64' },
      /** Ledger rows (~0.8 kB each): 350k rows make a cluster of about 320 MB, about 200 MB stored at zstd:3. */
      rows: { type: 'string', default: '350000' },
      /** WAL written between the base backups and T, in segments: what recovery fetches and replays. */
      'replay-segments': { type: 'string', default: '16' },
      json: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench:pitr [-- --segments 64] [--rows 350000] [--replay-segments 16] [--json] [--keep]\n');
    return 0;
  }
  const segmentCount = positiveFlag('segments', values.segments, true);
  const rows = positiveFlag('rows', values.rows, true);
  const replaySegments = positiveFlag('replay-segments', values['replay-segments'], true);
  // --json: stdout carries only the result document. The Temporal CLI and other children write
  // to the fd 1 they inherit, so the benchmark runs again as a child whose fd 1 is this process's
  // stderr and whose fd 3 is this process's stdout, where the document goes.
  if (values.json && process.env[JSON_FD_ENV] !== String(JSON_FD)) return runWithJsonOnStdout();

  const { add: addCleanup, cleanup } = teardownStack();
  const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-bench-pitr-'));
  addCleanup('work directory', async () => rmSync(workDir, { recursive: true, force: true }));
  let workerLog: string | undefined;
  try {
    const pgbackrestVersion = ensurePgbackrest();
    log(`pgrunbook PITR benchmark: --segments ${segmentCount} --rows ${rows} --replay-segments ${replaySegments}; ${pgbackrestVersion}; ${cpus().length} CPUs, ${mb(totalmem())} MB RAM, work dir ${workDir}`);
    serverOwnedDir(workDir, 0o755);

    log('starting PostgreSQL and the Temporal dev server ...');
    const { cluster, temporal } = await startBenchStack(addCleanup);
    await enableArchiving(cluster);
    await cluster.sql(`CREATE DATABASE ${DATABASE}`);

    // pgrunbook's config: part 1 archives into its own repository (cluster walbench), parts 2-3
    // into `pitr` (cluster bench). Repositories belong to the server user: archive_command writes there.
    const repoDir = serverOwnedDir(join(workDir, 'pgrunbook-repo'));
    const walBenchRepoDir = serverOwnedDir(join(workDir, 'pgrunbook-walbench-repo'));
    const walAheadRepoDir = serverOwnedDir(join(workDir, 'pgrunbook-walbench-ahead-repo'));
    const probeRepoDir = serverOwnedDir(join(workDir, 'pgrunbook-probe-repo'));
    const restoreDir = serverOwnedDir(join(workDir, 'pgrunbook-recovered'));
    const fileConfig = {
      temporal: { address: temporal.address, namespace: 'default', taskQueue: TASK_QUEUE },
      repositories: {
        pitr: { type: 'local', path: repoDir },
        walbench: { type: 'local', path: walBenchRepoDir },
        [WAL_AHEAD_CLUSTER]: { type: 'local', path: walAheadRepoDir },
        probe: { type: 'local', path: probeRepoDir },
        warmup: { type: 'local', path: join(workDir, 'warmup-repo') },
      },
      databases: {
        [DATABASE]: { url: '${BENCH_DATABASE_URL}', repository: 'pitr' },
        warmup: { url: '${BENCH_WARMUP_DATABASE_URL}', repository: 'warmup' },
      },
      clusters: {
        [CLUSTER]: { database: DATABASE, repository: 'pitr', wal: { compression: 'zstd:3' }, basebackup: { compression: 'zstd:3', checkpoint: 'fast' }, restore: { dir: restoreDir } },
        [WAL_BENCH_CLUSTER]: { database: DATABASE, repository: 'walbench', wal: { compression: 'zstd:3' } },
        [WAL_AHEAD_CLUSTER]: { database: DATABASE, repository: WAL_AHEAD_CLUSTER, wal: { compression: 'zstd:3', pushAhead: PUSH_AHEAD } },
        [`${WAL_BENCH_CLUSTER}-probe`]: { database: DATABASE, repository: 'probe', wal: { compression: 'zstd:3' } },
      },
      defaults: { repository: 'pitr' },
      timeouts: { heartbeatSeconds: 30 },
      metrics: { enabled: false },
    };
    const config = Config.parse(fileConfig);
    const configPath = join(workDir, 'pgrunbook.yaml');
    writeFileSync(configPath, `# written by bench/pitr.ts\n${stringify(fileConfig)}`, { mode: 0o644 });
    const pgrunbookCommand = `${process.execPath} ${join(projectRoot, 'dist', 'client', 'main.js')}`;

    log('starting the worker process (node dist/client/main.js worker) ...');
    workerLog = join(workDir, 'worker.log');
    const workerEnv = { ...process.env, BENCH_DATABASE_URL: cluster.url(DATABASE), BENCH_WARMUP_DATABASE_URL: cluster.url('warmup') };
    const worker = await startWorkerProcess(configPath, workerEnv, workerLog, TASK_QUEUE);
    addCleanup('worker', () => worker.stop());
    const cpu = CpuAccounting.find(cluster);
    cpu.setWorker(worker.pid);
    const h: Harness = { cluster, client: temporal.client, config, configPath, worker, cpu, workDir, pgrunbookCommand, addCleanup };
    // The first workflow task loads the workflow sandbox: pay for it outside the figures.
    const warmup = await startBackup(h.client, config, { database: 'warmup', repository: 'warmup' });
    await resultOrStuck(warmup, 'warm-up backup', 120_000, describeSteps);
    log(`  worker ready (pid ${worker.pid}), warmed up with one backupDatabase`);

    log(`loading ${rows.toLocaleString('en')} ledger rows (archive_command /bin/true) ...`);
    const databaseBytes = await loadLedger(cluster, DATABASE, rows);
    log(`  cluster size ${mb(databaseBytes)} MB`);

    // Part 1 ----------------------------------------------------------------------------------
    log(`part 1: writing ${segmentCount} WAL segments and copying them aside ...`);
    const segmentDir = serverOwnedDir(join(workDir, 'segments'));
    const segments = await generateSegments(cluster, DATABASE, segmentCount, segmentDir);
    const walBenchPgbackrest = configurePgbackrest(cluster, join(workDir, 'pgbackrest-walbench'));
    await walBenchPgbackrest.run(['stanza-create']);
    const pieces = await findPieces(h, segments[0]!);
    for (const [piece, why] of Object.entries(pieces)) if (why) log(`  pgrunbook ${piece}: not available: ${why}`);
    const walPush = await measureWalPush(h, segments, pieces, walBenchPgbackrest, { pgrunbook: walBenchRepoDir, pgbackrest: walBenchPgbackrest.repoPath });
    for (const tool of ['pgrunbook', 'pgbackrest'] as const) {
      const side = walPush[tool];
      log(`  ${tool}: ${side.measured ? `${side.seconds} s, ${side.segmentsPerSecond} segments/s, median ${side.msPerSegment.median} ms, startup ${side.startupMs} ms, re-push ${side.duplicatePushMs} ms; ${describeCpu(side.cpu)}` : `not measured: ${side.why}`}`);
    }
    const asyncPush = await measureAsyncPush(h, segments, pieces, walAheadRepoDir);
    for (const tool of ['pgrunbook', 'pgbackrest'] as const) {
      const side = asyncPush[tool];
      log(`  ${tool} (async): ${side.measured ? `${side.seconds} s, ${side.segmentsPerSecond} segments/s; ${side.acknowledged.calls} calls already done (median ${side.acknowledged.medianMs} ms), ${side.pushing.calls} pushed (median ${side.pushing.medianMs} ms); ${describeCpu(side.cpu)}` : `not measured: ${side.why}`}`);
    }
    removeTree(segmentDir);
    // How much of wal-push's start-up is Node itself: `node -e 0`, run the same way.
    const nodeStartups: number[] = [];
    for (let i = 0; i < PROBES; i++) nodeStartups.push((await runAsServer(`${process.execPath} -e 0`, cluster.dataDir)).seconds);
    const nodeStartupMs = round(median(nodeStartups) * 1000, 1);

    // Parts 2 and 3: both tools archive every segment from here on --------------------------------
    const pgbackrest = configurePgbackrest(cluster, join(workDir, 'pgbackrest'));
    await pgbackrest.run(['stanza-create']);
    const pgrunbookPush = `${pgrunbookCommand} wal-push %p --cluster ${CLUSTER} --config ${configPath}`;
    const archiveCommand = pieces.walPush === null ? `${pgrunbookPush} && ${pgbackrest.command} archive-push %p` : `${pgbackrest.command} archive-push %p`;
    await setArchiveCommand(cluster, archiveCommand);
    await switchAndWaitArchived(cluster);
    await pgbackrest.run(['check']);
    log(`archive_command is now: ${archiveCommand}`);

    log('part 2: base backups ...');
    const basebackupTimeout = 15 * 60_000;
    const pgrunbookBase = pieces.walPush ? notMeasured(`its WAL is not archived (${pieces.walPush})`) : pieces.basebackup ? notMeasured(pieces.basebackup) : await pgrunbookBasebackup(h, basebackupTimeout);
    log(`  pgrunbook basebackupCluster: ${pgrunbookBase.measured ? `${pgrunbookBase.seconds} s, ${mb(pgrunbookBase.storedBytes)} MB stored; steps ${JSON.stringify(pgrunbookBase.steps)}; ${describeCpu(pgrunbookBase.cpu)}` : `not measured: ${pgrunbookBase.why}`}`);
    const pgbackrestBase = await pgbackrestBasebackup(h, pgbackrest);
    log(`  pgbackrest backup --type=full: ${pgbackrestBase.measured ? `${pgbackrestBase.seconds} s, ${mb(pgbackrestBase.storedBytes)} MB stored; ${describeCpu(pgbackrestBase.cpu)}` : `not measured: ${pgbackrestBase.why}`}`);
    const basebackup = compare(pgrunbookBase, pgbackrestBase, (x) => x.seconds);

    log(`part 3: ${replaySegments} segments of updates, then the incident ...`);
    const updated = await updateWorkload(cluster, DATABASE, rows, replaySegments);
    const target = await incident(cluster, DATABASE);
    const lastSegment = await switchAndWaitArchived(cluster);
    log(`  ${updated.toLocaleString('en')} rows updated; T = ${target.targetTime}; archived through ${lastSegment}`);
    // pgBackRest first: its recovered server does not archive, so it cannot add a timeline to the
    // archives the other recovery reads.
    const pgbackrestRecovered = await pgbackrestRecovery(h, pgbackrest, target);
    log(`  pgbackrest restore + recovery: ${pgbackrestRecovered.measured ? `${pgbackrestRecovered.seconds} s (${JSON.stringify(pgbackrestRecovered.phases)}); orders ${pgbackrestRecovered.rows.before}/${pgbackrestRecovered.rows.after}` : `not measured: ${pgbackrestRecovered.why}`}`);
    addCleanup('pgrunbook recovered server', () => stopServersUnder(cluster.binDir, restoreDir));
    const pgrunbookRecovered = pieces.walPush
      ? notMeasured(`its WAL is not archived (${pieces.walPush})`)
      : pieces.pitr
        ? notMeasured(pieces.pitr)
        : !pgrunbookBase.measured
          ? notMeasured('there is no pgrunbook base backup to recover from')
          : await pgrunbookRecovery(h, target, 15 * 60_000);
    log(`  pgrunbook pointInTimeRestore: ${pgrunbookRecovered.measured ? `${pgrunbookRecovered.seconds} s (${JSON.stringify(pgrunbookRecovered.phases)}); orders ${pgrunbookRecovered.rows.before}/${pgrunbookRecovered.rows.after}` : `not measured: ${pgrunbookRecovered.why}`}`);
    const recovery = compare(pgrunbookRecovered, pgbackrestRecovered, (x) => x.seconds);

    const summary: Summary = { segments: segmentCount, rows, replaySegments, databaseBytes, cpus: cpus().length, pgbackrestVersion, archiveCommand, target, walPush, asyncPush, nodeStartupMs, basebackup, recovery };
    if (values.json) {
      writeSync(JSON_FD, `${JSON.stringify(summary, null, 2)}\n`);
    } else {
      report(summary);
      process.stdout.write(`\nBENCH_RESULT ${JSON.stringify(summary)}\n`);
    }
    await stayUpIfKept(values.keep, `worker config ${configPath}, log ${worker.logPath}, pgBackRest ${pgbackrest.configPath}`);
    return 0;
  } catch (error) {
    reportBenchFailure(error, workerLog);
    return 1;
  } finally {
    log('tearing down ...');
    await cleanup();
  }
}

const JSON_FD = 3;
const JSON_FD_ENV = 'PGRUNBOOK_BENCH_JSON_FD';

/** Runs this benchmark as a child with fd 1 -> our stderr and fd 3 -> our stdout; resolves with its exit code. */
async function runWithJsonOnStdout(): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: ['inherit', 2, 'inherit', 1], env: { ...process.env, [JSON_FD_ENV]: String(JSON_FD) } });
  // Ctrl-C reaches the child through the process group; a SIGTERM sent to this process is passed on.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  return new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 130 : 1)));
  });
}

runBench(main);

