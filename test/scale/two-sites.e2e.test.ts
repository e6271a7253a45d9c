import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import type proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorkerProcess, type WorkerProcess } from '../../bench/worker-process.js';
import { startBackup } from '../../client/backup.js';
import { startFleetBackup } from '../../client/fleet.js';
import type { Config } from '../../config/schema.js';
import { registerSecret } from '../../process/secrets.js';
import { freePort } from '../../stack/ports.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { runCli } from '../support/cli.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// Two sites, each a PostgreSQL server with its own task queue and its own `pgrunbook worker`
// process, which holds only its own site's credentials. One config names both. A fleet over
// both sites, and a single backup, must run every workflow task and every step of a database on
// its own site's worker; each server's globals are dumped by its own site's worker.

type HistoryEvent = proto.temporal.api.history.v1.IHistoryEvent;

let stack: TestStack;
let siteB: PostgresCluster;
let config: Config;
let configPath: string;
let workerA: WorkerProcess;
let workerB: WorkerProcess;
let queues: { control: string; a: string; b: string };
let siteDatabases: Record<string, object>;

beforeAll(async () => {
  [stack, siteB] = await Promise.all([startTestStack(), startPostgresCluster()]);
  registerSecret(siteB.password);
  for (const [cluster, names] of [[stack.cluster, ['alpha_1', 'alpha_2']], [siteB, ['beta_1', 'beta_2']]] as const) {
    for (const name of names) {
      await cluster.sql(`CREATE DATABASE ${name}`);
      await cluster.sql(`CREATE TABLE items AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 5000) g`, name);
    }
  }
  const control = stack.configObject({}).temporal as { taskQueue: string };
  queues = { control: control.taskQueue, a: `${control.taskQueue}-site-a`, b: `${control.taskQueue}-site-b` };
  const at = (cluster: PostgresCluster, dbname: string, passwordEnv: string, taskQueue: string) => ({ host: cluster.host, port: cluster.port, user: 'postgres', dbname, passwordEnv, taskQueue, labels: { estate: 'both' } });
  const databases = {
    'alpha-1': at(stack.cluster, 'alpha_1', 'SITE_A_PASSWORD', queues.a),
    'alpha-2': at(stack.cluster, 'alpha_2', 'SITE_A_PASSWORD', queues.a),
    'beta-1': at(siteB, 'beta_1', 'SITE_B_PASSWORD', queues.b),
    'beta-2': at(siteB, 'beta_2', 'SITE_B_PASSWORD', queues.b),
  };
  siteDatabases = databases;
  config = stack.config(databases);
  configPath = stack.writeConfig(databases);
  // Each site's worker gets its own site's password only: it must start without the other's.
  const base = { ...process.env };
  const logs = mkdtempSync(join(tmpdir(), 'pgrunbook-sites-'));
  [workerA, workerB] = await Promise.all([
    startWorkerProcess(configPath, { ...base, SITE_A_PASSWORD: stack.cluster.password }, join(logs, 'site-a.log'), queues.control, [], ['--task-queue', queues.control, '--task-queue', queues.a]),
    startWorkerProcess(configPath, { ...base, SITE_B_PASSWORD: siteB.password }, join(logs, 'site-b.log'), queues.b, [], ['--task-queue', queues.b]),
  ]);
}, 180_000);

afterAll(async () => {
  await Promise.allSettled([workerA?.stop(), workerB?.stop()]);
  await Promise.allSettled([siteB?.stop(), stack?.teardown()]);
});

const pidOf = (identity: string | null | undefined): number => Number(identity?.split('@')[0]);

async function historyOf(client: Client, workflowId: string): Promise<HistoryEvent[]> {
  return (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
}

/** Who ran each workflow task and each step (activity type → worker pids) of a workflow. */
function whoRan(events: HistoryEvent[]): { workflowTasks: Set<number>; steps: Map<string, Set<number>> } {
  const scheduled = new Map<string, string>();
  const workflowTasks = new Set<number>();
  const steps = new Map<string, Set<number>>();
  for (const event of events) {
    if (event.activityTaskScheduledEventAttributes) scheduled.set(String(event.eventId), event.activityTaskScheduledEventAttributes.activityType?.name ?? '?');
    if (event.workflowTaskStartedEventAttributes) workflowTasks.add(pidOf(event.workflowTaskStartedEventAttributes.identity));
    const started = event.activityTaskStartedEventAttributes;
    if (started) {
      const type = scheduled.get(String(started.scheduledEventId)) ?? '?';
      steps.set(type, (steps.get(type) ?? new Set()).add(pidOf(started.identity)));
    }
  }
  return { workflowTasks, steps };
}

describe('two sites: a task queue and a worker each', () => {
  it("runs each database's workflow and every step on its own site's worker, and each server's globals there too", async () => {
    const handle = await startFleetBackup(stack.client, config, { select: { labels: { estate: 'both' } }, requestedBy: 'cli' });
    const result = await handle.result();
    expect(result.failed).toBe(0);
    expect(result.databases.map((d) => [d.database, d.taskQueue, d.status])).toEqual([
      ['alpha-1', queues.a, 'succeeded'],
      ['alpha-2', queues.a, 'succeeded'],
      ['beta-1', queues.b, 'succeeded'],
      ['beta-2', queues.b, 'succeeded'],
    ]);
    const siteWorker = { [queues.a]: workerA.pid, [queues.b]: workerB.pid };

    for (const outcome of result.databases) {
      const description = await stack.client.workflow.getHandle(outcome.workflowId).describe();
      expect(description.taskQueue).toBe(outcome.taskQueue);
      const ran = whoRan(await historyOf(stack.client, outcome.workflowId));
      expect([...ran.workflowTasks]).toEqual([siteWorker[outcome.taskQueue]]);
      expect([...ran.steps.keys()]).toEqual(expect.arrayContaining(['planBackup', 'probeDatabase', 'dumpDatabase', 'verifyBackup']));
      for (const [step, pids] of ran.steps) expect([step, ...pids]).toEqual([step, siteWorker[outcome.taskQueue]]);
    }

    // The fleet itself ran on the control queue (site A's worker polls it); each server's
    // globals on the site of the database they went through.
    expect(result.globals.map((g) => [g.server, g.taskQueue, g.status])).toEqual([
      [`${stack.cluster.host}:${stack.cluster.port}`, queues.a, 'succeeded'],
      [`${siteB.host}:${siteB.port}`, queues.b, 'succeeded'],
    ]);
    const fleetHistory = await historyOf(stack.client, handle.workflowId);
    const fleetRan = whoRan(fleetHistory);
    expect([...fleetRan.workflowTasks]).toEqual([workerA.pid]);
    expect([...fleetRan.steps.get('resolveFleet')!]).toEqual([workerA.pid]);
    expect([...fleetRan.steps.get('backupGlobals')!].sort()).toEqual([workerA.pid, workerB.pid].sort());
    const globalsQueues = fleetHistory.flatMap((e) => (e.activityTaskScheduledEventAttributes?.activityType?.name === 'backupGlobals' ? [e.activityTaskScheduledEventAttributes.taskQueue?.name] : []));
    expect(globalsQueues.sort()).toEqual([queues.a, queues.b].sort());
  }, 300_000);

  it("starts a single database's backup on its site's task queue", async () => {
    const handle = await startBackup(stack.client, config, { database: 'beta-2' });
    const result = await handle.result();
    expect(result.status).toBe('verified');
    expect((await handle.describe()).taskQueue).toBe(queues.b);
    const ran = whoRan(await historyOf(stack.client, handle.workflowId));
    expect([...ran.workflowTasks]).toEqual([workerB.pid]);
    for (const pids of ran.steps.values()) expect([...pids]).toEqual([workerB.pid]);
  }, 120_000);

  it('refuses a worker for a task queue the config does not name, before connecting', async () => {
    const refused = await runCli(['worker', '--task-queue', 'site-c', '--config', configPath], process.env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--task-queue: task queue "site-c" is neither temporal.taskQueue nor any database\'s taskQueue');
    expect(refused.stderr).toContain(`HINT: task queues in this config: ${queues.control}, ${queues.a}, ${queues.b}`);
  });

  it("a site's worker exports only its own databases' metrics", async () => {
    const port = await freePort();
    const withMetrics = stack.writeConfig(siteDatabases, { metrics: { enabled: true, host: '127.0.0.1', port, temporalRuntime: false } });
    const logs = mkdtempSync(join(tmpdir(), 'pgrunbook-sites-metrics-'));
    const worker = await startWorkerProcess(withMetrics, { ...process.env, SITE_B_PASSWORD: siteB.password }, join(logs, 'site-b-metrics.log'), queues.b, [], ['--task-queue', queues.b]);
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const databases = [...new Set([...text.matchAll(/database="([^"]+)"/g)].map((m) => m[1]))].sort();
      expect(databases).toEqual(['beta-1', 'beta-2']);
    } finally {
      await worker.stop();
    }
  }, 120_000);
});

