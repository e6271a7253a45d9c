import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { stringify } from 'yaml';
import { startBasebackup } from '../../client/commands/basebackup.js';
import { Config } from '../../config/schema.js';
import { runTool } from '../../process/run.js';
import type { BasebackupResult } from '../../workflows/basebackup-cluster.js';
import { statusQuery, type RunbookStatus } from '../../workflows/runbook.js';
import { PITR_CLUSTER, type PitrSetup } from '../support/pitr.js';
import type { TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';

// Shared by the point-in-time restore tests: base backups through the real workflow, waiting on
// the status query, and psql on a recovered cluster's private socket.

/** Rewrites the setup's config file (atomically: the archiving server reads it on every wal-push) and returns the parsed config. */
export function rewriteConfig(pitr: PitrSetup, change: (config: Record<string, unknown>) => void, path = pitr.configPath): Config {
  change(pitr.configObject);
  writeFileSync(`${path}.new`, stringify(pitr.configObject), { mode: 0o644 });
  renameSync(`${path}.new`, path);
  const config = Config.parse(pitr.configObject);
  if (path === pitr.configPath) pitr.config = config;
  return config;
}

/**
 * A verified base backup by the basebackupCluster workflow (an in-process worker runs it), with
 * the archive already holding WAL from before it (a segment is switched and archived first).
 */
export async function takeBaseBackup(stack: TestStack, pitr: PitrSetup): Promise<BasebackupResult> {
  await pitr.switchAndArchive();
  const { stop } = await startPitrWorker(stack, pitr);
  try {
    return await (await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result();
  } finally {
    await stop();
  }
}

/** Polls the status query until `done` holds. */
export async function waitForStatus(handle: WorkflowHandle, done: (s: RunbookStatus) => boolean, timeoutMs = 120_000): Promise<RunbookStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: RunbookStatus | undefined;
  for (;;) {
    last = await handle.query(statusQuery).catch(() => last);
    if (last && done(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting on ${handle.workflowId}; last status: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The server's clock, in UTC with microseconds: a target time that means exactly "now" to PostgreSQL. */
export async function serverNow(pitr: PitrSetup): Promise<string> {
  return (await pitr.source.sql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)).trim();
}

/** psql on a recovered cluster's private socket, as postgres (trust on the 0700 socket directory). */
export function recoveredSql(pitr: PitrSetup, socketDir: string, port: number) {
  return (query: string, database = 'app'): Promise<string> =>
    runTool(join(pitr.source.binDir, 'psql'), ['-X', '-v', 'ON_ERROR_STOP=1', '-At', '-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', database, '-c', query]);
}

/** Stops a recovered cluster left running (immediate) and removes its directory; for test clean-up. */
export async function removeRecoveredCluster(pitr: PitrSetup, dataDir: string | null): Promise<void> {
  if (!dataDir) return;
  if (existsSync(join(dataDir, 'postmaster.pid'))) {
    await runTool('runuser', ['-u', 'postgres', '--', join(pitr.source.binDir, 'pg_ctl'), '-D', dataDir, '-m', 'immediate', 'stop']).catch(() => undefined);
  }
  rmSync(join(dataDir, '..'), { recursive: true, force: true });
}
