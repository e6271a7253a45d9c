import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import { dropDatabase, withMaintenanceClient } from '../../postgres/admin.js';
import { resolveConnection } from '../../postgres/connection.js';
import { parsePreRestoreName } from '../../postgres/database-names.js';
import { listPreRestoreDatabases, prunePreRestoreDatabases } from '../../postgres/pre-restore.js';
import type { RestoreResult } from '../../workflows/restore-database.js';
import type { StepAction } from '../../workflows/restore-messages.js';
import { describeStep, followSayingWaits, readProgress, type LiveProgress } from '../backup.js';
import { decideApproval, resolveStep, startRestore } from '../restore.js';
import { withTemporalClient } from '../temporal-connection.js';
import { formatBytes, formatDuration } from '../../report/units.js';
import { EXIT, table, UsageError, type Output } from '../output.js';

export interface RestoreFlags {
  database?: string;
  backup?: string;
  repository?: string;
  'target-database'?: string;
  strategy?: string;
  jobs?: string;
  'no-owner'?: boolean;
  'no-privileges'?: boolean;
  role?: string;
  yes?: boolean;
  'safety-backup'?: boolean;
  'no-safety-backup'?: boolean;
  wait?: boolean;
}

const RESTORE_USAGE = 'pgrunbook restore --database ID [--backup ID|latest] [--target-database NAME] [--strategy swap|in-place] [--jobs N] [--wait]';

export async function restoreCommand(loaded: LoadedConfig, out: Output, flags: RestoreFlags): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', RESTORE_USAGE);
  if (flags.strategy && flags.strategy !== 'swap' && flags.strategy !== 'in-place') throw new UsageError(`--strategy: expected swap or in-place, got "${flags.strategy}"`, RESTORE_USAGE);
  const jobs = flags.jobs === undefined ? undefined : Number(flags.jobs);
  if (jobs !== undefined && !(Number.isInteger(jobs) && jobs >= 1 && jobs <= 64)) throw new UsageError(`--jobs: expected a whole number from 1 to 64, got "${flags.jobs}"`, RESTORE_USAGE);
  if (flags['safety-backup'] && flags['no-safety-backup']) throw new UsageError('--safety-backup and --no-safety-backup contradict each other', RESTORE_USAGE);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = await startRestore(client, loaded.config, {
      database: flags.database!,
      ...(flags.backup ? { backup: flags.backup } : {}),
      ...(flags.repository ? { repository: flags.repository } : {}),
      ...(flags['target-database'] ? { targetDatabase: flags['target-database'] } : {}),
      ...(flags.strategy ? { strategy: flags.strategy as 'swap' | 'in-place' } : {}),
      ...(jobs !== undefined ? { jobs } : {}),
      ...(flags['no-owner'] ? { noOwner: true } : {}),
      ...(flags['no-privileges'] ? { noPrivileges: true } : {}),
      ...(flags.role ? { role: flags.role } : {}),
      ...(flags.yes ? { requireApproval: false } : {}),
      ...(flags['safety-backup'] ? { safetyBackup: true } : {}),
      ...(flags['no-safety-backup'] ? { safetyBackup: false } : {}),
    });
    out.info(`started ${handle.workflowId}`);
    if (!flags.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () =>
        `follow it with: pgrunbook status ${handle.workflowId}   (approve with: pgrunbook approve ${handle.workflowId} --reason "...")`,
      );
      return EXIT.ok;
    }
    const result = await followSayingWaits<RestoreResult>(handle, out);
    out.result({ ok: true, workflowId: handle.workflowId, ...result }, () => describeRestoreResult(result));
    return EXIT.ok;
  });
}

export function describeRestoreResult(r: RestoreResult): string {
  return [
    `restore of ${r.database} from ${r.backupId}: completed`,
    `  target        ${r.target} (${r.strategy})`,
    `  restored      ${formatBytes(r.restore.restoredSizeBytes)} in ${formatDuration(r.restore.seconds)} (${r.restore.method}, -j ${r.restore.jobs})`,
    `  verified      ${r.verification.ok ? `${r.verification.tablesChecked ?? 0} tables' row counts, schema version ${r.verification.schemaVersion.actual ?? '(none)'}, ${r.verification.smokeQueries.length} smoke queries` : `NOT VERIFIED: ${r.verification.problems.join('; ')}`}`,
    `  downtime      ${r.downtimeSeconds === null ? 'none (application not touched)' : formatDuration(r.downtimeSeconds)}`,
    `  duration      ${formatDuration(r.durationSeconds)}`,
    ...(r.preRestoreDatabase ? [`  old database  kept as ${r.preRestoreDatabase} (pgrunbook pre-restore list|drop)`] : []),
    ...(r.safetyBackupId ? [`  safety backup ${r.safetyBackupId}`] : []),
    ...(r.reportKey ? [`  report        ${r.reportKey}`] : []),
  ].join('\n');
}

/** `pgrunbook status <workflow-id>`: any pgrunbook workflow's status query, for humans or --json. */
export async function statusCommand(loaded: LoadedConfig, out: Output, workflowId: string | undefined): Promise<number> {
  if (!workflowId) throw new UsageError('expected a workflow id', 'pgrunbook status restore-<database>   (or backup-<database>-<timestamp>)');
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = client.workflow.getHandle(workflowId);
    const [live, description] = await Promise.all([readProgress(handle), handle.describe()]);
    const status = live.status;
    out.result({ workflowId, runId: description.runId, execution: description.status.name, heartbeat: { bytes: live.bytes ?? null, attempt: live.attempt ?? null }, ...status }, () => renderStatus(workflowId, description.status.name, live));
    return EXIT.ok;
  });
}

function renderStatus(workflowId: string, execution: string, live: LiveProgress): string {
  const s = live.status;
  const lines = [`${workflowId}: ${s.operation} ${s.state} (execution ${execution})`];
  if (s.currentStep) lines.push(`  now       ${describeStep(live)}`);
  if (s.waitingFor) lines.push(`  WAITING   ${s.waitingFor}`);
  if (s.pendingDecision?.error) lines.push(`  error     ${s.pendingDecision.error.split('\n').join('\n            ')}`);
  if (s.pendingDecision) lines.push(`  deadline  ${s.pendingDecision.deadline}`);
  for (const [key, value] of Object.entries(s.details)) if (value !== null && value !== '') lines.push(`  ${key.padEnd(9)} ${String(value)}`);
  if (s.finished.length > 0) {
    lines.push('', table(['STEP', 'OUTCOME', 'DURATION', 'NOTE'], s.finished.map((f) => [f.step, f.outcome, formatDuration(f.durationMs / 1000), (f.error ?? '').split('\n')[0]!.slice(0, 100)])));
  }
  if (s.undo && s.undo.length > 0) lines.push('', `undo: ${s.undo.map((u) => `${u.name} (${u.state}${u.error ? `: ${u.error}` : ''})`).join(', ')}`);
  if (s.decisions && s.decisions.length > 0) lines.push('', ...s.decisions.map((d) => `decision: ${d.decision} ${d.step} by ${d.by} at ${d.at}${d.reason ? `: ${d.reason}` : ''}`));
  return lines.join('\n');
}

/** approve / reject <workflow-id> --reason ... */
export async function approvalCommand(loaded: LoadedConfig, out: Output, decision: 'approve' | 'reject', workflowId: string | undefined, reason: string | undefined): Promise<number> {
  if (!workflowId) throw new UsageError('expected a workflow id', `pgrunbook ${decision} restore-<database> --reason "..."`);
  if (decision === 'reject' && !reason) throw new UsageError('--reason is required to reject', `pgrunbook reject ${workflowId} --reason "wrong backup"`);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const record = await refusedAsUsage(() => decideApproval(client, workflowId, decision, reason));
    out.result({ ok: true, workflowId, ...record }, () => `${workflowId}: ${record.decision} by ${record.by}${record.reason ? ` (${record.reason})` : ''}`);
    return EXIT.ok;
  });
}

/** step retry|skip|abort <workflow-id> */
export async function stepCommand(loaded: LoadedConfig, out: Output, action: string | undefined, workflowId: string | undefined, flags: { reason?: string; step?: string }): Promise<number> {
  if (action !== 'retry' && action !== 'skip' && action !== 'abort') throw new UsageError(`expected retry, skip or abort, got "${action ?? ''}"`, 'pgrunbook step retry|skip|abort <workflow-id> [--reason "..."]');
  if (!workflowId) throw new UsageError('expected a workflow id', `pgrunbook step ${action} restore-<database>`);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const record = await refusedAsUsage(() => resolveStep(client, workflowId, action as StepAction, { ...(flags.step ? { step: flags.step } : {}), ...(flags.reason ? { reason: flags.reason } : {}) }));
    out.result({ ok: true, workflowId, ...record }, () => `${workflowId}: ${record.decision} of step ${record.step} by ${record.by}`);
    return EXIT.ok;
  });
}

/** A decision the workflow's validator refused is the operator's mistake: exit 2 with its reason. */
async function refusedAsUsage<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof WorkflowUpdateFailedError) {
      throw new UsageError(`refused: ${(error.cause as Error)?.message ?? error.message}`, 'see what it waits for with `pgrunbook status <workflow-id>`');
    }
    throw error;
  }
}

/** pre-restore list|drop|prune: the old databases swap restores keep. */
export async function preRestoreCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, name: string | undefined, flags: { database?: string; 'older-than-days'?: string }): Promise<number> {
  const usage = 'pgrunbook pre-restore list|prune --database ID [--older-than-days N] | pre-restore drop NAME --database ID';
  if (!flags.database) throw new UsageError('--database is required', usage);
  const db = loaded.config.databases[flags.database];
  if (!db) throw new UsageError(`unknown database "${flags.database}"`, `databases in the config: ${Object.keys(loaded.config.databases).join(', ')}`);
  const params = resolveConnection(flags.database, db);
  const live = params.database;
  return withMaintenanceClient(params, db.restore.maintenanceDatabase, async (client) => {
    switch (sub) {
      case 'list': {
        const old = await listPreRestoreDatabases(client, live);
        out.result({ ok: true, database: flags.database, keepPreRestoreDays: db.restore.keepPreRestoreDays ?? null, databases: old }, () =>
          old.length === 0 ? `no pre-restore databases of ${live}` : table(['DATABASE', 'SWAPPED OUT AT', 'SIZE'], old.map((o) => [o.name, o.at, formatBytes(o.sizeBytes)])),
        );
        return EXIT.ok;
      }
      case 'drop': {
        if (!name || parsePreRestoreName(name)?.database !== live) throw new UsageError(`expected the name of a pre-restore database of ${live}${name ? `, got "${name}"` : ''}`, 'see `pgrunbook pre-restore list`');
        const dropped = await dropDatabase(client, name);
        out.result({ ok: true, dropped: dropped ? [name] : [] }, () => (dropped ? `dropped ${name}` : `${name} does not exist (already dropped)`));
        return EXIT.ok;
      }
      case 'prune': {
        const days = flags['older-than-days'] !== undefined ? Number(flags['older-than-days']) : db.restore.keepPreRestoreDays;
        if (days === undefined || !(days >= 0)) throw new UsageError('how old? pass --older-than-days N or set restore.keepPreRestoreDays', usage);
        const dropped = await prunePreRestoreDatabases(client, live, days);
        out.result({ ok: true, olderThanDays: days, dropped }, () => (dropped.length ? `dropped ${dropped.join(', ')}` : `nothing older than ${days} days`));
        return EXIT.ok;
      }
      default:
        throw new UsageError(`unknown subcommand "pre-restore ${sub ?? ''}"`, usage);
    }
  });
}
