import { Client, WorkflowFailedError } from '@temporalio/client';
import { hostname, userInfo } from 'node:os';
import type { LoadedConfig } from '../../config/load.js';
import { defaultRepositoryId } from '../../config/schema.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { listDrillReports, type DrillReport } from '../../repository/reports.js';
import type { DrillResult } from '../../workflows/restore-drill.js';
import { describeProgress, follow } from '../backup.js';
import { describeDrillReport, startDrill } from '../drill.js';
import { connectClient } from '../temporal-connection.js';
import { EXIT, UsageError, type Output } from '../output.js';
import { clientDataConverter } from '../../encryption/payload-codec.js';

const DRILL_USAGE = 'pgrunbook drill --database ID [--backup ID|latest] [--repository R] [--canary|--no-canary] [--wait]';

/** `pgrunbook drill`: starts runRestoreDrill; --wait follows it and prints the report's summary. */
export async function drillCommand(loaded: LoadedConfig, out: Output, flags: { database?: string; backup?: string; repository?: string; canary?: boolean; 'no-canary'?: boolean; wait?: boolean }): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', DRILL_USAGE);
  if (flags.canary && flags['no-canary']) throw new UsageError('--canary and --no-canary contradict each other', DRILL_USAGE);
  const connection = await connectClient(loaded.config.temporal);
  try {
    const client = new Client({ connection, namespace: loaded.config.temporal.namespace, dataConverter: clientDataConverter(loaded.config.temporal) });
    const handle = await startDrill(client, loaded.config, {
      database: flags.database,
      ...(flags.backup ? { backup: flags.backup } : {}),
      ...(flags.repository ? { repository: flags.repository } : {}),
      ...(flags.canary ? { canary: true } : {}),
      ...(flags['no-canary'] ? { canary: false } : {}),
      requestedBy: `${userInfo().username}@${hostname()}`,
    });
    out.info(`started ${handle.workflowId}`);
    if (!flags.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () => `follow it with: pgrunbook status ${handle.workflowId}`);
      return EXIT.ok;
    }
    try {
      const result = await follow<DrillResult>(handle, (p) => out.progress(describeProgress(p)));
      out.result({ ok: true, workflowId: handle.workflowId, reportKey: result.reportKey, report: result.report }, () => describeDrillReport(result.report, result.reportKey));
      return EXIT.ok;
    } catch (error) {
      // A failed drill still has a report: print it, then fail.
      if (!(error instanceof WorkflowFailedError)) throw error;
      const report = await reportOf(loaded, flags.repository ?? defaultRepositoryId(loaded.config, flags.database), flags.database, handle.workflowId);
      if (!report) throw error;
      out.result({ ok: false, workflowId: handle.workflowId, report }, () => describeDrillReport(report));
      return EXIT.failed;
    }
  } finally {
    await connection.close();
  }
}

async function reportOf(loaded: LoadedConfig, repository: string, database: string, workflowId: string): Promise<DrillReport | undefined> {
  const reports = await listDrillReports(new RepositoryRegistry(loaded.config).get(repository), database).catch(() => []);
  return reports.find((r) => r.workflow_id === workflowId);
}
