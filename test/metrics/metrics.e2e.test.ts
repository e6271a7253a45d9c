import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startBackup } from '../../client/backup.js';
import { startDrill } from '../../client/drill.js';
import { startRestore } from '../../client/restore.js';
import type { Config } from '../../config/schema.js';
import { removeDrillCluster } from '../../postgres/drill-cluster.js';
import { projectRoot } from '../../stack/binaries.js';
import { freePort } from '../../stack/ports.js';
import { METRIC } from '../../worker/metrics.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// The worker's Prometheus endpoint end to end: a real `pgrunbook worker` process (the path
// `pgrunbook worker` and `pgrunbook dev` take, Temporal runtime metrics included) runs a real
// backup, a real failed backup, a real test restore and a real drill; /metrics is scraped over
// HTTP after each. Then the worker is restarted and must read its last successes back from the
// repository.

let stack: TestStack;
let config: Config;
let configFile: string;
let metricsUrl: string;
const clustersParent = mkdtempSync(join(tmpdir(), 'pgrunbook-test-metrics-drills-'));
chmodSync(clustersParent, 0o755);

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}`;
  const databases = {
    app: { url: stack.databaseUrl('app'), drill: { target: { type: 'cluster', dir: clustersParent } } },
    // Configured, but the database does not exist: its backups fail at the probe.
    gone: { url: stack.databaseUrl('gone_database') },
  };
  const overrides = { metrics: { enabled: true, host: '127.0.0.1', port } };
  config = stack.config(databases, overrides);
  configFile = stack.writeConfig(databases, overrides);
});

afterAll(async () => {
  for (const name of readdirSync(clustersParent)) await removeDrillCluster(join(clustersParent, name)).catch(() => undefined);
  rmSync(clustersParent, { recursive: true, force: true });
  await stack?.teardown();
});

/** One exposition line per sample: name, labels, value. */
interface Sample { name: string; labels: Record<string, string>; value: number }

function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

async function scrape(): Promise<{ text: string; samples: Sample[]; contentType: string | null }> {
  const response = await fetch(`${metricsUrl}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();
  return { text, samples: parseExposition(text), contentType: response.headers.get('content-type') };
}

function value(samples: Sample[], name: string, database: string): number | undefined {
  return samples.find((s) => s.name === name && s.labels.database === database)?.value;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const result = await probe();
      if (result !== undefined && result !== false) return result;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
}

function startWorkerProcess(): ChildProcess {
  return spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configFile], { env: stack.workerEnv, stdio: ['ignore', 'ignore', 'inherit'] });
}

async function stopWorkerProcess(worker: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
  worker.kill('SIGTERM');
  return exited;
}

/** `promtool check metrics` on an exposition page: exit code 1 is a parse error, 3 lint problems only. */
async function promtoolCheckMetrics(text: string): Promise<{ exitCode: number | null; output: string }> {
  const child = spawn('/usr/bin/promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  child.stdin!.end(text);
  const exitCode = await new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  return { exitCode, output };
}

async function portIsClosed(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname).once('connect', () => {
      socket.destroy();
      resolve(false);
    }).once('error', () => resolve(true));
  });
}

describe('the worker\'s /metrics', () => {
  it('reports real backups, failures, a restore and a drill; a restarted worker reads its last successes back from the repository', async () => {
    let worker = startWorkerProcess();
    try {
      // Up and serving, before any runbook ran: "never" (0) for last successes, failure counters at 0.
      const health = await waitFor('/healthz', async () => {
        const r = await fetch(`${metricsUrl}/healthz`);
        return r.status === 200 ? ((await r.json()) as { worker: string }) : undefined;
      });
      expect(health).toEqual({ worker: 'RUNNING' });
      // A second worker with the same metrics port refuses to start, saying why.
      const second = spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configFile], { env: stack.workerEnv, stdio: ['ignore', 'ignore', 'pipe'] });
      let secondStderr = '';
      second.stderr!.on('data', (c: Buffer) => (secondStderr += c.toString()));
      expect(await new Promise((r) => second.once('close', r))).not.toBe(0);
      expect(secondStderr).toContain(`metrics: cannot listen on 127.0.0.1:${new URL(metricsUrl).port}: EADDRINUSE`);
      const initial = await waitFor('the seeded gauges', async () => {
        const { samples } = await scrape();
        return value(samples, METRIC.backupLastSuccess, 'app') !== undefined ? samples : undefined;
      });
      expect(value(initial, METRIC.backupLastSuccess, 'app')).toBe(0);
      expect(value(initial, METRIC.drillLastRun, 'app')).toBe(0);
      expect(value(initial, METRIC.backupFailures, 'gone')).toBe(0);
      expect(value(initial, METRIC.backupSize, 'app')).toBeUndefined();

      // A real backup.
      const backup = await (await startBackup(stack.client, config, { database: 'app' })).result();
      const first = await scrape();
      expect(first.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
      let { text, samples } = first;
      expect(text).toContain(`# TYPE ${METRIC.backupLastSuccess} gauge`);
      const lastSuccess = value(samples, METRIC.backupLastSuccess, 'app')!;
      expect(Math.abs(lastSuccess - Date.now() / 1000)).toBeLessThan(60);
      expect(value(samples, METRIC.backupSize, 'app')).toBe(backup.size);
      expect(value(samples, METRIC.backupDuration, 'app')).toBeGreaterThan(0);
      expect(value(samples, METRIC.backupDuration, 'app')).toBeLessThanOrEqual(backup.durationSeconds);
      expect(value(samples, METRIC.backupFailures, 'app')).toBe(0);

      // A real failed backup (the database does not exist) is counted; it is no success.
      const failed = await startBackup(stack.client, config, { database: 'gone' });
      await expect(failed.result()).rejects.toBeInstanceOf(WorkflowFailedError);
      ({ samples } = await scrape());
      expect(value(samples, METRIC.backupFailures, 'gone')).toBe(1);
      expect(value(samples, METRIC.backupLastSuccess, 'gone')).toBe(0);

      // A real test restore under another name: a completed restore, no application downtime.
      const restore = await (await startRestore(stack.client, config, { database: 'app', backup: backup.backupId, targetDatabase: 'app_metrics_copy' })).result();
      ({ samples } = await scrape());
      expect(Math.abs(value(samples, METRIC.restoreLastSuccess, 'app')! - Date.now() / 1000)).toBeLessThan(60);
      expect(value(samples, METRIC.restoreDuration, 'app')).toBeGreaterThan(0);
      expect(value(samples, METRIC.restoreDuration, 'app')).toBeLessThanOrEqual(restore.durationSeconds);
      expect(value(samples, METRIC.restoreDowntime, 'app')).toBeUndefined();

      // A real drill into a throwaway cluster.
      const { report } = await (await startDrill(stack.client, config, { database: 'app' })).result();
      expect(report.outcome).toBe('passed');
      ({ text, samples } = await scrape());
      expect(value(samples, METRIC.drillLastResult, 'app')).toBe(1);
      expect(value(samples, METRIC.drillRto, 'app')).toBeGreaterThan(0);
      expect(value(samples, METRIC.drillRto, 'app')).toBe(report.rto_seconds);
      expect(value(samples, METRIC.drillRpo, 'app')).toBe(report.rpo_seconds);
      expect(value(samples, METRIC.drillLastRun, 'app')).toBe(Date.parse(report.finished_at) / 1000);
      expect(value(samples, METRIC.drillLastSuccess, 'app')).toBe(Date.parse(report.finished_at) / 1000);
      expect(value(samples, METRIC.drillFailures, 'app')).toBe(0);

      // The Temporal SDK's runtime metrics are on the same endpoint, and so are the process's.
      expect(samples.some((s) => s.name.startsWith('temporal_'))).toBe(true);
      expect(text).toMatch(/^temporal_worker_task_slots_available\{/m);
      expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
      // The merged page parses for Prometheus' own tool (no family twice); its only lint
      // complaints are about prom-client's nodejs_* defaults, none about ours or Temporal's.
      const checked = await promtoolCheckMetrics(text);
      expect(checked.exitCode === 0 || checked.exitCode === 3, checked.output).toBe(true);
      expect(checked.output.split('\n').filter((l) => l.trim() && !l.startsWith('nodejs_'))).toEqual([]);
      const before = samples;

      // Restart: a new worker process, a new registry. The last successes come back from the
      // repository; counters count what this process saw, from 0.
      expect(await stopWorkerProcess(worker)).toBe(0);
      expect(await portIsClosed(metricsUrl)).toBe(true);
      worker = startWorkerProcess();
      const seeded = await waitFor('the restarted worker\'s seeded gauges', async () => {
        const { samples } = await scrape();
        return value(samples, METRIC.drillLastResult, 'app') !== undefined ? samples : undefined;
      });
      for (const name of [METRIC.backupLastSuccess, METRIC.backupSize, METRIC.backupDuration, METRIC.restoreLastSuccess, METRIC.restoreDuration, METRIC.drillLastRun, METRIC.drillLastSuccess, METRIC.drillLastResult, METRIC.drillRto, METRIC.drillRpo]) {
        expect(value(seeded, name, 'app'), name).toBe(value(before, name, 'app'));
      }
      expect(value(seeded, METRIC.backupLastSuccess, 'gone')).toBe(0);
      expect(value(seeded, METRIC.backupFailures, 'gone')).toBe(0);
    } finally {
      if (worker.exitCode === null) await stopWorkerProcess(worker);
    }
  });
});
