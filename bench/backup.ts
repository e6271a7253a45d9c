/**
 * Benchmark (not a test): pgrunbook's backup workflow against raw `pg_dump -Fc -Z6` of the same
 * database in the same run, at two database sizes (a quarter of --size-gb, then --size-gb).
 *
 *   npm run bench:backup [-- --size-gb 1] [--repeat N] [--keep] [--profile-worker DIR]
 *
 * Starts a throwaway PostgreSQL cluster, a SeaweedFS S3 server and a Temporal dev server (the
 * stack/ harness), generates a poorly compressible database, then for each size point runs:
 * raw pg_dump, pgrunbook -> local repository, pgrunbook -> S3, raw pg_dump again (--repeat
 * rounds; the raw figure is the mean of all raw runs), plus two diagnostics: pgrunbook without
 * row counts, and raw pg_dump streamed through node's sha256 into a file. The worker is a separate
 * `pgrunbook worker` process whose RSS (and that of its children) is sampled; CPU time is
 * accounted per component (PostgreSQL, pg_dump, worker, SeaweedFS, Temporal, other processes).
 *
 * Targets: total time ratio <= 1.05; worker peak RSS <= 200 MB and flat as the database grows.
 * Prints tables and, last, one `BENCH_RESULT {...}` JSON line. Linux only (/proc).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { open } from 'node:fs/promises';
import { hrtime } from 'node:process';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { stringify } from 'yaml';
import { startBackup } from '../client/backup.js';
import { table } from '../client/output.js';
import { Config } from '../config/schema.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import { statusQuery } from '../workflows/runbook.js';
import { GB, log, MB, mb, mean, positiveFlag, round, secondsSince, reportBenchFailure, runBench, startBenchStack, teardownStack, warnAboutNoise, stayUpIfKept } from './common.js';
import { CpuAccounting, describeCpu, type CpuUse } from './cpu.js';
import { DataGenerator } from './generator.js';
import { peakRssOf, resetPeakRss, rssOf, sampleRss } from './proc.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

const TASK_QUEUE = 'bench';
const TARGET_TIME_RATIO = 1.05;
const TARGET_RSS_MB = 200;
/** The small size point, as a fraction of --size-gb. */
const SMALL_FRACTION = 0.25;

// ---------------------------------------------------------------------------------------------
// Measurements

interface RawRun {
  seconds: number;
  dumpBytes: number;
  /** Peak RSS of pg_dump, sampled every 200 ms. */
  pgDumpRssMB: number;
  cpu: CpuUse;
}

/**
 * Raw `pg_dump -Fc -Z6 -f FILE`. With `throughNode`, pg_dump writes to stdout instead and this
 * process streams it through pgrunbook's ChecksumStream (sha256) into the file and fsyncs it: the
 * dump step's data path without Temporal, S3, row counts or verification (diagnostic).
 */
async function runRawDump(cluster: PostgresCluster, cpu: CpuAccounting, database: string, outDir: string, throughNode = false): Promise<RawRun> {
  const file = join(outDir, `raw-${Date.now()}.dump`);
  const pgDump = join(cluster.binDir, 'pg_dump');
  const cpuBefore = cpu.read();
  const start = hrtime.bigint();
  const child = spawn(pgDump, ['-Fc', '-Z6', ...(throughNode ? [] : ['-f', file])], {
    env: { ...process.env, ...cluster.env(), PGDATABASE: database },
    stdio: ['ignore', throughNode ? 'pipe' : 'ignore', 'pipe'],
  });
  const sampler = child.pid !== undefined ? sampleRss(child.pid) : undefined;
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  if (throughNode) {
    await pipeline(child.stdout!, new ChecksumStream(), createWriteStream(file));
    const handle = await open(file, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
  const code = await exited;
  const seconds = secondsSince(start);
  const rss = sampler?.stop();
  const cpuUse = CpuAccounting.since(cpuBefore, cpu.read(), seconds);
  if (code !== 0) throw new Error(`pg_dump failed (exit ${code}): ${stderr.trim()}`);
  const dumpBytes = statSync(file).size;
  rmSync(file, { force: true });
  return { seconds, dumpBytes, pgDumpRssMB: mb(rss?.self ?? 0), cpu: cpuUse };
}

interface PgrunbookRun {
  repository: string;
  database: string;
  seconds: number;
  /** Workflow-side duration (BackupResult.durationSeconds). */
  workflowSeconds: number;
  dumpBytes: number;
  steps: Record<string, number>;
  /** Node worker process: VmHWM since the run started (kernel peak), and the 200 ms sampled peak. */
  workerPeakRssMB: number;
  workerSampledPeakRssMB: number;
  /** Sampled peak of worker + children (pg_dump, pg_restore) summed, and of the largest child. */
  treePeakRssMB: number;
  childPeakRssMB: number;
  /** Worker RSS when the run started: the baseline the peak grows from. */
  workerRssBeforeMB: number;
  cpu: CpuUse;
}

interface Harness {
  client: Client;
  config: Config;
  worker: WorkerProcess;
  cpu: CpuAccounting;
}

/**
 * A backup that takes this much longer than raw pg_dump is stuck, not slow: terminate it and fail
 * the benchmark instead of waiting for the step timeouts (hours).
 */
function stuckAfterMs(rawSeconds: number): number {
  return Math.max(120_000, rawSeconds * 10_000);
}

async function runPgrunbook(h: Harness, database: string, repository: string, label: string, timeoutMs: number): Promise<PgrunbookRun> {
  const pid = h.worker.pid;
  const rssBefore = rssOf(pid) ?? 0;
  const hwmReset = resetPeakRss(pid);
  const cpuBefore = h.cpu.read();
  const sampler = sampleRss(pid);
  const start = hrtime.bigint();
  let result;
  let handle;
  let rss;
  try {
    handle = await startBackup(h.client, h.config, { database, label, repository });
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('stuck')), timeoutMs);
    });
    try {
      result = await Promise.race([handle.result(), stuck]);
    } catch (error) {
      if ((error as Error).message !== 'stuck') throw error;
      const status = await handle.query(statusQuery).catch(() => undefined);
      const pending = (await handle.describe().catch(() => undefined))?.raw.pendingActivities?.[0];
      await handle.terminate('bench: no result in time').catch(() => undefined);
      throw new Error(
        `backup ${handle.workflowId} had no result after ${timeoutMs / 1000} s (terminated); current step ${status?.currentStep ?? '?'}, ` +
          `pending activity ${pending?.activityType?.name ?? '-'} (attempt ${pending?.attempt ?? '-'}, last heartbeat ${pending?.lastHeartbeatTime ? 'seen' : 'none'})`,
      );
    } finally {
      clearTimeout(timer);
    }
  } finally {
    rss = sampler.stop();
  }
  const seconds = secondsSince(start);
  const cpuUse = CpuAccounting.since(cpuBefore, h.cpu.read(), seconds);
  const hwm = hwmReset ? (peakRssOf(pid) ?? rss.self) : rss.self;
  const status = await handle.query(statusQuery);
  const steps: Record<string, number> = {};
  for (const s of status.finished) steps[s.step] = round(s.durationMs / 1000);
  return {
    repository,
    database,
    seconds: round(seconds),
    workflowSeconds: round(result.durationSeconds),
    dumpBytes: result.size,
    steps,
    workerPeakRssMB: mb(hwm),
    workerSampledPeakRssMB: mb(rss.self),
    treePeakRssMB: mb(rss.tree),
    childPeakRssMB: mb(rss.child),
    workerRssBeforeMB: mb(rssBefore),
    cpu: cpuUse,
  };
}

interface SizePoint {
  targetGB: number;
  databaseBytes: number;
  rows: { events: number; accounts: number };
  rowCountSeconds: number;
  raw: RawRun[];
  rawMeanSeconds: number;
  /** Means over the repeated runs (localRuns, s3Runs). */
  local: PgrunbookRun;
  s3: PgrunbookRun;
  localRuns: PgrunbookRun[];
  s3Runs: PgrunbookRun[];
  /** Every run in the order it ran. */
  sequence: { run: string; seconds: number; cpu: CpuUse }[];
  /** Diagnostic: local repository with dump.rowCounts = false. */
  localNoRowCounts: PgrunbookRun;
  /** Diagnostic: raw pg_dump streamed through node (sha256) into a file. */
  rawThroughNode: RawRun;
  ratios: {
    local: number;
    s3: number;
    dumpStepLocal: number;
    dumpStepS3: number;
    localNoRowCounts: number;
    dumpStepLocalNoRowCounts: number;
    rawThroughNode: number;
  };
  workerPeakRssMB: number;
  treePeakRssMB: number;
}

/** Mean of repeated runs (timings, CPU); peaks are the maximum. */
function meanRun(runs: PgrunbookRun[]): PgrunbookRun {
  const first = runs[0]!;
  if (runs.length === 1) return first;
  const avg = (get: (r: PgrunbookRun) => number, digits = 2): number => round(mean(runs.map(get)), digits);
  const peak = (get: (r: PgrunbookRun) => number): number => Math.max(...runs.map(get));
  const cpu = Object.fromEntries(Object.keys(first.cpu).map((k) => [k, avg((r) => r.cpu[k as keyof CpuUse], k === 'utilization' ? 2 : 1)])) as unknown as CpuUse;
  const steps = Object.fromEntries(Object.keys(first.steps).map((k) => [k, avg((r) => r.steps[k] ?? NaN)]));
  return {
    ...first,
    seconds: avg((r) => r.seconds),
    workflowSeconds: avg((r) => r.workflowSeconds),
    steps,
    workerPeakRssMB: peak((r) => r.workerPeakRssMB),
    workerSampledPeakRssMB: peak((r) => r.workerSampledPeakRssMB),
    treePeakRssMB: peak((r) => r.treePeakRssMB),
    childPeakRssMB: peak((r) => r.childPeakRssMB),
    workerRssBeforeMB: avg((r) => r.workerRssBeforeMB, 1),
    cpu,
  };
}

async function measurePoint(h: Harness, cluster: PostgresCluster, gen: DataGenerator, targetGB: number, index: number, outDir: string, repeat: number): Promise<SizePoint> {
  log(`size point ${index}: growing the database to ${targetGB} GB ...`);
  const databaseBytes = await gen.growTo(targetGB * GB);
  const rowCountSeconds = await gen.timeRowCounts();
  log(`size point ${index}: ${mb(databaseBytes)} MB; count(*) of both tables alone takes ${rowCountSeconds.toFixed(2)} s`);

  const describe = (r: PgrunbookRun): string =>
    `${r.seconds.toFixed(2)} s, ${mb(r.dumpBytes)} MB; steps ${Object.entries(r.steps).map(([k, v]) => `${k} ${v}`).join(', ')}; worker RSS ${r.workerRssBeforeMB} -> peak ${r.workerPeakRssMB} MB (with children ${r.treePeakRssMB} MB); ${describeCpu(r.cpu)}`;
  const sequence: { run: string; seconds: number; cpu: CpuUse }[] = [];
  const raw = async (name: string, throughNode = false): Promise<RawRun> => {
    const r = await runRawDump(cluster, h.cpu, 'bench', outDir, throughNode);
    const rounded = { ...r, seconds: round(r.seconds) };
    sequence.push({ run: name, seconds: rounded.seconds, cpu: r.cpu });
    log(`  ${name}: ${r.seconds.toFixed(2)} s, ${mb(r.dumpBytes)} MB, pg_dump peak ${r.pgDumpRssMB} MB; ${describeCpu(r.cpu)}`);
    return rounded;
  };
  let timeoutMs = 0;
  const backup = async (name: string, database: string, repository: string, label: string): Promise<PgrunbookRun> => {
    const r = await runPgrunbook(h, database, repository, label, timeoutMs);
    sequence.push({ run: name, seconds: r.seconds, cpu: r.cpu });
    log(`  ${name}: ${describe(r)}`);
    return r;
  };

  // raw, local, s3, raw (repeated): the raw figure is the mean of all raw runs around them.
  const raws: RawRun[] = [];
  const locals: PgrunbookRun[] = [];
  const s3s: PgrunbookRun[] = [];
  for (let rep = 1; rep <= repeat; rep++) {
    const suffix = repeat > 1 ? ` (round ${rep})` : '';
    raws.push(await raw(`raw pg_dump #${2 * rep - 1}`));
    timeoutMs = stuckAfterMs(raws[0]!.seconds);
    locals.push(await backup(`pgrunbook local${suffix}`, 'bench', 'local', `p${index}-local-${rep}`));
    s3s.push(await backup(`pgrunbook s3${suffix}`, 'bench', 's3', `p${index}-s3-${rep}`));
    raws.push(await raw(`raw pg_dump #${2 * rep}`));
  }
  // Diagnostics, once: without row counts; and pg_dump's bytes streamed through node alone.
  const localNoRowCounts = await backup('pgrunbook local, rowCounts off (diagnostic)', 'bench-nocount', 'local', `p${index}-nocount`);
  const rawThroughNode = await raw('raw pg_dump | node sha256 > file (diagnostic)', true);

  const rawMeanSeconds = mean(raws.map((r) => r.seconds));
  const ratio = (s: number): number => round(s / rawMeanSeconds, 3);
  const local = meanRun(locals);
  const s3 = meanRun(s3s);
  const all = [...locals, ...s3s, localNoRowCounts];
  return {
    targetGB,
    databaseBytes,
    rows: gen.rows,
    rowCountSeconds: round(rowCountSeconds),
    raw: raws,
    rawMeanSeconds: round(rawMeanSeconds),
    local,
    s3,
    localRuns: locals,
    s3Runs: s3s,
    localNoRowCounts,
    rawThroughNode,
    sequence,
    ratios: {
      local: ratio(local.seconds),
      s3: ratio(s3.seconds),
      dumpStepLocal: ratio(local.steps.dump ?? NaN),
      dumpStepS3: ratio(s3.steps.dump ?? NaN),
      localNoRowCounts: ratio(localNoRowCounts.seconds),
      dumpStepLocalNoRowCounts: ratio(localNoRowCounts.steps.dump ?? NaN),
      rawThroughNode: ratio(rawThroughNode.seconds),
    },
    workerPeakRssMB: Math.max(...all.map((r) => r.workerPeakRssMB)),
    treePeakRssMB: Math.max(...all.map((r) => r.treePeakRssMB)),
  };
}

// ---------------------------------------------------------------------------------------------
// Report

function report(points: SizePoint[], extra: Record<string, unknown>): void {
  const f = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
  process.stdout.write('\n== pgrunbook backup vs raw pg_dump -Fc -Z6 ==\n');
  process.stdout.write(
    table(
      ['db size', 'raw s (mean)', 'local s', 'ratio', 's3 s', 'ratio', 'dump-step ratio local/s3', 'worker peak RSS', 'worker+children peak'],
      points.map((p) => [
        `${f(p.databaseBytes / GB, 2)} GB`,
        `${f(p.rawMeanSeconds)} (${p.raw.map((r) => f(r.seconds)).join(', ')})`,
        f(p.local.seconds),
        f(p.ratios.local, 3),
        f(p.s3.seconds),
        f(p.ratios.s3, 3),
        `${f(p.ratios.dumpStepLocal, 3)} / ${f(p.ratios.dumpStepS3, 3)}`,
        `${f(p.workerPeakRssMB, 1)} MB`,
        `${f(p.treePeakRssMB, 1)} MB`,
      ]),
    ) + '\n',
  );

  process.stdout.write('\n-- where the time goes (seconds; "other" = total minus the steps: scheduling, client round trips) --\n');
  const stepNames = ['plan', 'probe', 'dump', 'metadata', 'verify', 'manifest'];
  const rows: string[][] = [];
  for (const p of points) {
    for (const [name, r] of [['local', p.local], ['s3', p.s3], ['local, no row counts', p.localNoRowCounts]] as const) {
      const stepSum = stepNames.reduce((a, s) => a + (r.steps[s] ?? 0), 0);
      rows.push([
        `${f(p.databaseBytes / GB, 2)} GB`,
        name,
        f(r.seconds),
        ...stepNames.map((s) => f(r.steps[s] ?? NaN)),
        f(r.seconds - stepSum),
        f(r.seconds / p.rawMeanSeconds, 3),
        f((r.steps.dump ?? NaN) / p.rawMeanSeconds, 3),
      ]);
    }
    const piped = p.rawThroughNode.seconds;
    rows.push([`${f(p.databaseBytes / GB, 2)} GB`, 'raw pg_dump | node sha256 > file', f(piped), '', '', f(piped), '', '', '', '', f(piped / p.rawMeanSeconds, 3), f(piped / p.rawMeanSeconds, 3)]);
  }
  process.stdout.write(table(['db size', 'run', 'total', ...stepNames, 'other', 'ratio', 'dump-step ratio'], rows) + '\n');

  process.stdout.write(`\n-- CPU seconds per run (${extra.cpus as number} CPUs; busy = whole machine; util = busy / (wall x CPUs)) --\n`);
  const cpuRows: string[][] = [];
  for (const p of points) {
    for (const { run, seconds, cpu: c } of p.sequence) {
      cpuRows.push([`${f(p.databaseBytes / GB, 2)} GB`, run, f(seconds), f(c.machineBusy, 1), `${Math.round(c.utilization * 100)}%`, f(c.postgres, 1), f(c.tools, 1), f(c.worker, 1), f(c.weed, 1), f(c.temporal, 1), f(c.bench, 1), f(c.other, 1)]);
    }
  }
  process.stdout.write(table(['db size', 'run', 'wall', 'busy', 'util', 'postgres', 'pg_dump/pg_restore', 'worker', 'weed', 'temporal', 'bench', 'other procs'], cpuRows) + '\n');

  process.stdout.write('\n-- context --\n');
  for (const p of points) {
    process.stdout.write(
      `${f(p.databaseBytes / GB, 2)} GB: ${p.rows.events.toLocaleString('en')} events + ${p.rows.accounts.toLocaleString('en')} accounts; dump ${f(p.raw[0]!.dumpBytes / MB, 1)} MB ` +
        `(${f((100 * p.raw[0]!.dumpBytes) / p.databaseBytes, 0)}% of the db size); raw pg_dump peak RSS ${f(Math.max(...p.raw.map((r) => r.pgDumpRssMB)), 1)} MB; ` +
        `count(*) of all tables alone ${f(p.rowCountSeconds)} s; worker RSS before the runs ${[...p.localRuns, ...p.s3Runs, p.localNoRowCounts].map((r) => f(r.workerRssBeforeMB, 0)).join('/')} MB\n`,
    );
  }
  const idle = extra.idleCpu as CpuUse | undefined;
  if (idle) process.stdout.write(`idle background before the runs: ${describeCpu(idle)} (per second of wall time)\n`);
  process.stdout.write(`worker startup peak RSS ${extra.workerStartupPeakRssMB as number} MB; RSS after warm-up ${extra.workerIdleRssMB as number} MB\n`);

  // Other processes competing for the CPUs make the ratios noise: say so next to the verdict.
  const noisyRuns = warnAboutNoise(points.flatMap((p) => p.sequence));

  const worstRatio = Math.max(...points.flatMap((p) => [p.ratios.local, p.ratios.s3]));
  const worstRss = Math.max(...points.map((p) => p.workerPeakRssMB));
  const rssGrowth = points.length >= 2 ? points.at(-1)!.workerPeakRssMB - points[0]!.workerPeakRssMB : 0;
  const verdict = (ok: boolean): string => (ok ? 'MET' : 'NOT MET');
  process.stdout.write('\n-- targets --\n');
  process.stdout.write(`time ratio <= ${TARGET_TIME_RATIO}: worst ${f(worstRatio, 3)} -> ${verdict(worstRatio <= TARGET_TIME_RATIO)}\n`);
  process.stdout.write(`worker peak RSS <= ${TARGET_RSS_MB} MB: worst ${f(worstRss, 1)} MB -> ${verdict(worstRss <= TARGET_RSS_MB)}\n`);
  if (points.length >= 2) {
    const growth = points.at(-1)!.databaseBytes / points[0]!.databaseBytes;
    process.stdout.write(`worker peak RSS as the database grows x${f(growth, 1)}: ${points.map((p) => `${f(p.workerPeakRssMB, 1)} MB`).join(' -> ')} (${rssGrowth >= 0 ? '+' : ''}${f(rssGrowth, 1)} MB)\n`);
  }
  const summary = {
    targets: { timeRatio: TARGET_TIME_RATIO, workerPeakRssMB: TARGET_RSS_MB },
    worstTimeRatio: worstRatio,
    worstWorkerPeakRssMB: worstRss,
    workerPeakRssGrowthMB: round(rssGrowth, 1),
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
      keep: { type: 'boolean', default: false },
      /** Rounds of raw, local, s3, raw per size point; more rounds average out a noisy machine. */
      repeat: { type: 'string', default: '1' },
      /** Write a V8 CPU profile of the worker's main thread (node --cpu-prof) into this directory. */
      'profile-worker': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench:backup [-- --size-gb N] [--repeat N] [--keep] [--profile-worker DIR]\n');
    return 0;
  }
  const sizeGB = positiveFlag('size-gb', values['size-gb']);
  const sizes = [round(sizeGB * SMALL_FRACTION, 3), sizeGB];
  const repeat = positiveFlag('repeat', values.repeat, true);

  const { add: addCleanup, cleanup } = teardownStack();

  const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-bench-'));
  let workerLog: string | undefined;
  addCleanup('work directory', async () => rmSync(workDir, { recursive: true, force: true }));
  try {
    log(`pgrunbook backup benchmark: --size-gb ${sizeGB} (points ${sizes.join(' and ')} GB), ${cpus().length} CPUs, ${mb(totalmem())} MB RAM, work dir ${workDir}`);

    log('starting PostgreSQL, SeaweedFS and the Temporal dev server ...');
    const { cluster, temporal, s3: startedS3 } = await startBenchStack(addCleanup, { s3: true });
    const s3 = startedS3!;

    await cluster.sql('CREATE DATABASE bench');

    // The worker's config: the database URL (with its password) and the S3 keys live only in the
    // worker process's environment.
    const fileConfig = {
      temporal: { address: temporal.address, namespace: 'default', taskQueue: TASK_QUEUE },
      repositories: {
        local: { type: 'local', path: join(workDir, 'repo') },
        s3: { type: 's3', bucket: s3.bucket, endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true },
      },
      databases: {
        bench: { url: '${BENCH_DATABASE_URL}' },
        'bench-nocount': { url: '${BENCH_DATABASE_URL}', dump: { rowCounts: false } },
        warmup: { url: '${BENCH_WARMUP_DATABASE_URL}' },
      },
      defaults: { repository: 'local' },
      timeouts: { heartbeatSeconds: 30 },
    };
    const config = Config.parse(fileConfig);
    mkdirSync(join(workDir, 'repo'));
    const configPath = join(workDir, 'pgrunbook.yaml');
    writeFileSync(configPath, `# written by bench/backup.ts\n${stringify(fileConfig)}`);
    const workerEnv: NodeJS.ProcessEnv = {
      ...process.env,
      BENCH_DATABASE_URL: cluster.url('bench'),
      BENCH_WARMUP_DATABASE_URL: cluster.url('warmup'),
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    };
    log('starting the worker process (node dist/client/main.js worker) ...');
    workerLog = join(workDir, 'worker.log');
    const profileDir = values['profile-worker'] ? resolve(values['profile-worker']) : undefined;
    if (profileDir) mkdirSync(profileDir, { recursive: true });
    const worker = await startWorkerProcess(configPath, workerEnv, workerLog, TASK_QUEUE, profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
    if (profileDir) addCleanup('profile note', async () => log(`worker CPU profile (written when the worker exits): ${profileDir}`));
    addCleanup('worker', () => worker.stop());
    const startupPeak = peakRssOf(worker.pid) ?? 0;
    const cpu = CpuAccounting.find(cluster);
    cpu.setWorker(worker.pid);
    const h: Harness = { client: temporal.client, config, worker, cpu };

    // Warm-up: the first workflow task starts the workflow sandbox; pay for that outside the figures.
    await runPgrunbook(h, 'warmup', 'local', 'warmup-local', 120_000);
    await runPgrunbook(h, 'warmup', 's3', 'warmup-s3', 120_000);
    const idleRss = rssOf(worker.pid) ?? 0;
    log(`  worker ready (pid ${worker.pid}): startup peak RSS ${mb(startupPeak)} MB, RSS after warm-up ${mb(idleRss)} MB`);

    const gen = await DataGenerator.create(cluster.url('bench'));
    addCleanup('generator connection', () => gen.close());
    const outDir = join(workDir, 'raw');
    mkdirSync(outDir);
    // What the idle stack (Temporal, SeaweedFS, PostgreSQL, worker) costs in CPU, per second.
    const idleBefore = cpu.read();
    await new Promise((r) => setTimeout(r, 5_000));
    const idleCpu = CpuAccounting.since(idleBefore, cpu.read(), 5);
    for (const k of ['machineBusy', 'postgres', 'tools', 'worker', 'weed', 'temporal', 'bench', 'other'] as const) idleCpu[k] = round(idleCpu[k] / 5, 2);
    log(`  idle background: ${describeCpu(idleCpu)} (per second)`);
    const points: SizePoint[] = [];
    for (const [i, size] of sizes.entries()) points.push(await measurePoint(h, cluster, gen, size, i + 1, outDir, repeat));

    report(points, {
      sizeGB,
      repeat,
      cpus: cpus().length,
      workerStartupPeakRssMB: mb(startupPeak),
      workerIdleRssMB: mb(idleRss),
      idleCpu,
    });

    await stayUpIfKept(values.keep, `worker config ${configPath}, log ${worker.logPath}, Temporal ${temporal.address}, S3 ${s3.endpoint}`);
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
