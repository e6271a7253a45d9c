import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startDrill } from '../../client/drill.js';
import { projectRoot } from '../../stack/binaries.js';
import type { DrillResult } from '../../workflows/restore-drill.js';
import { statusQuery } from '../../workflows/runbook.js';
import { removeDrillCluster } from '../../postgres/drill-cluster.js';
import { freezeAfterRead, processesMatching } from '../support/processes.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// kill -9 of the worker process while a drill restores into its throwaway cluster: the cluster
// outlives the worker (it is its own process tree), a new worker picks the drill up after the
// heartbeat timeout, restores again into the same cluster, passes, and tears everything down.

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  // ~40 MB of poorly compressible rows, so pg_restore runs long enough to be caught mid-way.
  await stack.cluster.sql("CREATE TABLE public.bulk AS SELECT g AS id, encode(gen_random_bytes(700), 'base64') AS payload FROM generate_series(1, 50000) g", 'app');
});

afterAll(async () => {
  // A test that failed mid-drill (its Temporal server gone with it) may leave a running cluster: stop it too.
  for (const name of readdirSync(clustersParent)) await removeDrillCluster(join(clustersParent, name)).catch(() => undefined);
  rmSync(clustersParent, { recursive: true, force: true });
  await stack?.teardown();
});

/** Processes of a drill cluster: its postmaster names the cluster directory in its argv. */
/** This file's drill clusters live under their own directory, apart from other test files' drills. */
// (In the OS temp dir, not the stack's 0700 work dir: the server runs as postgres and must reach it.)
const clustersParent = mkdtempSync(join(tmpdir(), 'pgrunbook-test-drills-'));
chmodSync(clustersParent, 0o755);
const clustersDir = (): string => clustersParent;
const drillClusterProcesses = (): number[] => processesMatching(new RegExp(`${clustersDir()}/pgrunbook-drill-`));
const drillRestorePids = (): number[] => processesMatching(/(^|\/)pg_restore\0/, (env) => env.some((v) => v.startsWith(`PGHOST=${clustersDir()}/pgrunbook-drill-`)));

describe('a worker killed with SIGKILL during a drill', () => {
  it('throwaway cluster, during pg_restore: a new worker restores again into the same cluster, the drill passes, and nothing is left', async () => {
    const databases = { app: { url: stack.databaseUrl('app'), repository: 'local', drill: { jobs: 2, target: { type: 'cluster', dir: clustersDir() } } } };
    const config = stack.config(databases);
    const configFile = stack.writeConfig(databases);
    const start = (): ChildProcess => spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configFile], { env: stack.workerEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    let worker = start();
    try {
      await (await startBackup(stack.client, config, { database: 'app' })).result();
      const handle = await startDrill(stack.client, config, { database: 'app' });
      const frozen = await freezeAfterRead('pg_restore into a drill cluster', drillRestorePids, 8 * 1024 * 1024);
      const clusters = readdirSync(clustersDir()).filter((n) => n.startsWith('pgrunbook-drill-app-'));
      expect(clusters).toHaveLength(1);
      worker.kill('SIGKILL');
      await new Promise((r) => worker.once('exit', r));
      for (const pid of frozen) process.kill(pid, 'SIGKILL');
      // The cluster survives its worker: the postmaster is not the worker's child.
      expect(drillClusterProcesses().length).toBeGreaterThan(0);
      worker = start();

      const result: DrillResult = await handle.result();
      expect(result.report).toMatchObject({ outcome: 'passed', restore_success: true, teardown: { state: 'done' } });
      expect(result.report.row_counts_after).toEqual(result.report.row_counts_before);
      expect(result.report.row_counts_after!['public.bulk']).toBe(50000);
      const status = await handle.query(statusQuery);
      expect(status.finished.filter((s) => s.step === 'provision').map((s) => s.outcome)).toEqual(['ok']);
      expect(status.finished.filter((s) => s.step === 'restore').map((s) => s.outcome)).toEqual(['ok']);
      const history = await handle.fetchHistory();
      const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => Number(e.activityTaskStartedEventAttributes!.attempt));
      expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);

      // Torn down: no directory, no server process, no socket.
      expect(readdirSync(clustersDir())).toEqual([]);
      expect(drillClusterProcesses()).toEqual([]);
      expect(readFileSync('/proc/net/unix', 'utf8')).not.toContain(`${clustersDir()}/pgrunbook-drill-`);
    } finally {
      worker.kill('SIGKILL');
    }
  });
});
