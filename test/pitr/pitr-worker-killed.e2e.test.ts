import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startPitr } from '../../client/pitr.js';
import { decideApproval } from '../../client/restore.js';
import { runTool } from '../../process/run.js';
import { projectRoot } from '../../stack/binaries.js';
import { statusQuery } from '../../workflows/runbook.js';
import { freezeAfterRead, processesMatching, procStat, withKillableWorker } from '../support/processes.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { recoveredSql, rewriteConfig, serverNow, takeBaseBackup, waitForStatus } from './pitr-support.js';

// kill -9 of the worker process while a point-in-time restore extracts the base backup, and
// while it waits for recovery; a new worker process takes over after the heartbeat timeout and
// the recovered cluster still holds exactly the data of the target.

let stack: TestStack;
let pitr: PitrSetup;
/** A second config: restore_command through a wal-fetch that takes its time, so recovery can be caught mid-way. */
let slowConfigPath: string;
const BULK_ROWS = 150_000;

beforeAll(async () => {
  stack = await startTestStack();
  pitr = await startArchivingCluster(stack);
  // ~100 MB in the base backup, so extraction runs long enough to be caught mid-way.
  await pitr.source.sql(`CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 20) AS payload FROM generate_series(1, ${BULK_ROWS}) g`, 'app');
  await pitr.source.sql('CREATE TABLE organizations (id int PRIMARY KEY, name text NOT NULL); INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'app');
  await takeBaseBackup(stack, pitr);

  const slowFetch = join(pitr.dir, 'slow-wal-fetch.sh');
  writeFileSync(slowFetch, `#!/bin/sh\nsleep 0.4\nexec '${process.execPath}' '${join(projectRoot, 'dist', 'client', 'main.js')}' wal-fetch "$@"\n`, { mode: 0o755 });
  slowConfigPath = join(pitr.dir, 'pgrunbook-slow-fetch.yaml');
  const original = JSON.parse(JSON.stringify(pitr.configObject)) as Record<string, unknown>;
  rewriteConfig(pitr, (c) => {
    const cluster = (c.clusters as Record<string, Record<string, unknown>>)[PITR_CLUSTER]!;
    cluster.restore = { ...(cluster.restore as object), walFetchCommand: slowFetch };
  }, slowConfigPath);
  Object.assign(pitr.configObject, original);
});

afterAll(async () => {
  for (const pid of processesMatching(new RegExp(`postgres\\0-D\\0${escape(join(pitr?.dir ?? '/nonexistent', 'restores'))}`))) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await pitr?.stop();
  await stack?.teardown();
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function activityAttempts(handle: WorkflowHandle, activity: string): Promise<number> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = new Set(events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activity).map((e) => String(e.eventId)));
  return Math.max(0, ...events.filter((e) => e.activityTaskStartedEventAttributes && scheduled.has(String(e.activityTaskStartedEventAttributes.scheduledEventId))).map((e) => Number(e.activityTaskStartedEventAttributes!.attempt)));
}

async function stopRecovered(dataDir: string): Promise<void> {
  if (existsSync(join(dataDir, 'postmaster.pid'))) await runTool('runuser', ['-u', 'postgres', '--', join(pitr.source.binDir, 'pg_ctl'), '-D', dataDir, '-m', 'immediate', 'stop']).catch(() => undefined);
}

describe('a worker killed with SIGKILL during a point-in-time restore', () => {
  it('during extract: a new worker wipes the half-extracted directory, extracts again, and the recovered cluster holds the data of T', async () => {
    await pitr.source.sql('INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(101, 150) g', 'app');
    const t = await serverNow(pitr);
    await pitr.source.sql('DELETE FROM organizations; DELETE FROM bulk WHERE id % 2 = 0', 'app');
    await pitr.switchAndArchive();

    await withKillableWorker(pitr.configPath, pitr.env, async (kill, restart) => {
      const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: t } });
      onTestFinished(async () => {
        await handle.terminate('test cleanup').catch(() => undefined);
      });
      const tarOf = new RegExp(`^tar\\0-x\\0-f\\0-\\0-C\\0${escape(join(pitr.dir, 'restores'))}/`);
      const frozen = await freezeAfterRead('tar', () => processesMatching(tarOf), 20 * 1024 * 1024);
      expect((await handle.query(statusQuery)).currentStep).toBe('extract');
      // As root, tar runs under `runuser`, which stops itself when its child stops: it goes too,
      // or it would stay behind stopped, holding tar's zombie, after the test.
      const runusers = frozen.map((pid) => procStat(pid)?.ppid).filter((ppid): ppid is number => ppid !== undefined && procStat(ppid)?.comm === 'runuser');
      await kill();
      for (const pid of [...frozen, ...runusers]) process.kill(pid, 'SIGKILL');
      restart();

      const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running', 180_000);
      expect(waiting.finished.filter((s) => s.step === 'extract').map((s) => s.outcome)).toEqual(['ok']);
      expect(await activityAttempts(handle, 'extractPitrBase')).toBeGreaterThanOrEqual(2);
      const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
      expect(await sql('SELECT count(*) FROM organizations')).toBe('150');
      expect(await sql('SELECT count(*) FROM bulk')).toBe(String(BULK_ROWS));

      await decideApproval(stack.client, handle.workflowId, 'approve');
      const result = await handle.result();
      expect(result.outcome).toBe('promoted');
      await stopRecovered(result.dataDir);
    });
  });

  it('during recover: the recovering server keeps replaying without a worker; a new worker just watches it reach the target', async () => {
    // Enough archived segments that recovery through the slow wal-fetch takes a while.
    for (let batch = 1; batch <= 20; batch++) {
      await pitr.source.sql(`INSERT INTO organizations SELECT g, 'batch ${batch}' FROM generate_series(${batch * 1000}, ${batch * 1000 + 9}) g`, 'app');
      await pitr.switchAndArchive();
    }
    const t = await serverNow(pitr);
    await pitr.source.sql("INSERT INTO organizations VALUES (999999, 'after the target')", 'app');
    await pitr.switchAndArchive();

    await withKillableWorker(slowConfigPath, pitr.env, async (kill, restart) => {
      const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: t } });
      onTestFinished(async () => {
        await handle.terminate('test cleanup').catch(() => undefined);
      });
      const recovering = await waitForStatus(handle, (s) => (s.currentStep === 'recover' && typeof s.details.recovery === 'string') || s.state !== 'running', 180_000);
      expect(String(recovering.details.recovery)).toMatch(/\(replaying\)$/);
      await kill();
      // Nobody watches, the server replays on.
      const dataDir = String(recovering.details.dataDir);
      expect(existsSync(join(dataDir, 'postmaster.pid'))).toBe(true);
      restart();

      const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running', 240_000);
      expect(waiting.finished.filter((s) => s.step === 'recover').map((s) => s.outcome)).toEqual(['ok']);
      expect(await activityAttempts(handle, 'waitForRecovery')).toBeGreaterThanOrEqual(2);
      const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
      expect(await sql('SELECT count(*) FROM organizations')).toBe('200');
      expect(await sql('SELECT count(*) FROM organizations WHERE id = 999999')).toBe('0');

      const discarded = await pitr.cli(['pitr', 'discard', handle.workflowId, '--reason', 'test done']);
      expect(discarded.code, discarded.stderr).toBe(0);
      expect((await handle.result()).outcome).toBe('discarded');
      expect(existsSync(dataDir)).toBe(false);
    });
  });
});
