import { defaultPayloadConverter } from '@temporalio/common';
import type { Client, WorkflowHandle, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import { BackupInput } from '../workflows/backup-input.js';
import type { BackupResult } from '../workflows/backup-database.js';
import { statusQuery, type RunbookStatus } from '../workflows/runbook.js';
import { formatBytes } from '../report/units.js';
import type { Output } from './output.js';
import { checkRequest, startRunbook } from './start.js';

/** Validates the input against the schema and the config, then starts `backupDatabase`. */
export async function startBackup(client: Client, config: Config, raw: BackupInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: BackupInput) => Promise<BackupResult>>> {
  const input = checkRequest(BackupInput, raw, config, 'backup', 'pgrunbook backup --database <id> [--label pre-upgrade]');
  return startRunbook(client, config, { workflowType: 'backupDatabase', workflowId: `backup-${input.database}-${compactTimestamp(new Date())}`, input, operation: 'backup', label: input.label });
}


export interface LiveProgress {
  status: RunbookStatus;
  /** From the running activity's last heartbeat. */
  bytes?: number;
  bytesPerSecond?: number;
  attempt?: number;
}

/** Reads the workflow's status query and its running activity's heartbeat. */
export async function readProgress(handle: WorkflowHandle): Promise<LiveProgress> {
  const [status, description] = await Promise.all([handle.query(statusQuery), handle.describe()]);
  const pending = description.raw.pendingActivities?.[0];
  let payload = pending?.heartbeatDetails?.payloads?.[0];
  // describe() hands heartbeats over as stored: encrypted when the payload codec is on.
  for (const codec of [...handle.client.options.loadedDataConverter.payloadCodecs].reverse()) if (payload) [payload] = await codec.decode([payload]);
  const details = payload ? (defaultPayloadConverter.fromPayload(payload) as { bytes?: number; bytesPerSecond?: number }) : undefined;
  return { status, bytes: details?.bytes, bytesPerSecond: details?.bytesPerSecond, attempt: pending?.attempt ?? undefined };
}

/** The current step with its bytes (heartbeat), the workflow's own progress total, and retries. */
export function describeStep(p: LiveProgress): string {
  const step = p.status.currentStep ?? (p.status.state === 'running' ? 'starting' : p.status.state);
  const total = p.status.progress?.step === p.status.currentStep ? p.status.progress?.totalBytes : undefined;
  const bytes = p.bytes !== undefined ? ` ${formatBytes(p.bytes)}${total ? ` of ~${formatBytes(total)}` : ''}${p.bytesPerSecond ? ` at ${formatBytes(p.bytesPerSecond)}/s` : ''}` : '';
  const retry = p.attempt && p.attempt > 1 ? ` (attempt ${p.attempt})` : '';
  return `${step}${bytes}${retry}`;
}

export function describeProgress(p: LiveProgress): string {
  const done = p.status.finished.filter((s) => s.outcome === 'ok').map((s) => s.step);
  return `${describeStep(p)}   [done: ${done.join(', ') || '-'}]`;
}

/** Follows a workflow to its end, reporting progress about once a second. */
export async function follow<T>(handle: WorkflowHandle, onProgress: (p: LiveProgress) => void): Promise<T> {
  const result = handle.result() as Promise<T>;
  let done = false;
  void result.finally(() => {
    done = true;
  }).catch(() => undefined);
  while (!done) {
    try {
      onProgress(await readProgress(handle));
    } catch {
      // The first workflow task may not have run yet; progress is best effort.
    }
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 1_000))]);
  }
  return result;
}

/**
 * Follows a runbook that may wait for an operator: each new wait is said once, on its own line
 * (a person must act: approve, resolve a step, promote or discard); progress otherwise.
 */
export async function followSayingWaits<T>(handle: WorkflowHandle, out: Output, describe: (p: LiveProgress) => string = describeProgress): Promise<T> {
  let told = '';
  return follow<T>(handle, (p) => {
    const waiting = p.status.waitingFor;
    if (waiting && waiting !== told) {
      told = waiting;
      out.info(`waiting for ${waiting}`);
    }
    out.progress(describe(p));
  });
}
