import { clientDataConverter } from '../../encryption/payload-codec.js';
import { Client } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import type { PruneResult } from '../../workflows/prune-backups.js';
import { describeProgress, follow } from '../backup.js';
import { describePruneResult, PRUNE_USAGE, startPrune } from '../prune.js';
import { operatorIdentity } from '../restore.js';
import { connectClient } from '../temporal-connection.js';
import { EXIT, UsageError, type Output } from '../output.js';

/**
 * `pgrunbook backups prune`: starts pruneBackups. A dry run always waits and prints what would go
 * and which rule decided it; a real prune waits with --wait.
 */
export async function backupsPruneCommand(loaded: LoadedConfig, out: Output, flags: { database?: string; repository?: string; 'dry-run'?: boolean; wait?: boolean }): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', PRUNE_USAGE);
  const dryRun = flags['dry-run'] === true;
  const connection = await connectClient(loaded.config.temporal);
  try {
    const client = new Client({ connection, namespace: loaded.config.temporal.namespace, dataConverter: clientDataConverter(loaded.config.temporal) });
    const handle = await startPrune(client, loaded.config, {
      database: flags.database,
      ...(flags.repository ? { repository: flags.repository } : {}),
      dryRun,
      requestedBy: operatorIdentity(),
    });
    out.info(`started ${handle.workflowId}`);
    if (!dryRun && !flags.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () => `follow it with: pgrunbook status ${handle.workflowId}  (or pass --wait)`);
      return EXIT.ok;
    }
    const result = await follow<PruneResult>(handle, (p) => out.progress(describeProgress(p)));
    out.result({ ok: true, workflowId: handle.workflowId, ...result }, () => describePruneResult(result));
    return EXIT.ok;
  } finally {
    await connection.close();
  }
}
