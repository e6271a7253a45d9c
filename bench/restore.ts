/**
 * Benchmark (not a test): pgrunbook's restore workflow against raw `pg_restore -j2` of the same
 * backup in the same run, at two database sizes (--small-mb, then --size-gb).
 *
 *   npm run bench:restore [-- --size-gb 1] [--small-mb 100] [--repeat N] [--keep]
 *
 * Starts a throwaway PostgreSQL cluster and a Temporal dev server (the stack/ harness), a separate
 * `pgrunbook worker` process, and per size point a database of poorly compressible data with the
 * demo application (stack/demo-app.ts: a real process holding connections, with GET /health) in
 * front of it. pgrunbook backs the database up once into a local repository; that artifact
 * (`<repo>/<backupId>/db_full.dump`) is then restored by, per round: raw `createdb` +
 * `pg_restore -j2` into a fresh database, `pgrunbook restore` (swap, no approval: restore and
 * verify beside the live database, scale the app down, drain, rename, scale it up, wait for
 * /health), raw again. The raw figure is the mean of all raw runs. While pgrunbook restores, this
 * process also polls the app's /health every 100 ms: the outage it sees is the downtime as a user
 * would see it, next to the workflow's own downtimeSeconds (scale-down to ready again).
 *
 * Targets: total time ratio <= 1.10 (at the --size-gb point); downtime <= 10 s and flat from the
 * small point to the large one. Also prints the worker's peak RSS. Prints tables and, last, one
 * `BENCH_RESULT {...}` JSON line. Linux only (/proc).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { hrtime } from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { stringify } from 'yaml';
import { waitUntilHealthy } from '../app-controllers/health.js';
import { createAppController } from '../app-controllers/registry.js';
import { CommandAppConfig } from '../app-controllers/schema.js';
import type { AppController } from '../app-controllers/types.js';
import { startBackup } from '../client/backup.js';
import { table } from '../client/output.js';
import { startRestore } from '../client/restore.js';
import { Config } from '../config/schema.js';
import { dumpFileName } from '../repository/layout.js';
import { demoAppCommandConfig } from '../stack/demo-app.js';
import { freePort } from '../stack/ports.js';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import { statusQuery, type RunbookStatus } from '../workflows/runbook.js';
import { GB, log, mb, MB, mean, positiveFlag, reportBenchFailure, resultOrStuck, round, runBench, secondsSince, startBenchStack, teardownStack, warnAboutNoise, stayUpIfKept } from './common.js';
import { CpuAccounting, describeCpu, type CpuUse } from './cpu.js';
import { DataGenerator } from './generator.js';
import { cmdlineOf, peakRssOf, resetPeakRss, rssOf, sampleRss } from './proc.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

const TASK_QUEUE = 'bench-restore';
const TARGET_TIME_RATIO = 1.1;
const TARGET_DOWNTIME_SECONDS = 10;
/** Downtime counts as flat when the large point's exceeds the small one's by at most this much (or 20%). */
const FLAT_DOWNTIME_SLACK_SECONDS = 1;
/** The restore steps in workflow order (swap strategy); those between the brackets are downtime. */
const STEP_ORDER = ['resolve', 'preflight', 'restore', 'verify', 'scale-down', 'block-connections', 'swap', 'allow-connections', 'scale-up', 'health', 'report'];
const DOWNTIME_STEPS = new Set(['scale-down', 'block-connections', 'swap', 'allow-connections', 'scale-up', 'health']);

// ---------------------------------------------------------------------------------------------
// The application in front of each database

interface SizePointSetup {
  /** Database id in the worker's config, and its database name on the cluster. */
  id: string;
  dbname: string;
  targetBytes: number;
  urlEnv: string;
  appConfig: CommandAppConfig;
}

/** The demo app is detached (setsid) from whoever started it: recognise it by its command line. */
const isDemoApp = (pid: number): boolean => cmdlineOf(pid).includes('demo-app-process');

/**
 * Polls the app's /health every `intervalMs` and records the windows in which it did not answer
 * 2xx: from the first failed poll to the next good one.
 */
function watchHealth(url: string, intervalMs = 100): { stop(): Promise<{ outages: number[]; polls: number; failedPolls: number }> } {
  let stopped = false;
  const outages: number[] = [];
  let polls = 0;
  let failedPolls = 0;
  let downSince: number | null = null;
  const loop = (async () => {
    while (!stopped) {
      const at = Date.now();
      const ok = await fetch(url, { signal: AbortSignal.timeout(1_000) })
        .then(async (res) => {
          await res.arrayBuffer();
          return res.ok;
        })
        .catch(() => false);
      polls++;
      if (!ok) {
        failedPolls++;
        downSince ??= at;
      } else if (downSince !== null) {
        outages.push((at - downSince) / 1000);
        downSince = null;
      }
      await sleep(Math.max(0, intervalMs - (Date.now() - at)));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      // Still down when the run ended: an outage that never closed (reported, not hidden).
      if (downSince !== null) outages.push((Date.now() - downSince) / 1000);
      return { outages, polls, failedPolls };
    },
  };
}

async function demoAppSessions(cluster: PostgresCluster, dbname: string): Promise<number> {
  return Number(await cluster.sql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrunbook-demo-app' AND datname = '${dbname}'`));
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface RawRun {
  seconds: number;
  createdbSeconds: number;
  pgRestoreSeconds: number;
  /** Peak RSS of pg_restore and its -j workers (summed), sampled every 200 ms. */
  pgRestoreRssMB: number;
  cpu: CpuUse;
}

async function runTool(cluster: PostgresCluster, tool: string, args: string[], onPid?: (pid: number) => void): Promise<void> {
  const child = spawn(join(cluster.binDir, tool), args, { env: { ...process.env, ...cluster.env() }, stdio: ['ignore', 'ignore', 'pipe'] });
  if (child.pid !== undefined) onPid?.(child.pid);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  if (code !== 0) throw new Error(`${tool} ${args.join(' ')} failed (exit ${code}): ${stderr.trim()}`);
}

/** Raw `createdb -T template0 DB` + `pg_restore -j2 -d DB FILE`, timed together; the database is dropped afterwards. */
async function runRawRestore(cluster: PostgresCluster, cpu: CpuAccounting, file: string, database: string): Promise<RawRun> {
  const cpuBefore = cpu.read();
  const start = hrtime.bigint();
  await runTool(cluster, 'createdb', ['-T', 'template0', database]);
  const createdbSeconds = secondsSince(start);
  const sampling: { sampler?: ReturnType<typeof sampleRss> } = {};
  let rss;
  try {
    await runTool(cluster, 'pg_restore', ['-j', '2', '-d', database, file], (pid) => (sampling.sampler = sampleRss(pid)));
  } finally {
    rss = sampling.sampler?.stop();
  }
  const seconds = secondsSince(start);
  const cpuUse = CpuAccounting.since(cpuBefore, cpu.read(), seconds);
  await cluster.sql(`DROP DATABASE "${database}" WITH (FORCE)`);
  return { seconds: round(seconds), createdbSeconds: round(createdbSeconds), pgRestoreSeconds: round(seconds - createdbSeconds), pgRestoreRssMB: mb(rss?.tree ?? 0), cpu: cpuUse };
}

interface Harness {
  client: Client;
  config: Config;
  cluster: PostgresCluster;
  worker: WorkerProcess;
  cpu: CpuAccounting;
}

/** Failed steps and their errors, from the status query: what to show when a workflow fails. */
function describeFailedSteps(status: RunbookStatus | undefined): string {
  if (!status) return '';
  const failed = status.finished.filter((s) => s.outcome !== 'ok');
  const undo = status.undo ?? [];
  return (
    `\n  steps: ${status.finished.map((s) => `${s.step} ${s.outcome} ${(s.durationMs / 1000).toFixed(2)} s`).join(', ')}` +
    failed.map((s) => `\n  step ${s.step} ${s.outcome}: ${s.error ?? ''}`).join('') +
    (undo.length ? `\n  undo: ${undo.map((u) => `${u.name} ${u.state}${u.error ? ` (${u.error})` : ''}`).join(', ')}` : '')
  );
}


interface BackupMade {
  backupId: string;
  file: string;
  dumpBytes: number;
  seconds: number;
  workerPeakRssMB: number;
}

async function makeBackup(h: Harness, database: string, repoDir: string, timeoutMs: number): Promise<BackupMade> {
  const hwmReset = resetPeakRss(h.worker.pid);
  const start = hrtime.bigint();
  const handle = await startBackup(h.client, h.config, { database, repository: 'local' });
  const result = await resultOrStuck<{ backupId: string; size: number; format: string }>(handle, `backup of ${database}`, timeoutMs, describeFailedSteps);
  const seconds = secondsSince(start);
  const file = join(repoDir, result.backupId, dumpFileName('custom'));
  if (result.format !== 'custom' || !existsSync(file)) throw new Error(`backup ${result.backupId} is not a custom-format dump at ${file} (format ${result.format})`);
  return { backupId: result.backupId, file, dumpBytes: result.size, seconds: round(seconds), workerPeakRssMB: mb((hwmReset ? peakRssOf(h.worker.pid) : rssOf(h.worker.pid)) ?? 0) };
}

interface PgrunbookRun {
  /** From start to result, as the operator waits for it. */
  seconds: number;
  /** Workflow-side durationSeconds. */
  workflowSeconds: number;
  /** RestoreResult.restore.seconds: pg_restore into the scratch database, as the activity timed it. */
  restoreActivitySeconds: number;
  restoreMethod: string;
  /** RestoreResult.downtimeSeconds: scale-down to the app answering ready again. */
  downtimeSeconds: number | null;
  /** The longest window in which this process's 100 ms /health poller got no 2xx. */
  observedOutageSeconds: number | null;
  outageWindows: number;
  steps: Record<string, number>;
  verification: { ok: boolean; tablesChecked: number | null; analyzed: boolean; problems: string[] };
  preRestoreDatabase: string | null;
  /** Node worker process: VmHWM since the run started (kernel peak), and the 200 ms sampled peak. */
  workerPeakRssMB: number;
  workerSampledPeakRssMB: number;
  /** Sampled peak of worker + children (pg_restore and its -j workers, app shell scripts; not the detached app) summed. */
  treePeakRssMB: number;
  workerRssBeforeMB: number;
  cpu: CpuUse;
}

interface RestoreResultShape {
  durationSeconds: number;
  downtimeSeconds: number | null;
  preRestoreDatabase: string | null;
  restore: { seconds: number; method: string };
  verification: { ok: boolean; tablesChecked: number | null; analyzed: boolean; problems: string[] };
}

async function runPgrunbookRestore(h: Harness, database: string, backupId: string, healthUrl: string | null, timeoutMs: number): Promise<PgrunbookRun> {
  const pid = h.worker.pid;
  const rssBefore = rssOf(pid) ?? 0;
  const hwmReset = resetPeakRss(pid);
  const cpuBefore = h.cpu.read();
  const sampler = sampleRss(pid, 200, isDemoApp);
  const health = healthUrl ? watchHealth(healthUrl) : undefined;
  const start = hrtime.bigint();
  let result: RestoreResultShape;
  let handle;
  let rss;
  let watched;
  try {
    handle = await startRestore(h.client, h.config, { database, backup: backupId, requireApproval: false, strategy: 'swap', jobs: 2 });
    result = await resultOrStuck<RestoreResultShape>(handle, `restore of ${database}`, timeoutMs, describeFailedSteps);
  } finally {
    rss = sampler.stop();
    watched = await health?.stop();
  }
  const seconds = secondsSince(start);
  const cpuUse = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
  const hwm = hwmReset ? (peakRssOf(pid) ?? rss.self) : rss.self;
  const status = await handle.query(statusQuery);
  const steps: Record<string, number> = {};
  for (const s of status.finished) steps[s.step] = round((steps[s.step] ?? 0) + s.durationMs / 1000);
  return {
    seconds: round(seconds),
    workflowSeconds: round(result.durationSeconds),
    restoreActivitySeconds: round(result.restore.seconds),
    restoreMethod: result.restore.method,
    downtimeSeconds: result.downtimeSeconds === null ? null : round(result.downtimeSeconds),
    observedOutageSeconds: watched ? round(Math.max(0, ...watched.outages), 1) : null,
    outageWindows: watched?.outages.length ?? 0,
    steps,
    verification: { ok: result.verification.ok, tablesChecked: result.verification.tablesChecked, analyzed: result.verification.analyzed, problems: result.verification.problems },
    preRestoreDatabase: result.preRestoreDatabase,
    workerPeakRssMB: mb(hwm),
    workerSampledPeakRssMB: mb(rss.self),
    treePeakRssMB: mb(rss.tree),
    workerRssBeforeMB: mb(rssBefore),
    cpu: cpuUse,
  };
}

interface SizePoint {
  id: string;
  targetMB: number;
  databaseBytes: number;
  rows: { events: number; accounts: number };
  backup: BackupMade;
  raw: RawRun[];
  rawMeanSeconds: number;
  runs: PgrunbookRun[];
  /** Mean of the pgrunbook runs (timings); peaks are the maximum. */
  pgrunbook: PgrunbookRun;
  sequence: { run: string; seconds: number; cpu: CpuUse }[];
  ratios: { total: number; restoreStep: number; restoreActivity: number };
  workerPeakRssMB: number;
  treePeakRssMB: number;
}

function meanRun(runs: PgrunbookRun[]): PgrunbookRun {
  const first = runs[0]!;
  if (runs.length === 1) return first;
  const avg = (get: (r: PgrunbookRun) => number, digits = 2): number => round(mean(runs.map(get)), digits);
  const peak = (get: (r: PgrunbookRun) => number): number => Math.max(...runs.map(get));
  const nullableMax = (get: (r: PgrunbookRun) => number | null): number | null => (runs.every((r) => get(r) !== null) ? Math.max(...runs.map((r) => get(r)!)) : null);
  const cpu = Object.fromEntries(Object.keys(first.cpu).map((k) => [k, avg((r) => r.cpu[k as keyof CpuUse], k === 'utilization' ? 2 : 1)])) as unknown as CpuUse;
  const steps = Object.fromEntries(Object.keys(first.steps).map((k) => [k, avg((r) => r.steps[k] ?? NaN)]));
  return {
    ...first,
    seconds: avg((r) => r.seconds),
    workflowSeconds: avg((r) => r.workflowSeconds),
    restoreActivitySeconds: avg((r) => r.restoreActivitySeconds),
    // Downtime: the worst round, not the mean; a target on downtime is about the worst case.
    downtimeSeconds: nullableMax((r) => r.downtimeSeconds),
    observedOutageSeconds: nullableMax((r) => r.observedOutageSeconds),
    steps,
    workerPeakRssMB: peak((r) => r.workerPeakRssMB),
    workerSampledPeakRssMB: peak((r) => r.workerSampledPeakRssMB),
    treePeakRssMB: peak((r) => r.treePeakRssMB),
    workerRssBeforeMB: avg((r) => r.workerRssBeforeMB, 1),
    cpu,
  };
}

async function measurePoint(h: Harness, setup: SizePointSetup, index: number, repoDir: string, repeat: number): Promise<SizePoint> {
  const { cluster } = h;
  log(`size point ${index} (${setup.id}): growing database ${setup.dbname} to ${mb(setup.targetBytes)} MB ...`);
  await cluster.sql(`CREATE DATABASE ${setup.dbname}`);
  const gen = await DataGenerator.create(cluster.url(setup.dbname));
  let databaseBytes: number;
  try {
    databaseBytes = await gen.growTo(setup.targetBytes);
  } finally {
    // Closed before the restore: the swap drains every session on the database.
    await gen.close();
  }
  const rows = gen.rows;
  log(`size point ${index}: ${mb(databaseBytes)} MB (${rows.events.toLocaleString('en')} events, ${rows.accounts.toLocaleString('en')} accounts)`);

  // The application runs in front of the database for the whole size point, as in production.
  const workerEnv = { ...process.env, [setup.urlEnv]: cluster.url(setup.dbname) };
  const app: AppController = createAppController(CommandAppConfig.parse(setup.appConfig), workerEnv);
  const signal = new AbortController().signal;
  await app.start({ controller: 'command' }, signal);
  try {
    await waitUntilHealthy(setup.appConfig.health!, signal);
    log(`  demo app healthy at ${setup.appConfig.health!.url}, ${await demoAppSessions(cluster, setup.dbname)} sessions on ${setup.dbname}`);

    const backup = await makeBackup(h, setup.id, repoDir, Math.max(300_000, (databaseBytes / MB) * 500));
    log(`  pgrunbook backup ${backup.backupId}: ${backup.seconds.toFixed(2)} s, ${mb(backup.dumpBytes)} MB (${backup.file}); worker peak RSS ${backup.workerPeakRssMB} MB`);

    const sequence: SizePoint['sequence'] = [];
    const raws: RawRun[] = [];
    const runs: PgrunbookRun[] = [];
    const raw = async (name: string, n: number): Promise<void> => {
      const r = await runRawRestore(cluster, h.cpu, backup.file, `${setup.dbname}_raw_${n}`);
      raws.push(r);
      sequence.push({ run: name, seconds: r.seconds, cpu: r.cpu });
      log(`  ${name}: ${r.seconds.toFixed(2)} s (createdb ${r.createdbSeconds.toFixed(2)} s, pg_restore -j2 ${r.pgRestoreSeconds.toFixed(2)} s), pg_restore peak RSS ${r.pgRestoreRssMB} MB; ${describeCpu(r.cpu)}`);
    };
    for (let rep = 1; rep <= repeat; rep++) {
      const suffix = repeat > 1 ? ` (round ${rep})` : '';
      await raw(`raw createdb + pg_restore -j2 #${2 * rep - 1}`, 2 * rep - 1);
      const timeoutMs = Math.max(300_000, raws[0]!.seconds * 10_000);
      const r = await runPgrunbookRestore(h, setup.id, backup.backupId, setup.appConfig.health!.url, timeoutMs);
      runs.push(r);
      sequence.push({ run: `pgrunbook restore${suffix}`, seconds: r.seconds, cpu: r.cpu });
      log(
        `  pgrunbook restore${suffix}: ${r.seconds.toFixed(2)} s (workflow ${r.workflowSeconds.toFixed(2)} s, pg_restore ${r.restoreMethod} ${r.restoreActivitySeconds.toFixed(2)} s); ` +
          `downtime ${r.downtimeSeconds ?? '-'} s, /health outage seen ${r.observedOutageSeconds ?? '-'} s (${r.outageWindows} window(s)); ` +
          `steps ${Object.entries(r.steps).map(([k, v]) => `${k} ${v}`).join(', ')}; worker RSS ${r.workerRssBeforeMB} -> peak ${r.workerPeakRssMB} MB (with children ${r.treePeakRssMB} MB); ` +
          `verification ${r.verification.ok ? 'ok' : `NOT ok: ${r.verification.problems.join('; ')}`}; ${describeCpu(r.cpu)}`,
      );
      log(`  demo app after the swap: ${await demoAppSessions(cluster, setup.dbname)} sessions on ${setup.dbname}`);
      // The old database stays as <db>__pre_restore_<stamp>: dropped here so the disk holds one copy.
      if (r.preRestoreDatabase) await cluster.sql(`DROP DATABASE "${r.preRestoreDatabase}" WITH (FORCE)`);
      await raw(`raw createdb + pg_restore -j2 #${2 * rep}`, 2 * rep);
    }

    const rawMeanSeconds = mean(raws.map((r) => r.seconds));
    const ratio = (s: number): number => round(s / rawMeanSeconds, 3);
    const pgrunbook = meanRun(runs);
    return {
      id: setup.id,
      targetMB: mb(setup.targetBytes),
      databaseBytes,
      rows,
      backup,
      raw: raws,
      rawMeanSeconds: round(rawMeanSeconds),
      runs,
      pgrunbook,
      sequence,
      ratios: { total: ratio(pgrunbook.seconds), restoreStep: ratio(pgrunbook.steps.restore ?? NaN), restoreActivity: ratio(pgrunbook.restoreActivitySeconds) },
      workerPeakRssMB: Math.max(...runs.map((r) => r.workerPeakRssMB)),
      treePeakRssMB: Math.max(...runs.map((r) => r.treePeakRssMB)),
    };
  } finally {
    await app.stop({ controller: 'command' }, signal);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function report(points: SizePoint[], extra: Record<string, unknown>): void {
  const f = (n: number | null | undefined, d = 2): string => (n !== null && n !== undefined && Number.isFinite(n) ? n.toFixed(d) : '-');
  const size = (p: SizePoint): string => (p.databaseBytes >= GB ? `${f(p.databaseBytes / GB, 2)} GB` : `${f(p.databaseBytes / MB, 0)} MB`);
  process.stdout.write('\n== pgrunbook restore (swap, no approval) vs raw createdb + pg_restore -j2 of the same backup ==\n');
  process.stdout.write(
    table(
      ['db size', 'dump', 'raw s (mean)', 'pgrunbook s', 'ratio', 'restore step s', 'ratio', 'verify s', 'downtime s', '/health outage s', 'worker peak RSS', 'worker+children peak (sampled)'],
      points.map((p) => [
        size(p),
        `${f(p.backup.dumpBytes / MB, 0)} MB`,
        `${f(p.rawMeanSeconds)} (${p.raw.map((r) => f(r.seconds)).join(', ')})`,
        f(p.pgrunbook.seconds),
        f(p.ratios.total, 3),
        f(p.pgrunbook.steps.restore),
        f(p.ratios.restoreStep, 3),
        f(p.pgrunbook.steps.verify),
        f(p.pgrunbook.downtimeSeconds),
        f(p.pgrunbook.observedOutageSeconds, 1),
        `${f(p.workerPeakRssMB, 1)} MB`,
        `${f(p.treePeakRssMB, 1)} MB`,
      ]),
    ) + '\n',
  );

  process.stdout.write('\n-- pgrunbook restore steps (seconds; * = inside the downtime window; "other" = total minus the steps: scheduling, client round trips) --\n');
  const names = [...STEP_ORDER, ...new Set(points.flatMap((p) => Object.keys(p.pgrunbook.steps)).filter((s) => !STEP_ORDER.includes(s)))];
  const stepRows = names.map((s) => [`${DOWNTIME_STEPS.has(s) ? '* ' : '  '}${s}`, ...points.map((p) => f(p.pgrunbook.steps[s]))]);
  const sumOf = (p: SizePoint, filter: (s: string) => boolean): number => Object.entries(p.pgrunbook.steps).filter(([s]) => filter(s)).reduce((a, [, v]) => a + v, 0);
  stepRows.push(['  other', ...points.map((p) => f(p.pgrunbook.seconds - sumOf(p, () => true)))]);
  stepRows.push(['  total (client)', ...points.map((p) => f(p.pgrunbook.seconds))]);
  stepRows.push(['  total (workflow)', ...points.map((p) => f(p.pgrunbook.workflowSeconds))]);
  stepRows.push(['* steps in downtime', ...points.map((p) => f(sumOf(p, (s) => DOWNTIME_STEPS.has(s))))]);
  stepRows.push(['  downtimeSeconds', ...points.map((p) => f(p.pgrunbook.downtimeSeconds))]);
  stepRows.push(['  raw (mean)', ...points.map((p) => f(p.rawMeanSeconds))]);
  process.stdout.write(table(['step', ...points.map(size)], stepRows) + '\n');

  process.stdout.write(`\n-- CPU seconds per run (${extra.cpus as number} CPUs; busy = whole machine; util = busy / (wall x CPUs)) --\n`);
  const cpuRows: string[][] = [];
  for (const p of points) {
    for (const { run, seconds, cpu: c } of p.sequence) {
      const noisy = c.other > 0.1 * seconds ? 'NOISY' : '';
      cpuRows.push([size(p), run, f(seconds), f(c.machineBusy, 1), `${Math.round(c.utilization * 100)}%`, f(c.postgres, 1), f(c.tools, 1), f(c.worker, 1), f(c.temporal, 1), f(c.bench, 1), f(c.other, 1), noisy]);
    }
  }
  process.stdout.write(table(['db size', 'run', 'wall', 'busy', 'util', 'postgres', 'pg_restore', 'worker', 'temporal', 'bench', 'other procs', ''], cpuRows) + '\n');

  process.stdout.write('\n-- context --\n');
  for (const p of points) {
    const r = p.pgrunbook;
    process.stdout.write(
      `${size(p)}: ${p.rows.events.toLocaleString('en')} events + ${p.rows.accounts.toLocaleString('en')} accounts; backup ${p.backup.backupId} ${f(p.backup.dumpBytes / MB, 1)} MB ` +
        `(${f((100 * p.backup.dumpBytes) / p.databaseBytes, 0)}% of the db size) in ${f(p.backup.seconds)} s; raw pg_restore peak RSS ${f(Math.max(...p.raw.map((x) => x.pgRestoreRssMB)), 1)} MB; ` +
        `pgrunbook pg_restore ${r.restoreMethod} ${f(r.restoreActivitySeconds)} s (activity-timed, ratio ${f(p.ratios.restoreActivity, 3)}); ` +
        `verification ${p.runs.every((x) => x.verification.ok) ? 'ok' : 'NOT ok'} (${r.verification.tablesChecked ?? '-'} tables, analyzed ${r.verification.analyzed}); ` +
        `worker RSS before the runs ${p.runs.map((x) => f(x.workerRssBeforeMB, 0)).join('/')} MB; during the backup ${f(p.backup.workerPeakRssMB, 1)} MB\n`,
    );
  }
  process.stdout.write(`worker startup peak RSS ${extra.workerStartupPeakRssMB as number} MB; RSS after warm-up ${extra.workerIdleRssMB as number} MB\n`);

  const noisyRuns = warnAboutNoise(points.flatMap((p) => p.sequence));

  const large = points.at(-1)!;
  const small = points[0]!;
  const downtimes = points.map((p) => p.pgrunbook.downtimeSeconds ?? NaN);
  const worstDowntime = Math.max(...downtimes);
  const downtimeGrowth = (large.pgrunbook.downtimeSeconds ?? NaN) - (small.pgrunbook.downtimeSeconds ?? NaN);
  const flat = downtimeGrowth <= Math.max(FLAT_DOWNTIME_SLACK_SECONDS, 0.2 * (small.pgrunbook.downtimeSeconds ?? NaN));
  const worstRss = Math.max(...points.map((p) => p.workerPeakRssMB));
  const verdict = (ok: boolean): string => (ok ? 'MET' : 'NOT MET');
  process.stdout.write('\n-- targets --\n');
  process.stdout.write(
    `total time ratio <= ${TARGET_TIME_RATIO} at ${size(large)}: ${f(large.ratios.total, 3)} -> ${verdict(large.ratios.total <= TARGET_TIME_RATIO)}` +
      `   (at ${size(small)}: ${f(small.ratios.total, 3)}; restore step alone ${points.map((p) => f(p.ratios.restoreStep, 3)).join(' / ')})\n`,
  );
  process.stdout.write(`downtime <= ${TARGET_DOWNTIME_SECONDS} s: ${points.map((p) => `${size(p)} ${f(p.pgrunbook.downtimeSeconds)} s`).join(', ')} -> ${verdict(worstDowntime <= TARGET_DOWNTIME_SECONDS)}\n`);
  process.stdout.write(
    `downtime flat from ${size(small)} to ${size(large)} (x${f(large.databaseBytes / small.databaseBytes, 1)} data): ${downtimeGrowth >= 0 ? '+' : ''}${f(downtimeGrowth)} s -> ${verdict(flat)}` +
      `   (/health outage seen by the poller: ${points.map((p) => `${f(p.pgrunbook.observedOutageSeconds, 1)} s`).join(' -> ')})\n`,
  );
  process.stdout.write(`worker peak RSS (restore runs; no target): ${points.map((p) => `${f(p.workerPeakRssMB, 1)} MB`).join(' -> ')}; with pg_restore children ${points.map((p) => `${f(p.treePeakRssMB, 1)} MB`).join(' -> ')}\n`);
  const summary = {
    targets: { timeRatio: TARGET_TIME_RATIO, downtimeSeconds: TARGET_DOWNTIME_SECONDS },
    timeRatio: large.ratios.total,
    timeRatioSmall: small.ratios.total,
    downtimeSeconds: downtimes,
    downtimeGrowthSeconds: round(downtimeGrowth),
    downtimeFlat: flat,
    observedOutageSeconds: points.map((p) => p.pgrunbook.observedOutageSeconds),
    worstWorkerPeakRssMB: worstRss,
    noisyRuns,
    ...extra,
    points,
  };
  process.stdout.write(`\nBENCH_RESULT ${JSON.stringify(summary)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'size-gb': { type: 'string', default: '1' },
      'small-mb': { type: 'string', default: '100' },
      /** Rounds of raw, pgrunbook, raw per size point. */
      repeat: { type: 'string', default: '1' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench:restore [-- --size-gb N] [--small-mb N] [--repeat N] [--keep]\n');
    return 0;
  }
  const sizeGB = positiveFlag('size-gb', values['size-gb']);
  const smallMB = positiveFlag('small-mb', values['small-mb']);
  if (smallMB * MB >= sizeGB * GB) throw new Error(`--small-mb must be below --size-gb, got ${values['small-mb']}`);
  const repeat = positiveFlag('repeat', values.repeat, true);

  const { add: addCleanup, cleanup } = teardownStack();

  const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-bench-restore-'));
  let workerLog: string | undefined;
  addCleanup('work directory', async () => rmSync(workDir, { recursive: true, force: true }));
  try {
    log(`pgrunbook restore benchmark: --size-gb ${sizeGB} --small-mb ${smallMB}, ${cpus().length} CPUs, ${mb(totalmem())} MB RAM, work dir ${workDir}`);

    log('starting PostgreSQL and the Temporal dev server ...');
    const { cluster, temporal } = await startBenchStack(addCleanup);

    // Two size points, each its own database with its own demo app in front of it.
    const setups: SizePointSetup[] = [];
    for (const [id, targetBytes] of [['small', smallMB * MB], ['large', sizeGB * GB]] as const) {
      const urlEnv = `BENCH_${id.toUpperCase()}_DATABASE_URL`;
      const appConfig = demoAppCommandConfig({ pidFile: join(workDir, `app-${id}.pid`), logFile: join(workDir, `app-${id}.log`), port: await freePort(), urlEnv, connections: 3 });
      setups.push({ id, dbname: `bench_${id}`, targetBytes, urlEnv, appConfig });
    }
    const restoreOptions = { strategy: 'swap', jobs: 2, approval: { required: false }, onStepFailure: 'abort' };
    const repoDir = join(workDir, 'repo');
    const fileConfig = {
      temporal: { address: temporal.address, namespace: 'default', taskQueue: TASK_QUEUE },
      repositories: { local: { type: 'local', path: repoDir } },
      databases: {
        warmup: { url: '${BENCH_WARMUP_DATABASE_URL}', restore: restoreOptions },
        ...Object.fromEntries(setups.map((s) => [s.id, { url: `\${${s.urlEnv}}`, restore: restoreOptions, app: s.appConfig }])),
      },
      defaults: { repository: 'local' },
      timeouts: { heartbeatSeconds: 30 },
    };
    const config = Config.parse(fileConfig);
    mkdirSync(repoDir);
    const configPath = join(workDir, 'pgrunbook.yaml');
    writeFileSync(configPath, `# written by bench/restore.ts\n${stringify(fileConfig)}`);
    // Database URLs (with the password) live only in the worker's (and the apps') environment.
    const workerEnv: NodeJS.ProcessEnv = {
      ...process.env,
      BENCH_WARMUP_DATABASE_URL: cluster.url('warmup'),
      ...Object.fromEntries(setups.map((s) => [s.urlEnv, cluster.url(s.dbname)])),
    };
    log('starting the worker process (node dist/client/main.js worker) ...');
    workerLog = join(workDir, 'worker.log');
    const worker = await startWorkerProcess(configPath, workerEnv, workerLog, TASK_QUEUE);
    addCleanup('worker', () => worker.stop());
    // Whatever happens, no demo app outlives the benchmark.
    for (const s of setups) addCleanup(`demo app ${s.id}`, () => createAppController(CommandAppConfig.parse(s.appConfig), workerEnv).stop({ controller: 'command' }, new AbortController().signal));
    const startupPeak = peakRssOf(worker.pid) ?? 0;
    const cpu = CpuAccounting.find(cluster);
    cpu.setWorker(worker.pid);
    const h: Harness = { client: temporal.client, config, cluster, worker, cpu };

    // Warm-up: the first workflow tasks and activities pay for loading; and a broken restore fails
    // here, in seconds, instead of after generating a gigabyte.
    const warmBackup = await makeBackup(h, 'warmup', repoDir, 120_000);
    const warm = await runPgrunbookRestore(h, 'warmup', warmBackup.backupId, null, 120_000);
    if (warm.preRestoreDatabase) await cluster.sql(`DROP DATABASE "${warm.preRestoreDatabase}" WITH (FORCE)`);
    const idleRss = rssOf(worker.pid) ?? 0;
    log(`  worker ready (pid ${worker.pid}): startup peak RSS ${mb(startupPeak)} MB; warm-up backup ${warmBackup.seconds} s, restore ${warm.seconds} s; RSS after warm-up ${mb(idleRss)} MB`);

    const points: SizePoint[] = [];
    for (const [i, setup] of setups.entries()) points.push(await measurePoint(h, setup, i + 1, repoDir, repeat));

    report(points, { sizeGB, smallMB, repeat, cpus: cpus().length, workerStartupPeakRssMB: mb(startupPeak), workerIdleRssMB: mb(idleRss) });

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

runBench(main);
