import { defaultPayloadConverter } from '@temporalio/common';
import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { compactTimestamp } from '../repository/layout.js';
import { BackupInput, describeIssues } from '../workflows/backup-input.js';
import type { BackupResult } from '../workflows/backup-database.js';
import { statusQuery, type RunbookStatus } from '../workflows/runbook.js';
import { DATABASE_ATTRIBUTE, LABEL_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { formatBytes } from '../report/units.js';
import { UsageError } from './output.js';

/** Validates the input against the schema and the config, then starts `backupDatabase`. */
export async function startBackup(client: Client, config: Config, raw: BackupInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: BackupInput) => Promise<BackupResult>>> {
  const parsed = BackupInput.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid backup request: ${describeIssues(parsed.error)}`, 'pgrunbook backup --database <id> [--label pre-upgrade]');
  const input = parsed.data;
  assertConfigured(config, input.database, input.repository);
  const workflowId = `backup-${input.database}-${compactTimestamp(new Date())}`;
  try {
    return await client.workflow.start('backupDatabase', {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: DATABASE_ATTRIBUTE, value: input.database },
        { key: OPERATION_ATTRIBUTE, value: 'backup' },
        ...(input.label ? [{ key: LABEL_ATTRIBUTE, value: input.label }] : []),
      ],
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      throw new UsageError(`a backup of ${input.database} started this very second is already running (${workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`');
    }
    throw error;
  }
}

/** Refuses, before anything starts, a database or repository the config does not know. */
export function assertConfigured(config: Config, database: string, repository?: string): void {
  if (!config.databases[database]) {
    throw new UsageError(`unknown database "${database}"`, `databases in the config: ${Object.keys(config.databases).join(', ') || '(none)'}`);
  }
  if (repository && !config.repositories[repository]) {
    throw new UsageError(`unknown repository "${repository}"`, `repositories in the config: ${Object.keys(config.repositories).join(', ')}`);
  }
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
