import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import { chooseClusterId, clusterRepositoryId, type Config } from '../../config/schema.js';
import { listBaseBackups } from '../../pitr/base-catalog.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { compactTimestamp } from '../../repository/layout.js';
import { formatBytes, formatDuration } from '../../report/units.js';
import type { BasebackupResult } from '../../workflows/basebackup-cluster.js';
import { BasebackupInput, PruneBaseBackupsInput } from '../../workflows/basebackup-input.js';
import { describeIssues } from '../../workflows/backup-input.js';
import type { BasePruneResult } from '../../workflows/prune-base-backups.js';
import { describeProgress, follow } from '../backup.js';
import type { CliValues } from '../cli.js';
import { EXIT, table, UsageError, type Output } from '../output.js';
import { operatorIdentity } from '../restore.js';
import { startTaggedRunbook } from '../start.js';
import { withTemporalClient } from '../temporal-connection.js';

// `pgrunbook basebackup` (start basebackupCluster, --wait follows it), `pgrunbook basebackups
// list` (read from the repository, no Temporal needed) and `pgrunbook basebackups prune`.

export const BASEBACKUP_USAGE = 'pgrunbook basebackup [--cluster C] [--wait] [--json]';
export const BASEBACKUPS_USAGE = 'pgrunbook basebackups list [--cluster C] [--json] | basebackups prune [--cluster C] [--dry-run] [--wait] [--json]';

/** `--cluster`, or the only configured one; a UsageError otherwise. */
function clusterOf(config: Config, given: string | undefined, usage: string): string {
  try {
    return chooseClusterId(config, given);
  } catch (error) {
    const [message, hint] = (error as Error).message.split('\nHINT: ');
    throw new UsageError(message!, hint ?? usage);
  }
}

async function startCluster<I extends { cluster: string }, R>(client: Client, config: Config, start: { workflowType: string; workflowId: string; input: I; operation: string }): Promise<WorkflowHandleWithFirstExecutionRunId<(input: I) => Promise<R>>> {
  return startTaggedRunbook<I, R>(client, config, {
    ...start,
    database: start.input.cluster,
    alreadyRunning: new UsageError(`a ${start.operation} of cluster ${start.input.cluster} started this very second is already running (${start.workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`'),
  });
}

/** Validates the input, then starts `basebackupCluster` as `basebackup-<cluster>-<timestamp>`. */
export async function startBasebackup(client: Client, config: Config, raw: BasebackupInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: BasebackupInput) => Promise<BasebackupResult>>> {
  const parsed = BasebackupInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid basebackup request: ${describeIssues(parsed.error)}`, BASEBACKUP_USAGE);
  const cluster = clusterOf(config, parsed.data.cluster, BASEBACKUP_USAGE);
  return startCluster(client, config, { workflowType: 'basebackupCluster', workflowId: `basebackup-${cluster}-${compactTimestamp(new Date())}`, input: parsed.data, operation: 'basebackup' });
}

/** Validates the input, then starts `pruneBaseBackups` as `basebackup-prune-<cluster>-<timestamp>`. */
export async function startBasePrune(client: Client, config: Config, raw: PruneBaseBackupsInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: PruneBaseBackupsInput) => Promise<BasePruneResult>>> {
  const parsed = PruneBaseBackupsInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid basebackups prune request: ${describeIssues(parsed.error)}`, BASEBACKUPS_USAGE);
  const cluster = clusterOf(config, parsed.data.cluster, BASEBACKUPS_USAGE);
  const workflowId = `basebackup-prune-${cluster}-${compactTimestamp(new Date())}${parsed.data.dryRun ? '-dry-run' : ''}`;
  return startCluster(client, config, { workflowType: 'pruneBaseBackups', workflowId, input: parsed.data, operation: 'basebackup-prune' });
}

export async function basebackupCommand(loaded: LoadedConfig, out: Output, values: CliValues): Promise<number> {
  const cluster = clusterOf(loaded.config, values.cluster, BASEBACKUP_USAGE);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = await startBasebackup(client, loaded.config, { cluster, requestedBy: operatorIdentity() });
    out.info(`started ${handle.workflowId}`);
    if (!values.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () => `follow it with: pgrunbook status ${handle.workflowId}  (or pass --wait)`);
      return EXIT.ok;
    }
    const result = await follow<BasebackupResult>(handle, (p) => out.progress(describeProgress(p)));
    out.result({ ok: true, workflowId: handle.workflowId, ...result }, () => describeBasebackupResult(result));
    return EXIT.ok;
  });
}

export function describeBasebackupResult(r: BasebackupResult): string {
  return [
    `base backup ${r.backupId}: ${r.status}`,
    `  repository  ${r.repository}`,
    `  WAL         ${r.startLsn} .. ${r.stopLsn} on timeline ${r.timeline} (segments ${r.walRange.start} .. ${r.walRange.stop})`,
    `  size        ${formatBytes(r.size)} stored (tar ${formatBytes(r.tarSize)})`,
    `  sha256      ${r.sha256}`,
    `  duration    ${formatDuration(r.durationSeconds)}`,
    `  verified    ${r.verification.tool}${r.verification.detail ? `: ${r.verification.detail}` : ''}`,
    ...(r.prune ? [`  prune       ${r.prune}`] : []),
  ].join('\n');
}

export async function basebackupsCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, _arg: string | undefined, values: CliValues): Promise<number> {
  if (sub === 'list') return basebackupsList(loaded, out, values);
  if (sub === 'prune') return basebackupsPrune(loaded, out, values);
  throw new UsageError(`unknown subcommand "basebackups ${sub ?? ''}"`, BASEBACKUPS_USAGE);
}

async function basebackupsList(loaded: LoadedConfig, out: Output, values: CliValues): Promise<number> {
  const cluster = clusterOf(loaded.config, values.cluster, BASEBACKUPS_USAGE);
  const repositoryId = clusterRepositoryId(loaded.config, cluster);
  const repository = new RepositoryRegistry(loaded.config).get(repositoryId);
  const backups = await listBaseBackups(repository, cluster);
  const rows = backups.map((b) => ({
    id: b.id,
    state: b.state,
    startLsn: b.manifest?.startLsn ?? null,
    stopLsn: b.manifest?.stopLsn ?? null,
    timeline: b.manifest?.timeline ?? null,
    size: b.manifest ? Object.values(b.manifest.files).reduce((sum, f) => sum + f.size, 0) : null,
    tarSize: b.manifest?.tarSize ?? null,
    verification: b.manifest?.verification ?? null,
    finishedAt: b.manifest?.finishedAt ?? null,
    error: b.manifest?.error ?? null,
  }));
  const latest = backups.find((b) => b.state === 'verified')?.id ?? null;
  out.result({ ok: true, cluster, repository: repositoryId, location: repository.location, latestVerified: latest, backups: rows }, () =>
    rows.length === 0
      ? `no base backups of cluster ${cluster} in ${repository.location}`
      : table(
          ['BASE BACKUP', 'STATE', 'START LSN', 'STOP LSN', 'TL', 'SIZE', 'VERIFICATION'],
          rows.map((r) => [
            r.id + (r.id === latest ? ' (latest)' : ''),
            r.state,
            r.startLsn ?? '-',
            r.stopLsn ?? '-',
            r.timeline !== null ? String(r.timeline) : '-',
            r.size !== null ? formatBytes(r.size) : '-',
            r.verification ? `${r.verification.ok ? 'ok' : 'FAILED'} (${r.verification.tool})` : '-',
          ]),
        ),
  );
  return EXIT.ok;
}

async function basebackupsPrune(loaded: LoadedConfig, out: Output, values: CliValues): Promise<number> {
  const cluster = clusterOf(loaded.config, values.cluster, BASEBACKUPS_USAGE);
  const dryRun = values['dry-run'] === true;
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = await startBasePrune(client, loaded.config, { cluster, dryRun, requestedBy: operatorIdentity() });
    out.info(`started ${handle.workflowId}`);
    // A dry run always waits: its output is the point.
    if (!dryRun && !values.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () => `follow it with: pgrunbook status ${handle.workflowId}  (or pass --wait)`);
      return EXIT.ok;
    }
    const result = await follow<BasePruneResult>(handle, (p) => out.progress(describeProgress(p)));
    out.result({ ok: true, workflowId: handle.workflowId, ...result }, () => describeBasePruneResult(result));
    return EXIT.ok;
  });
}

/** Every base backup, keep or delete and the rule(s) that decided it; where WAL is cut. */
export function describeBasePruneResult(r: BasePruneResult): string {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  const count = r.dryRun ? r.decisions.filter((d) => d.action === 'delete').length : r.deleted.length;
  const head = `base backup prune of cluster ${r.cluster} in ${r.location}${r.dryRun ? ' (dry run: nothing was deleted)' : ''}: ${verb} ${count} of ${r.decisions.length} base backup${r.decisions.length === 1 ? '' : 's'}`;
  if (!r.configured) return `${head}\nretention is not configured for cluster ${r.cluster} (clusters.${r.cluster}.retention): nothing is deleted`;
  if (r.decisions.length === 0) return `${head}\nno base backups of cluster ${r.cluster}`;
  const rows = r.decisions.map((d) => [d.id, d.state, d.action === 'delete' ? (r.dryRun ? 'delete' : 'DELETED') : 'keep', d.reasons.join('; ')]);
  const wal = r.walCutoff
    ? `WAL before ${r.walCutoff.segment} (the start of ${r.walCutoff.backupId}, the oldest kept): ${r.dryRun ? `would delete ${r.walToDelete}` : `deleted ${r.walDeleted}`} file(s), ${r.walKept} kept`
    : 'WAL: nothing deleted (no kept verified base backup)';
  return [head, table(['BASE BACKUP', 'STATE', 'ACTION', 'RULE'], rows), wal, ...r.skipped.map((s) => `skipped ${s.backupId}: ${s.reason}`), ...(r.reportKey ? [`report: ${r.reportKey}`] : [])].join('\n');
}
