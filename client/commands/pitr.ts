import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import { chooseClusterId } from '../../config/schema.js';
import { formatDuration } from '../../report/units.js';
import type { PitrResult } from '../../workflows/point-in-time-restore.js';
import { parsePitrTime, TIME_FORMAT_HINT, type PitrInput } from '../../workflows/pitr-input.js';
import { describeProgress, followSayingWaits } from '../backup.js';
import type { CliValues } from '../cli.js';
import { EXIT, UsageError, type Output } from '../output.js';
import { PITR_USAGE, startPitr } from '../pitr.js';
import { decideApproval } from '../restore.js';
import { withTemporalClient } from '../temporal-connection.js';

// `pgrunbook pitr --time T|--lsn L|--restore-point N|--latest` starts pointInTimeRestore
// (pitr-<cluster>); `pgrunbook pitr promote|discard ID` decides what becomes of the recovered
// cluster (the workflow's approve/reject updates). `pgrunbook status ID` shows the steps and the
// replay position.

const DECIDE_USAGE = 'pgrunbook pitr promote WORKFLOW_ID | pgrunbook pitr discard WORKFLOW_ID --reason "..."';

export async function pitrCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, arg: string | undefined, values: CliValues): Promise<number> {
  if (sub === 'promote' || sub === 'discard') return decide(loaded, out, sub, arg, values.reason);
  if (sub !== undefined) throw new UsageError(`unexpected "${sub}": pitr takes promote, discard, or a target flag`, PITR_USAGE);
  return start(loaded, out, values);
}

/** The one target flag, as the workflow's input; a time is parsed strictly (UTC when no zone is given). */
function targetOf(values: CliValues): PitrInput['target'] {
  const given = [values.time !== undefined && '--time', values.lsn !== undefined && '--lsn', values['restore-point'] !== undefined && '--restore-point', values.latest && '--latest'].filter(Boolean);
  if (given.length !== 1) throw new UsageError(given.length === 0 ? 'a target is required: --time, --lsn, --restore-point or --latest' : `give exactly one target, not ${given.join(' and ')}`, PITR_USAGE);
  if (values.time !== undefined) {
    const time = parsePitrTime(values.time);
    if (!time) throw new UsageError(`--time: "${values.time}" is not a time pgrunbook reads`, `expected ${TIME_FORMAT_HINT}`);
    return { time: time.text };
  }
  if (values.lsn !== undefined) return { lsn: values.lsn };
  if (values['restore-point'] !== undefined) return { restorePoint: values['restore-point'] };
  return { latest: true };
}

async function start(loaded: LoadedConfig, out: Output, values: CliValues): Promise<number> {
  const target = targetOf(values);
  if (values.mode !== undefined && values.mode !== 'new' && values.mode !== 'replace') throw new UsageError(`--mode: expected new or replace, got "${values.mode}"`, PITR_USAGE);
  let cluster: string;
  try {
    cluster = chooseClusterId(loaded.config, values.cluster);
  } catch (error) {
    const [message, hint] = (error as Error).message.split('\nHINT: ');
    throw new UsageError(message!, hint ?? PITR_USAGE);
  }
  if (values.time !== undefined && parsePitrTime(values.time)?.assumedUtc) out.info(`--time ${values.time} has no zone: read as UTC (${target.time})`);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = await startPitr(client, loaded.config, {
      cluster,
      target,
      ...(values.mode ? { mode: values.mode as 'new' | 'replace' } : {}),
      ...(values['base-backup'] ? { baseBackup: values['base-backup'] } : {}),
      ...(values.yes ? { approval: 'skip' as const } : {}),
    });
    const id = handle.workflowId;
    out.info(`started ${id}`);
    if (!values.wait) {
      out.result({ ok: true, workflowId: id, runId: handle.firstExecutionRunId }, () =>
        `follow it with: pgrunbook status ${id}${values.mode === 'replace' && !values.yes ? `   (approve with: pgrunbook approve ${id} --reason "...")` : `   (then: pgrunbook pitr promote|discard ${id})`}`,
      );
      return EXIT.ok;
    }
    const result = await followSayingWaits<PitrResult>(handle, out, (p) => {
      const recovery = p.status.currentStep === 'recover' && typeof p.status.details.recovery === 'string' ? `   ${p.status.details.recovery}` : '';
      return `${describeProgress(p)}${recovery}`;
    });
    out.result({ ok: true, workflowId: id, ...result }, () => describePitrResult(result));
    return EXIT.ok;
  });
}

export function describePitrResult(r: PitrResult): string {
  const outcome = r.outcome === 'promoted' ? 'recovered and promoted (writable)' : r.outcome === 'discarded' ? 'recovered, then discarded (removed)' : 'the cluster now runs the recovered data';
  return [
    `point-in-time restore of cluster ${r.cluster} (${r.mode}): ${outcome}`,
    `  target        ${r.target}`,
    `  base backup   ${r.baseBackupId}`,
    `  recovered to  LSN ${r.recovered.replayedLsn ?? '?'}${r.recovered.lastTransactionAt ? `, last transaction ${r.recovered.lastTransactionAt}` : ''} in ${formatDuration(r.recovered.seconds)}`,
    ...(r.verification ? [`  verified      ${Object.keys(r.verification.rowCounts).length} tables, ${r.verification.totalRows} rows, ${r.verification.smokeQueries.length} smoke queries`] : ['  verified      NOT VERIFIED (skipped by an operator)']),
    ...(r.outcome !== 'discarded' ? [`  data dir      ${r.dataDir}`] : []),
    ...(r.connect ? [`  connect       ${r.connect}`] : []),
    ...(r.movedAside ? [`  old data      kept in ${r.movedAside} (delete it once you are sure)`] : []),
    `  duration      ${formatDuration(r.durationSeconds)}`,
    ...(r.reportKey ? [`  report        ${r.reportKey}`] : []),
  ].join('\n');
}

/** promote / discard: the workflow's approve/reject updates, refused unless it waits for that decision. */
async function decide(loaded: LoadedConfig, out: Output, action: 'promote' | 'discard', workflowId: string | undefined, reason: string | undefined): Promise<number> {
  if (!workflowId) throw new UsageError('expected a workflow id', DECIDE_USAGE);
  if (action === 'discard' && !reason) throw new UsageError('--reason is required to discard', `pgrunbook pitr discard ${workflowId} --reason "recovered to the wrong time"`);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    try {
      const record = await decideApproval(client, workflowId, action === 'promote' ? 'approve' : 'reject', reason);
      out.result({ ok: true, workflowId, action, ...record }, () => `${workflowId}: ${action === 'promote' ? 'promote' : 'discard'} decided by ${record.by}${record.reason ? ` (${record.reason})` : ''}; follow it with pgrunbook status ${workflowId}`);
      return EXIT.ok;
    } catch (error) {
      if (error instanceof WorkflowUpdateFailedError) {
        throw new UsageError(`refused: ${(error.cause as Error)?.message ?? error.message}`, `see what it waits for with \`pgrunbook status ${workflowId}\``);
      }
      throw error;
    }
  });
}
