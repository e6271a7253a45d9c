import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startPitr } from '../../client/pitr.js';
import type { Config } from '../../config/schema.js';
import { formatLsn, parseWalFileName } from '../../pitr/wal-names.js';
import { demoAppCommandConfig } from '../../stack/demo-app.js';
import { freePort } from '../../stack/ports.js';
import { statusQuery } from '../../workflows/runbook.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';
import { rewriteConfig, serverNow, takeBaseBackup, waitForStatus } from './pitr-support.js';

// pointInTimeRestore mode "replace": the cluster itself goes back to T behind the approval gate,
// with its application scaled down, its server stopped and its data directory moved aside (never
// deleted). A replace that fails after the move puts the old data directory back and the server
// and the application run again as before.

let stack: TestStack;
let pitr: PitrSetup;
let appDir: string;
let app: ReturnType<typeof demoAppCommandConfig>;
let t: string;
const APP_URL_ENV = `TEST_PITR_APP_URL_${process.pid}`;

const appRunning = (): boolean => {
  const pidFile = join(appDir, 'app.pid');
  if (!existsSync(pidFile)) return false;
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 0);
    return true;
  } catch {
    return false;
  }
};

beforeAll(async () => {
  stack = await startTestStack();
  appDir = mkdtempSync(join(tmpdir(), 'pgrunbook-pitr-app-'));
  app = demoAppCommandConfig({ pidFile: join(appDir, 'app.pid'), port: await freePort(), urlEnv: APP_URL_ENV, connections: 2 });
  pitr = await startArchivingCluster(stack, { database: { restore: { approval: { required: true }, onStepFailure: 'ask' }, app } });
  pitr.env[APP_URL_ENV] = pitr.source.url('app');
  // The worker runs on the database host: it knows the live data directory.
  rewriteConfig(pitr, (c) => {
    (c.clusters as Record<string, Record<string, unknown>>)[PITR_CLUSTER]!.dataDirectory = pitr.source.dataDir;
  });
  await execa('/bin/sh', ['-c', app.start], { env: pitr.env });

  await pitr.source.sql('CREATE TABLE organizations (id int PRIMARY KEY, name text NOT NULL); INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'app');
  await takeBaseBackup(stack, pitr);
  await pitr.source.sql('INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(101, 150) g', 'app');
  t = await serverNow(pitr);
  await pitr.source.sql('DELETE FROM organizations', 'app');
  await pitr.source.sql('CREATE TABLE written_after_t AS SELECT g AS id FROM generate_series(1, 10) g', 'app');
  await pitr.switchAndArchive();
});

afterAll(async () => {
  if (app) await execa('/bin/sh', ['-c', app.stop], { env: pitr?.env ?? process.env }).catch(() => undefined);
  await pitr?.stop();
  await stack?.teardown();
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

/** The live cluster as the application sees it: through its own port and password. */
const live = (query: string): Promise<string> => pitr.source.sql(query, 'app');

async function withWorker<T>(config: Config, run: () => Promise<T>): Promise<T> {
  const { stop } = await startPitrWorker(stack, pitr, { config });
  try {
    return await run();
  } finally {
    await stop();
  }
}

describe('pointInTimeRestore mode replace', () => {
  it('recovery that cannot reach its target after the data directory was moved aside: abort puts the old data directory back; server and app run as before', async () => {
    // An LSN inside the last archived segment, past its last record: resolve accepts it, replay runs out of WAL first.
    const segment = await pitr.switchAndArchive();
    const unreachable = formatLsn((parseWalFileName(segment)!.segment! + 1n) * 16n * 1024n * 1024n - 8n);
    const before = await live('SELECT count(*) FROM written_after_t');

    await withWorker(pitr.config, async () => {
      const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { lsn: unreachable }, mode: 'replace', approval: 'skip' });
      onTestFinished(async () => {
        await handle.terminate('test cleanup').catch(() => undefined);
      });
      const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'recover' || s.state !== 'running');
      expect(waiting.pendingDecision?.error).toMatch(/^recovery ended before reaching LSN [0-9A-F/]+: the archived WAL stops before it/);
      expect(waiting.pendingDecision?.options).toEqual(['retry', 'abort']);
      const aside = String(waiting.details.movedAside);
      expect(aside).toMatch(new RegExp(`^${pitr.source.dataDir}\\.pre-pitr-\\d{14}$`));
      expect(existsSync(join(aside, 'PG_VERSION'))).toBe(true);
      expect(appRunning()).toBe(false);

      const aborted = await pitr.cli(['step', 'abort', handle.workflowId, '--reason', 'wrong target']);
      expect(aborted.code, aborted.stderr).toBe(0);
      const failure = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      expect(failure.cause?.message).toMatch(/^aborted by .* at step recover \(wrong target\)/);

      const status = await handle.query(statusQuery);
      expect(status.undo).toEqual([
        { name: 'scale-up', state: 'done' },
        { name: 'start-server', state: 'done' },
        { name: 'move-back', state: 'done' },
      ]);
      expect(status.finished.filter((s) => s.step.startsWith('undo:')).map((s) => s.step)).toEqual(['undo:move-back', 'undo:start-server', 'undo:scale-up']);
      expect(existsSync(aside)).toBe(false);
    });
    // The cluster as it was: the DELETE and the writes after T still there, writable, app up.
    expect(await live('SELECT count(*) FROM organizations')).toBe('0');
    expect(await live('SELECT count(*) FROM written_after_t')).toBe(before);
    expect(await live('SELECT pg_is_in_recovery()')).toBe('f');
    expect(appRunning()).toBe(true);
  });

  it('recovers the cluster itself to T after approval: the live port serves the data of T, the old data directory is kept aside, the app is back', async () => {
    await withWorker(pitr.config, async () => {
      const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: t }, mode: 'replace' });
      onTestFinished(async () => {
        await handle.terminate('test cleanup').catch(() => undefined);
      });
      const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'approval' || s.state !== 'running');
      expect(waiting.waitingFor).toContain(`approval to replace cluster main's data`);
      // Nothing changed yet.
      expect(appRunning()).toBe(true);
      expect(await live('SELECT count(*) FROM organizations')).toBe('0');

      const approved = await pitr.cli(['approve', handle.workflowId, '--reason', 'DELETE FROM organizations at T']);
      expect(approved.code, approved.stderr).toBe(0);
      const result = await handle.result();
      expect(result).toMatchObject({ outcome: 'replaced', mode: 'replace', dataDir: pitr.source.dataDir, port: null });
      expect(result.movedAside).toMatch(new RegExp(`^${pitr.source.dataDir}\\.pre-pitr-\\d{14}$`));
      expect(existsSync(join(result.movedAside!, 'PG_VERSION'))).toBe(true);
      expect(result.verification?.rowCounts['public.organizations']).toBe(150);
      const status = await handle.query(statusQuery);
      expect(status.finished.map((s) => s.step)).toEqual(['resolve', 'approval', 'scale-down', 'stop-server', 'move-aside', 'extract', 'configure', 'start', 'recover', 'verify', 'scale-up', 'health', 'report', 'notify']);
      // The recovery settings did their job and are gone from the live cluster's config.
      expect(readFileSync(join(pitr.source.dataDir, 'postgresql.auto.conf'), 'utf8')).not.toContain('restore_command');
    });
    expect(await live('SELECT count(*) FROM organizations')).toBe('150');
    expect(await live("SELECT to_regclass('written_after_t') IS NULL")).toBe('t');
    expect(await live('SELECT pg_is_in_recovery()')).toBe('f');
    await live("INSERT INTO organizations VALUES (5000, 'after the recovery')");
    expect(appRunning()).toBe(true);
  });
});
