/**
 * Benchmark (not a test): a fleet backup with pgrunbook (`backupFleet`, one child backupDatabase
 * workflow per database) against a shell loop of raw pg_dump at the same parallelism, in one run.
 *
 *   npm run bench:fleet [-- --databases 50] [--db-mb 32] [--parallel 4] [--rounds 2] [--no-diagnostics] [--profile-worker DIR] [--keep]
 *
 * Each flag's default can also come from the environment: PGRUNBOOK_BENCH_DATABASES,
 * PGRUNBOOK_BENCH_DB_MB, PGRUNBOOK_BENCH_PARALLEL, PGRUNBOOK_BENCH_ROUNDS.
 *
 * Starts a throwaway PostgreSQL cluster and a Temporal dev server (the stack/ harness), grows one
 * database of poorly compressible data (bench/generator.ts) to --db-mb and copies it into
 * --databases databases (CREATE DATABASE ... TEMPLATE, STRATEGY FILE_COPY). Then, after an
 * uncounted warm-up of both sides, per round (ABBA order: raw first in odd rounds, pgrunbook first
 * in even ones, so drift hits both sides alike):
 *   - raw: `printf '%s\n' db... | xargs -P P -I{} pg_dump -Fc <pgrunbook's default compression> -f DIR/{}.dump -d {}`,
 *     the password in the environment only;
 *   - pgrunbook: `pgrunbook fleet backup bench --concurrency P --no-globals --wait --json` against
 *     a separate `pgrunbook worker` process (local repository, worker.maxConcurrentDumps P,
 *     maxConcurrentActivities P + 2), timed from the CLI's start to its exit.
 * Figures are medians over the rounds. Then, once each (diagnostics, --no-diagnostics skips them):
 * the same fleet with globals (one pg_dumpall --globals-only per server), and with
 * dump.rowCounts off. From the child workflows' histories it splits each backup's time into the
 * pg_dump step and everything around it (schedule-to-start latencies, workflow tasks, the other
 * steps), and from the fleet's history the hand-off between one child and the next.
 *
 * Target: wall-time ratio pgrunbook / raw <= 1.10 (printed MET / NOT MET; the benchmark does not
 * fail on it). Prints tables and, last, one `BENCH_RESULT {...}` JSON line. Linux only (/proc).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { hrtime } from 'node:process';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import type { google, temporal } from '@temporalio/proto';
import { stringify } from 'yaml';
import { table } from '../client/output.js';
import { Config, DumpOptions } from '../config/schema.js';
import { compressionArgs } from '../postgres/dump.js';
import { clientToolsFor } from '../postgres/tools.js';
import { projectRoot } from '../stack/binaries.js';
import { freePort } from '../stack/ports.js';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import type { FleetResult } from '../workflows/fleet-input.js';
import { log, MB, mb, positiveFlag, reportBenchFailure, round, runBench, secondsSince, startBenchStack, teardownStack, warnAboutNoise, stayUpIfKept } from './common.js';
import { CpuAccounting, describeCpu, type CpuUse } from './cpu.js';
import { DataGenerator } from './generator.js';
import { peakRssOf, resetPeakRss, rssOf, sampleRss } from './proc.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

const TASK_QUEUE = 'bench-fleet';
const TARGET_TIME_RATIO = 1.1;
/** Fleets in the worker's config: the measured one, its row-count-free twin, and the warm-up. */
const FLEET = 'bench';
const FLEET_NO_ROW_COUNTS = 'bench-nocount';
const FLEET_WARMUP = 'warmup';
const TEMPLATE_DATABASE = 'fleet_template';
/** The password reaches the worker only through this variable (passwordEnv), never argv or config. */
const PASSWORD_ENV = 'BENCH_FLEET_PGPASSWORD';

// ---------------------------------------------------------------------------------------------
// Small statistics

const median = (xs: number[]): number => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

// ---------------------------------------------------------------------------------------------
// Raw: xargs -P over pg_dump

interface RawRun {
  seconds: number;
  /** Each pg_dump from its start to its exit, as the loop itself timed it ($EPOCHREALTIME). */
  perDumpSeconds: number[];
  dumpBytes: number;
  cpu: CpuUse;
}

/**
 * One shell loop: `printf '%s\n' DB... | xargs -P P -I{} bash -c 'pg_dump ARGS -f "$1/$2.dump" -d "$2"' PG_DUMP DIR {}`.
 * Database names, the directory and pg_dump's path reach bash as arguments, never as script text;
 * each pg_dump also prints its own start and end time ($EPOCHREALTIME, a bash builtin), so the
 * per-dump times come from the same run. The dumps are removed afterwards.
 */
async function runRaw(pgDump: string, cluster: PostgresCluster, cpu: CpuAccounting, databases: string[], parallel: number, dumpArgs: string[], outDir: string): Promise<RawRun> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir);
  const perDump = `s=$EPOCHREALTIME; "$0" ${dumpArgs.join(' ')} -f "$1/$2.dump" -d "$2" || exit 1; echo "$2 $s $EPOCHREALTIME"`;
  const loop = `printf '%s\\n' "\${@:3}" | xargs -P ${parallel} -I{} bash -c '${perDump}' "$1" "$2" {}`;
  const cpuBefore = cpu.read();
  const start = hrtime.bigint();
  // The password is in the environment (PGPASSWORD), as libpq reads it; never in argv.
  // Its own process group, so a stopped benchmark takes the loop and its pg_dumps with it.
  const child = spawn('bash', ['-c', loop, 'bash', pgDump, outDir, ...databases], { env: { ...process.env, ...cluster.env() }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killOnExit = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killOnExit);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  }).finally(() => process.off('exit', killOnExit));
  const seconds = secondsSince(start);
  const cpuUse = CpuAccounting.since(cpuBefore, cpu.read(), seconds);
  if (code !== 0) throw new Error(`the raw pg_dump loop failed (exit ${code}): ${stderr.trim().slice(-2000)}`);
  const perDumpSeconds = stdout
    .trim()
    .split('\n')
    .map((line) => line.split(' '))
    .map(([, from, to]) => Number(to) - Number(from));
  if (perDumpSeconds.length !== databases.length) throw new Error(`the raw loop reported ${perDumpSeconds.length} dumps, expected ${databases.length}:\n${stdout}`);
  const dumpBytes = sum(readdirSync(outDir).map((f) => statSync(join(outDir, f)).size));
  rmSync(outDir, { recursive: true, force: true });
  return { seconds, perDumpSeconds, dumpBytes, cpu: cpuUse };
}

// ---------------------------------------------------------------------------------------------
// pgrunbook: `pgrunbook fleet backup --wait --json` against a separate worker process

/** What `pgrunbook fleet backup --wait --json` prints: the FleetResult and the fleet's workflow id. */
type FleetOutput = FleetResult & { ok: boolean; workflowId: string };

/** One child backup's time, from its workflow history (seconds). */
interface ChildTimes {
  database: string;
  /** WorkflowExecutionStarted to WorkflowExecutionCompleted. */
  total: number;
  /** Per activity type: ActivityTaskStarted to ActivityTaskCompleted, summed over its attempts. */
  steps: Record<string, number>;
  /** Every activity's ActivityTaskScheduled to ActivityTaskStarted, summed. */
  scheduleToStart: number;
  /** Every workflow task's WorkflowTaskScheduled to WorkflowTaskCompleted, summed. */
  workflowTasks: number;
  activityAttempts: number;
}

/** Activities the fleet runs in its pool next to the child backups (they hold a slot too). */
const POOLED_ACTIVITIES = new Set(['backupGlobals']);

/** The fleet workflow's own timeline (seconds), from its history. */
interface FleetTimes {
  workflowId: string;
  total: number;
  /** Fleet start to its first child's StartChildWorkflowExecutionInitiated. */
  firstChildAfter: number;
  /** Last child completed to the fleet's completion. */
  afterLastChild: number;
  /** Per freed slot: a child's (or pooled activity's) completion to the next StartChildWorkflowExecutionInitiated. */
  handoffs: number[];
  /** StartChildWorkflowExecutionInitiated to ChildWorkflowExecutionStarted. */
  childStarts: number[];
  /** The fleet's own activities (its ActivityTaskStarted to Completed), by type. */
  activities: Record<string, number>;
  /** The children's busy time over (concurrency x fleet time): how full the slots were. */
  slotUse: number;
}

interface PgrunbookRun {
  name: string;
  /** CLI start to exit, as an operator waits for it. */
  seconds: number;
  /** FleetResult.durationMs, the workflow's own measure. */
  fleetSeconds: number;
  dumpBytes: number;
  children: ChildTimes[];
  fleet: FleetTimes;
  globals: FleetResult['globals'];
  /** Node worker process: kernel peak (VmHWM since the run started) and the 200 ms sampled peak with its children summed. */
  workerPeakRssMB: number;
  treePeakRssMB: number;
  workerRssBeforeMB: number;
  cpu: CpuUse;
}

interface Harness {
  client: Client;
  cluster: PostgresCluster;
  worker: WorkerProcess;
  cpu: CpuAccounting;
  configPath: string;
  repoDir: string;
  parallel: number;
}

const msOf = (t: google.protobuf.ITimestamp | null | undefined): number => (t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : NaN);

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

async function historyOf(client: Client, workflowId: string): Promise<HistoryEvent[]> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  return history.events ?? [];
}

/** Activity timings of one history: per type started-to-completed, and schedule-to-start latencies. */
function activityTimes(events: HistoryEvent[]): { steps: Record<string, number>; scheduleToStart: number; attempts: number } {
  const scheduled = new Map<string, { type: string; at: number }>();
  const started = new Map<string, number>();
  const steps: Record<string, number> = {};
  let scheduleToStart = 0;
  let attempts = 0;
  for (const e of events) {
    const at = msOf(e.eventTime);
    if (e.activityTaskScheduledEventAttributes) scheduled.set(String(e.eventId), { type: e.activityTaskScheduledEventAttributes.activityType?.name ?? '?', at });
    const s = e.activityTaskStartedEventAttributes;
    if (s) {
      const from = scheduled.get(String(s.scheduledEventId));
      started.set(String(s.scheduledEventId), at);
      if (from) scheduleToStart += at - from.at;
      attempts += Number(s.attempt ?? 1);
    }
    const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes;
    if (done) {
      const id = String(done.scheduledEventId);
      const type = scheduled.get(id)?.type ?? '?';
      steps[type] = (steps[type] ?? 0) + (at - (started.get(id) ?? at)) / 1000;
    }
  }
  return { steps, scheduleToStart: scheduleToStart / 1000, attempts };
}

function childTimes(database: string, events: HistoryEvent[]): ChildTimes {
  const startedAt = msOf(events.find((e) => e.workflowExecutionStartedEventAttributes)?.eventTime);
  const closedAt = msOf(events.at(-1)?.eventTime);
  const wftScheduled = new Map<string, number>();
  let workflowTasks = 0;
  for (const e of events) {
    if (e.workflowTaskScheduledEventAttributes) wftScheduled.set(String(e.eventId), msOf(e.eventTime));
    const done = e.workflowTaskCompletedEventAttributes;
    if (done) workflowTasks += msOf(e.eventTime) - (wftScheduled.get(String(done.scheduledEventId)) ?? msOf(e.eventTime));
  }
  const { steps, scheduleToStart, attempts } = activityTimes(events);
  return { database, total: (closedAt - startedAt) / 1000, steps, scheduleToStart, workflowTasks: workflowTasks / 1000, activityAttempts: attempts };
}

function fleetTimes(workflowId: string, events: HistoryEvent[], children: ChildTimes[], concurrency: number): FleetTimes {
  const startedAt = msOf(events[0]?.eventTime);
  const closedAt = msOf(events.at(-1)?.eventTime);
  const initiated = new Map<string, number>();
  const pooled = new Set<string>();
  const initiatedTimes: number[] = [];
  const completedTimes: number[] = [];
  const childStarts: number[] = [];
  for (const e of events) {
    const at = msOf(e.eventTime);
    if (e.startChildWorkflowExecutionInitiatedEventAttributes) {
      initiated.set(String(e.eventId), at);
      initiatedTimes.push(at);
    }
    if (POOLED_ACTIVITIES.has(e.activityTaskScheduledEventAttributes?.activityType?.name ?? '')) {
      pooled.add(String(e.eventId));
      initiatedTimes.push(at);
    }
    const started = e.childWorkflowExecutionStartedEventAttributes;
    if (started) childStarts.push((at - (initiated.get(String(started.initiatedEventId)) ?? at)) / 1000);
    const activityDone = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes;
    if (
      (activityDone && pooled.has(String(activityDone.scheduledEventId))) ||
      (e.childWorkflowExecutionCompletedEventAttributes ?? e.childWorkflowExecutionFailedEventAttributes ?? e.childWorkflowExecutionCanceledEventAttributes ?? e.childWorkflowExecutionTimedOutEventAttributes ?? e.childWorkflowExecutionTerminatedEventAttributes)
    ) {
      completedTimes.push(at);
    }
  }
  // The pool starts its jobs in order, one per freed slot: the job after the first `concurrency`
  // ones takes the slot the i-th completion freed.
  const handoffs: number[] = [];
  const later = initiatedTimes.slice(concurrency);
  for (const [i, at] of later.entries()) {
    const freed = completedTimes[i];
    if (freed !== undefined) handoffs.push((at - freed) / 1000);
  }
  const total = (closedAt - startedAt) / 1000;
  return {
    workflowId,
    total,
    firstChildAfter: ((initiatedTimes[0] ?? NaN) - startedAt) / 1000,
    afterLastChild: (closedAt - Math.max(...completedTimes)) / 1000,
    handoffs,
    childStarts,
    activities: activityTimes(events).steps,
    slotUse: sum(children.map((c) => c.total)) / (concurrency * total),
  };
}

/** `node dist/client/main.js ARGS`, timed; stdout returned, a non-zero exit an error with stderr. */
async function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ seconds: number; stdout: string; code: number | null; stderr: string }> {
  const main = join(projectRoot, 'dist', 'client', 'main.js');
  const start = hrtime.bigint();
  const child = spawn(process.execPath, [main, ...args], { cwd: projectRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  // A benchmark stopped by Ctrl-C must not leave a CLI behind, waiting for a server that is gone.
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c) => resolve(c));
    });
    return { seconds: secondsSince(start), stdout, code, stderr };
  } finally {
    process.off('exit', killOnExit);
  }
}

/**
 * `pgrunbook fleet backup FLEET --concurrency P [--no-globals] --wait --json`, timed from start to
 * exit, with the worker's memory and every process's CPU; then the histories of the fleet and its
 * children. The repository is emptied afterwards (the disk holds one run's dumps at a time).
 */
async function runPgrunbook(h: Harness, name: string, fleet: string, options: { globals: boolean; expect: number }): Promise<PgrunbookRun> {
  const pid = h.worker.pid;
  const rssBefore = rssOf(pid) ?? 0;
  const hwmReset = resetPeakRss(pid);
  const cpuBefore = h.cpu.read();
  const sampler = sampleRss(pid);
  let cli;
  let rss;
  try {
    // The CLI needs no database password: only the worker connects to the databases.
    const env = { ...process.env };
    delete env[PASSWORD_ENV];
    cli = await runCli(['fleet', 'backup', fleet, '--config', h.configPath, '--concurrency', String(h.parallel), ...(options.globals ? [] : ['--no-globals']), '--wait', '--json'], env);
  } finally {
    rss = sampler.stop();
  }
  const cpuUse = CpuAccounting.since(cpuBefore, h.cpu.read(), cli.seconds);
  const hwm = hwmReset ? (peakRssOf(pid) ?? rss.self) : rss.self;
  let result: FleetOutput;
  try {
    result = JSON.parse(cli.stdout) as FleetOutput;
  } catch {
    throw new Error(`pgrunbook fleet backup ${fleet} printed no FleetResult (exit ${cli.code}):\n${cli.stdout.slice(-2000)}\n${cli.stderr.slice(-2000)}`);
  }
  if (cli.code !== 0 || result.succeeded !== options.expect || result.failed !== 0) {
    const failed = result.databases.filter((d) => d.status !== 'succeeded').map((d) => `${d.database} ${d.status}: ${d.error ?? ''}`);
    throw new Error(`pgrunbook fleet backup ${fleet} (exit ${cli.code}): ${result.succeeded} succeeded, ${result.failed} failed, expected ${options.expect} succeeded\n  ${failed.join('\n  ')}\n${cli.stderr.slice(-2000)}`);
  }
  const children = await Promise.all(result.databases.map(async (d) => childTimes(d.database, await historyOf(h.client, d.workflowId))));
  const fleetTimeline = fleetTimes(result.workflowId, await historyOf(h.client, result.workflowId), children, h.parallel);
  rmSync(h.repoDir, { recursive: true, force: true });
  mkdirSync(h.repoDir);
  return {
    name,
    seconds: cli.seconds,
    fleetSeconds: result.durationMs / 1000,
    dumpBytes: sum(result.databases.map((d) => d.bytes ?? 0)),
    children,
    fleet: fleetTimeline,
    globals: result.globals,
    workerPeakRssMB: mb(hwm),
    treePeakRssMB: mb(rss.tree),
    workerRssBeforeMB: mb(rssBefore),
    cpu: cpuUse,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

/** The backupDatabase activities in workflow order, by the step names the runbook shows. */
const STEPS: [activity: string, step: string][] = [
  ['planBackup', 'plan'],
  ['probeDatabase', 'probe'],
  ['dumpDatabase', 'dump'],
  ['snapshotMetadata', 'metadata'],
  ['verifyBackup', 'verify'],
  ['writeManifest', 'manifest'],
];

interface Summary {
  rawSeconds: number;
  pgrunbookSeconds: number;
  ratio: number;
  overheadPerBackupSeconds: number;
}

function report(raws: RawRun[], runs: PgrunbookRun[], diagnostics: PgrunbookRun[], extra: { databases: number; parallel: number; databaseBytes: number; dumpArgs: string[]; rounds: number; cpus: number; workerIdleRssMB: number; rawGlobalsSeconds: number; cliStartSeconds: number }): Summary {
  const f = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
  const { databases: n, parallel: p } = extra;
  const rawSeconds = median(raws.map((r) => r.seconds));
  const pgSeconds = median(runs.map((r) => r.seconds));
  const ratio = pgSeconds / rawSeconds;
  const overhead = ((pgSeconds - rawSeconds) * p) / n;
  const verdict = (ok: boolean): string => (ok ? 'MET' : 'NOT MET');

  process.stdout.write(`\n== fleet backup of ${n} databases at parallelism ${p}: pgrunbook backupFleet vs xargs -P ${p} pg_dump ${extra.dumpArgs.join(' ')} ==\n`);
  process.stdout.write(
    table(
      ['run', 'wall s', 'workflow s', 'dumps MB', 'per backup s (median)', 'worker peak RSS', 'worker+children peak', 'cpu busy s', 'util'],
      [
        ...raws.map((r, i) => [`raw xargs #${i + 1}`, f(r.seconds), '', f(r.dumpBytes / MB, 1), f(median(r.perDumpSeconds)), '', '', f(r.cpu.machineBusy, 1), `${Math.round(r.cpu.utilization * 100)}%`]),
        ...[...runs, ...diagnostics].map((r) => [
          r.name,
          f(r.seconds),
          f(r.fleetSeconds),
          f(r.dumpBytes / MB, 1),
          f(median(r.children.map((c) => c.total))),
          `${f(r.workerPeakRssMB, 1)} MB`,
          `${f(r.treePeakRssMB, 1)} MB`,
          f(r.cpu.machineBusy, 1),
          `${Math.round(r.cpu.utilization * 100)}%`,
        ]),
      ],
    ) + '\n',
  );

  process.stdout.write(`\n-- wall time, medians of ${raws.length} raw and ${runs.length} pgrunbook runs --\n`);
  process.stdout.write(`raw ${f(rawSeconds)} s, pgrunbook ${f(pgSeconds)} s (workflow ${f(median(runs.map((r) => r.fleetSeconds)))} s; outside the workflow ${f(median(runs.map((r) => r.seconds - r.fleetSeconds)))} s, of which starting the CLI process alone ${f(extra.cliStartSeconds)} s)\n`);
  process.stdout.write(`ratio pgrunbook / raw: ${f(ratio, 3)}\n`);
  process.stdout.write(`Temporal overhead per backup = (pgrunbook - raw) x ${p} / ${n} = ${f(overhead, 3)} s\n`);
  // The benchmark's own processes' CPU: see below; a single diagnostic run is easily swamped by other load.
  const own = (c: CpuUse): number => c.postgres + c.tools + c.worker + c.temporal + c.bench;
  const pgOwn = median(runs.map((r) => own(r.cpu)));
  for (const d of diagnostics) {
    const globalsStep = d.fleet.activities.backupGlobals;
    process.stdout.write(
      `${d.name}: ${f(d.seconds)} s, ratio to raw ${f(d.seconds / rawSeconds, 3)}, ${d.seconds >= pgSeconds ? '+' : ''}${f(d.seconds - pgSeconds)} s vs pgrunbook; ` +
        `own CPU ${f(own(d.cpu), 1)} s vs ${f(pgOwn, 1)} s${d.globals.length ? `; globals: ${d.globals.map((g) => `${g.server} ${g.status}`).join(', ')}${globalsStep !== undefined ? ` (backupGlobals ${f(globalsStep)} s)` : ''}` : ''}\n`,
    );
  }
  if (Number.isFinite(extra.rawGlobalsSeconds)) process.stdout.write(`raw pg_dumpall --globals-only once: ${f(extra.rawGlobalsSeconds)} s\n`);

  // Per backup: medians over every child of every measured pgrunbook run.
  const children = runs.flatMap((r) => r.children);
  const rawPerDump = median(raws.flatMap((r) => r.perDumpSeconds));
  const step = (c: ChildTimes, activity: string): number => c.steps[activity] ?? 0;
  const known = (c: ChildTimes): number => sum(STEPS.map(([a]) => step(c, a))) + c.scheduleToStart + c.workflowTasks;
  const otherActivities = [...new Set(children.flatMap((c) => Object.keys(c.steps)))].filter((a) => !STEPS.some(([s]) => s === a));
  process.stdout.write(`\n-- one backup, from the child workflows' histories (medians over ${children.length} backups, seconds) --\n`);
  const rows: string[][] = [
    ['raw pg_dump (one, as the loop timed it)', f(rawPerDump), ''],
    ['pgrunbook child backupDatabase, total', f(median(children.map((c) => c.total))), f(median(children.map((c) => c.total)) / rawPerDump, 3)],
    ...STEPS.map(([a, s]) => [`  ${s} (${a}, started->completed)`, f(median(children.map((c) => step(c, a)))), a === 'dumpDatabase' ? f(median(children.map((c) => step(c, a))) / rawPerDump, 3) : '']),
    ...otherActivities.map((a) => [`  ${a}`, f(median(children.map((c) => step(c, a)))), '']),
    ['  schedule-to-start, all activities', f(median(children.map((c) => c.scheduleToStart))), ''],
    ['  workflow tasks (scheduled->completed), all', f(median(children.map((c) => c.workflowTasks))), ''],
    ['  rest (total minus the above)', f(median(children.map((c) => c.total - known(c)))), ''],
    ['outside the pg_dump step (total - dump)', f(median(children.map((c) => c.total - step(c, 'dumpDatabase')))), ''],
  ];
  process.stdout.write(table(['', 'seconds', 'x raw'], rows) + '\n');
  const retried = children.filter((c) => c.activityAttempts > STEPS.length);
  if (retried.length > 0) process.stdout.write(`note: ${retried.length} backups retried an activity (${retried.map((c) => c.database).join(', ')})\n`);

  process.stdout.write('\n-- the fleet workflow (medians over the measured runs, seconds) --\n');
  const fleets = runs.map((r) => r.fleet);
  const fleetActivities = [...new Set(fleets.flatMap((t) => Object.keys(t.activities)))];
  process.stdout.write(
    table(
      ['', 'seconds'],
      [
        ['start to first child initiated', f(median(fleets.map((t) => t.firstChildAfter)))],
        ['child initiated to child started (median per child)', f(median(fleets.flatMap((t) => t.childStarts)), 3)],
        ['slot hand-off: child completed to next child initiated (median)', f(median(fleets.flatMap((t) => t.handoffs)), 3)],
        ['slot hand-off, worst', f(Math.max(...fleets.flatMap((t) => t.handoffs)), 3)],
        ['last child completed to fleet completed', f(median(fleets.map((t) => t.afterLastChild)))],
        ...fleetActivities.map((a) => [`fleet activity ${a}`, f(median(fleets.map((t) => t.activities[a] ?? NaN)))]),
        ['slot use: sum of child times / (concurrency x fleet time)', `${f(100 * median(fleets.map((t) => t.slotUse)), 0)}%`],
      ],
    ) + '\n',
  );
  const rawSlotUse = median(raws.map((r) => sum(r.perDumpSeconds) / (p * r.seconds)));
  process.stdout.write(`raw loop slot use: sum of pg_dump times / (${p} x wall) = ${f(100 * rawSlotUse, 0)}%\n`);

  process.stdout.write(`\n-- CPU seconds per run (${extra.cpus} CPUs; busy = whole machine; tools = pg_dump/pg_restore/pg_dumpall and the CLI) --\n`);
  const seq = [...raws.map((r, i) => ({ run: `raw xargs #${i + 1}`, seconds: r.seconds, cpu: r.cpu })), ...[...runs, ...diagnostics].map((r) => ({ run: r.name, seconds: r.seconds, cpu: r.cpu }))];
  process.stdout.write(
    table(
      ['run', 'wall', 'busy', 'util', 'postgres', 'tools', 'worker', 'temporal', 'bench', 'other procs'],
      seq.map(({ run, seconds, cpu: c }) => [run, f(seconds), f(c.machineBusy, 1), `${Math.round(c.utilization * 100)}%`, f(c.postgres, 1), f(c.tools, 1), f(c.worker, 1), f(c.temporal, 1), f(c.bench, 1), f(c.other, 1)]),
    ) + '\n',
  );
  const cpuOf = (xs: { cpu: CpuUse }[], k: keyof CpuUse): number => median(xs.map((x) => x.cpu[k]));
  process.stdout.write(
    `median CPU seconds per backup, pgrunbook - raw: postgres ${f((cpuOf(runs, 'postgres') - cpuOf(raws, 'postgres')) / n, 3)}, tools ${f((cpuOf(runs, 'tools') - cpuOf(raws, 'tools')) / n, 3)}, ` +
      `worker ${f(cpuOf(runs, 'worker') / n, 3)}, temporal ${f(cpuOf(runs, 'temporal') / n, 3)}; whole machine ${f((cpuOf(runs, 'machineBusy') - cpuOf(raws, 'machineBusy')) / n, 3)}\n`,
  );

  // Other processes on the machine take CPU from both sides unevenly; the CPU the benchmark's own
  // processes used is much less sensitive to them, and on a CPU-bound host wall time follows it.
  const ownRatio = pgOwn / median(raws.map((r) => own(r.cpu)));
  process.stdout.write(`CPU of the benchmark's own processes (postgres + tools + worker + temporal + bench), pgrunbook / raw: ${f(ownRatio, 3)} (the wall-time ratio on a CPU-bound host without other load tends to this)\n`);

  process.stdout.write('\n-- context --\n');
  process.stdout.write(
    `${n} databases of ${f(extra.databaseBytes / MB, 1)} MB each (pg_database_size; ${f((n * extra.databaseBytes) / MB, 0)} MB in all); raw dumps ${f(median(raws.map((r) => r.dumpBytes)) / n / MB, 1)} MB each; ` +
      `worker RSS idle ${f(extra.workerIdleRssMB, 1)} MB, before the runs ${runs.map((r) => f(r.workerRssBeforeMB, 0)).join('/')} MB\n`,
  );
  const noisy = warnAboutNoise(seq);

  process.stdout.write('\n-- target --\n');
  process.stdout.write(`wall-time ratio <= ${TARGET_TIME_RATIO}: ${f(ratio, 3)} -> ${verdict(ratio <= TARGET_TIME_RATIO)}\n`);

  const perBackup = (c: ChildTimes): Record<string, number> => ({ total: round(c.total, 3), scheduleToStart: round(c.scheduleToStart, 3), workflowTasks: round(c.workflowTasks, 3), ...Object.fromEntries(Object.entries(c.steps).map(([k, v]) => [k, round(v, 3)])) });
  const summary = {
    target: { timeRatio: TARGET_TIME_RATIO },
    ratio: round(ratio, 3),
    ownCpuRatio: round(ownRatio, 3),
    rawSeconds: round(rawSeconds),
    pgrunbookSeconds: round(pgSeconds),
    overheadPerBackupSeconds: round(overhead, 3),
    rawPerDumpSeconds: round(rawPerDump, 3),
    medianOutsideDumpSeconds: round(median(children.map((c) => c.total - step(c, 'dumpDatabase'))), 3),
    noisyRuns: noisy,
    ...extra,
    raw: raws.map((r) => ({ seconds: round(r.seconds), dumpBytes: r.dumpBytes, medianPerDump: round(median(r.perDumpSeconds), 3), cpu: r.cpu })),
    pgrunbook: [...runs, ...diagnostics].map((r) => ({
      name: r.name,
      seconds: round(r.seconds),
      fleetSeconds: round(r.fleetSeconds),
      dumpBytes: r.dumpBytes,
      workerPeakRssMB: r.workerPeakRssMB,
      treePeakRssMB: r.treePeakRssMB,
      cpu: r.cpu,
      fleet: { ...r.fleet, handoffMedian: round(median(r.fleet.handoffs), 3), handoffs: undefined, childStarts: undefined },
      medianBackup: perBackup({
        database: 'median',
        total: median(r.children.map((c) => c.total)),
        scheduleToStart: median(r.children.map((c) => c.scheduleToStart)),
        workflowTasks: median(r.children.map((c) => c.workflowTasks)),
        activityAttempts: 0,
        steps: Object.fromEntries(STEPS.map(([a]) => [a, median(r.children.map((c) => step(c, a)))])),
      }),
    })),
  };
  process.stdout.write(`\nBENCH_RESULT ${JSON.stringify(summary)}\n`);
  return { rawSeconds, pgrunbookSeconds: pgSeconds, ratio, overheadPerBackupSeconds: overhead };
}

// ---------------------------------------------------------------------------------------------
// Main

const fromEnv = (name: string, fallback: string): string => process.env[name] ?? fallback;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      databases: { type: 'string', default: fromEnv('PGRUNBOOK_BENCH_DATABASES', '50') },
      /** Size of each database (pg_database_size), MB. */
      'db-mb': { type: 'string', default: fromEnv('PGRUNBOOK_BENCH_DB_MB', '32') },
      /** xargs -P, the fleet's --concurrency and the worker's maxConcurrentDumps. */
      parallel: { type: 'string', default: fromEnv('PGRUNBOOK_BENCH_PARALLEL', '4') },
      /** Rounds of raw + pgrunbook (ABBA order); the figures are medians. */
      rounds: { type: 'string', default: fromEnv('PGRUNBOOK_BENCH_ROUNDS', '2') },
      /** Skip the two single diagnostic runs (with globals; row counts off). */
      'no-diagnostics': { type: 'boolean', default: false },
      /** Write a V8 CPU profile of the worker's main thread (node --cpu-prof) into this directory. */
      'profile-worker': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench:fleet [-- --databases 50] [--db-mb 32] [--parallel 4] [--rounds 2] [--no-diagnostics] [--profile-worker DIR] [--keep]\n');
    return 0;
  }
  const count = positiveFlag('databases', values.databases, true);
  const dbMB = positiveFlag('db-mb', values['db-mb']);
  const parallel = positiveFlag('parallel', values.parallel, true);
  const rounds = positiveFlag('rounds', values.rounds, true);

  const { add: addCleanup, cleanup } = teardownStack();
  const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-bench-fleet-'));
  let workerLog: string | undefined;
  addCleanup('work directory', async () => rmSync(workDir, { recursive: true, force: true }));
  try {
    log(`pgrunbook fleet benchmark: ${count} databases of ${dbMB} MB, parallelism ${parallel}, ${rounds} round(s); ${cpus().length} CPUs, ${mb(totalmem())} MB RAM, work dir ${workDir}`);

    log('starting PostgreSQL and the Temporal dev server ...');
    const { cluster, temporal } = await startBenchStack(addCleanup);

    // One database of generated data, copied file by file into the fleet's databases.
    log(`growing ${TEMPLATE_DATABASE} to ${dbMB} MB ...`);
    await cluster.sql(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
    const gen = await DataGenerator.create(cluster.url(TEMPLATE_DATABASE));
    try {
      await gen.growTo(dbMB * MB);
    } finally {
      await gen.close();
    }
    const width = String(count).length < 2 ? 2 : String(count).length;
    const databases = Array.from({ length: count }, (_, i) => `db${String(i + 1).padStart(width, '0')}`);
    const copyStart = hrtime.bigint();
    for (const db of databases) await cluster.sql(`CREATE DATABASE ${db} TEMPLATE ${TEMPLATE_DATABASE} STRATEGY FILE_COPY`);
    const databaseBytes = Number(await cluster.sql(`SELECT pg_database_size('${databases[0]}')`));
    log(`  ${count} databases of ${mb(databaseBytes)} MB created in ${secondsSince(copyStart).toFixed(1)} s`);

    // The worker's config: one fleet over the databases, its row-count-free twin (the same
    // databases under other ids), and a warm-up fleet. The password only in the worker's environment.
    const connection = (dbname: string) => ({ host: '127.0.0.1', port: cluster.port, user: 'postgres', dbname, passwordEnv: PASSWORD_ENV, sslmode: 'disable' });
    const repoDir = join(workDir, 'repo');
    const fileConfig = {
      temporal: { address: temporal.address, namespace: 'default', taskQueue: TASK_QUEUE },
      repositories: { local: { type: 'local', path: repoDir } },
      databases: {
        warmup: { ...connection('warmup'), labels: { role: 'warmup' } },
        ...Object.fromEntries(databases.map((db) => [db, { ...connection(db), labels: { role: 'fleet' } }])),
        ...Object.fromEntries(databases.map((db) => [`${db}-nocount`, { ...connection(db), labels: { role: 'nocount' }, dump: { rowCounts: false } }])),
      },
      defaults: { repository: 'local' },
      timeouts: { heartbeatSeconds: 30 },
      // As deployed (metrics on), on a free port: other workers on this machine may hold the default one.
      metrics: { port: await freePort() },
      worker: { taskQueues: [TASK_QUEUE], maxConcurrentActivities: parallel + 2, maxConcurrentDumps: parallel },
      fleets: {
        [FLEET]: { select: { labels: { role: 'fleet' } }, concurrency: parallel, globals: { enabled: true } },
        [FLEET_NO_ROW_COUNTS]: { select: { labels: { role: 'nocount' } }, concurrency: parallel, globals: { enabled: false } },
        [FLEET_WARMUP]: { select: { labels: { role: 'warmup' } }, concurrency: 1, globals: { enabled: true } },
      },
    };
    const config = Config.parse(fileConfig);
    mkdirSync(repoDir);
    const configPath = join(workDir, 'pgrunbook.yaml');
    writeFileSync(configPath, `# written by bench/fleet.ts\n${stringify(fileConfig)}`);
    // The raw loop runs the pg_dump pgrunbook picks for this server, with the compression
    // pgrunbook's default dump options give it.
    const tools = await clientToolsFor(Math.floor(Number(await cluster.sql("SELECT current_setting('server_version_num')")) / 10_000));
    const dumpOptions = DumpOptions.parse({});
    const dumpArgs = ['-Fc', ...compressionArgs(dumpOptions.format, dumpOptions.compression, tools.major)];
    if (dumpArgs.some((a) => !/^[A-Za-z0-9=:_-]+$/.test(a))) throw new Error(`unexpected pg_dump arguments ${dumpArgs.join(' ')}`);
    if (config.databases[databases[0]!]!.dump.compression !== dumpOptions.compression) throw new Error('the fleet databases must use the default dump options');
    log(`  raw loop: printf '%s\\n' ${databases[0]}..${databases.at(-1)} | xargs -P ${parallel} -I{} ${tools.pgDump} ${dumpArgs.join(' ')} -f DIR/{}.dump -d {}  (${tools.version})`);

    log('starting the worker process (node dist/client/main.js worker) ...');
    workerLog = join(workDir, 'worker.log');
    const profileDir = values['profile-worker'] ? resolve(values['profile-worker']) : undefined;
    if (profileDir) mkdirSync(profileDir, { recursive: true });
    const worker = await startWorkerProcess(configPath, { ...process.env, [PASSWORD_ENV]: cluster.password }, workerLog, TASK_QUEUE, profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
    if (profileDir) addCleanup('profile note', async () => log(`worker CPU profile (written when the worker exits): ${profileDir}`));
    addCleanup('worker', () => worker.stop());
    const cpu = CpuAccounting.find(cluster);
    cpu.setWorker(worker.pid);
    const h: Harness = { client: temporal.client, cluster, worker, cpu, configPath, repoDir, parallel };
    const outDir = join(workDir, 'raw');

    // Warm-up, not counted: a fleet of one (workflow sandbox, CLI, globals) and one raw pass (page cache).
    const warm = await runPgrunbook(h, 'warm-up', FLEET_WARMUP, { globals: true, expect: 1 });
    log(`  warm-up fleet of 1: ${warm.seconds.toFixed(2)} s; globals ${warm.globals.map((g) => g.status).join(', ') || 'none'}`);
    const warmRaw = await runRaw(tools.pgDump, cluster, cpu, databases, parallel, dumpArgs, outDir);
    log(`  warm-up raw pass: ${warmRaw.seconds.toFixed(2)} s, one pg_dump ${median(warmRaw.perDumpSeconds).toFixed(2)} s (median), ${mb(warmRaw.dumpBytes / count)} MB each`);
    const workerIdleRss = rssOf(worker.pid) ?? 0;
    // What starting the CLI costs by itself (node, config; no Temporal): part of every fleet run's wall time.
    const cliStarts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await runCli(['fleet', 'list', '--config', configPath, '--json'], process.env);
      if (r.code !== 0) throw new Error(`pgrunbook fleet list failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
      cliStarts.push(r.seconds);
    }
    log(`  pgrunbook fleet list (CLI start, no Temporal): ${cliStarts.map((x) => x.toFixed(2)).join(', ')} s`);

    const raws: RawRun[] = [];
    const runs: PgrunbookRun[] = [];
    const raw = async (roundNo: number): Promise<void> => {
      const r = await runRaw(tools.pgDump, cluster, cpu, databases, parallel, dumpArgs, outDir);
      raws.push(r);
      log(`  raw xargs -P ${parallel} (round ${roundNo}): ${r.seconds.toFixed(2)} s; one pg_dump ${median(r.perDumpSeconds).toFixed(2)} s (median); ${describeCpu(r.cpu)}`);
    };
    const fleet = async (roundNo: number): Promise<void> => {
      const r = await runPgrunbook(h, `pgrunbook fleet #${roundNo}`, FLEET, { globals: false, expect: count });
      runs.push(r);
      log(
        `  pgrunbook fleet (round ${roundNo}): ${r.seconds.toFixed(2)} s (workflow ${r.fleetSeconds.toFixed(2)} s); one backup ${median(r.children.map((c) => c.total)).toFixed(2)} s, ` +
          `its dump step ${median(r.children.map((c) => c.steps.dumpDatabase ?? NaN)).toFixed(2)} s (medians); worker peak RSS ${r.workerPeakRssMB} MB; ${describeCpu(r.cpu)}`,
      );
    };
    for (let roundNo = 1; roundNo <= rounds; roundNo++) {
      if (roundNo % 2 === 1) {
        await raw(roundNo);
        await fleet(roundNo);
      } else {
        await fleet(roundNo);
        await raw(roundNo);
      }
    }

    const diagnostics: PgrunbookRun[] = [];
    let rawGlobalsSeconds = NaN;
    if (!values['no-diagnostics']) {
      const withGlobals = await runPgrunbook(h, 'pgrunbook fleet, with globals (diagnostic)', FLEET, { globals: true, expect: count });
      diagnostics.push(withGlobals);
      log(`  pgrunbook fleet with globals: ${withGlobals.seconds.toFixed(2)} s; globals ${withGlobals.globals.map((g) => `${g.server} ${g.status}`).join(', ')}`);
      const globalsStart = hrtime.bigint();
      await runRawGlobals(cluster, join(workDir, 'globals.sql'));
      rawGlobalsSeconds = secondsSince(globalsStart);
      const noCounts = await runPgrunbook(h, 'pgrunbook fleet, rowCounts off (diagnostic)', FLEET_NO_ROW_COUNTS, { globals: false, expect: count });
      diagnostics.push(noCounts);
      log(`  pgrunbook fleet with dump.rowCounts off: ${noCounts.seconds.toFixed(2)} s`);
    }

    report(raws, runs, diagnostics, { databases: count, parallel, databaseBytes, dumpArgs, rounds, cpus: cpus().length, workerIdleRssMB: mb(workerIdleRss), rawGlobalsSeconds: round(rawGlobalsSeconds), cliStartSeconds: round(median(cliStarts)) });

    await stayUpIfKept(values.keep, `worker config ${configPath}, log ${worker.logPath}, Temporal ${temporal.address}, PostgreSQL 127.0.0.1:${cluster.port}`);
    return 0;
  } catch (error) {
    reportBenchFailure(error, workerLog);
    return 1;
  } finally {
    log('tearing down ...');
    await cleanup();
  }
}

/** Raw `pg_dumpall --globals-only --no-role-passwords -f FILE`, for context next to the globals run. */
async function runRawGlobals(cluster: PostgresCluster, file: string): Promise<void> {
  const child = spawn(join(cluster.binDir, 'pg_dumpall'), ['--globals-only', '--no-role-passwords', '-f', file], { env: { ...process.env, ...cluster.env() }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  if (code !== 0) throw new Error(`pg_dumpall --globals-only failed (exit ${code}): ${stderr.trim()}`);
  rmSync(file, { force: true });
}

runBench(main);
