import { userInfo, hostname } from 'node:os';
import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import type { RestoreResult } from '../workflows/restore-database.js';
import { RestoreInput } from '../workflows/restore-input.js';
import { approveUpdate, rejectUpdate, resolveStepUpdate, type DecisionRecord, type StepAction } from '../workflows/restore-messages.js';
import { UsageError } from './output.js';
import { checkRequest, startRunbook } from './start.js';

/** One restore per database at a time: the workflow id says which database it restores. */
export const restoreWorkflowId = (database: string): string => `restore-${database}`;

/** Who is deciding or starting, for the report: user@host. */
export function operatorIdentity(): string {
  let user = process.env.USER ?? 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep $USER
  }
  return `${user}@${hostname()}`;
}

/** Validates the input against the schema and the config, then starts `restoreDatabase` (one per database). */
export async function startRestore(client: Client, config: Config, raw: RestoreInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: RestoreInput) => Promise<RestoreResult>>> {
  const input = checkRequest(RestoreInput, { requestedBy: operatorIdentity(), ...raw }, config, 'restore', 'pgrunbook restore --database <id> [--backup <id>|latest] [--target-database NAME] [--strategy swap|in-place]');
  const workflowId = restoreWorkflowId(input.database);
  return startRunbook(client, config, {
    workflowType: 'restoreDatabase',
    workflowId,
    input,
    operation: 'restore',
    alreadyRunning: new UsageError(
      `a restore of ${input.database} is already running (workflow ${workflowId}); only one restore per database runs at a time`,
      `see where it is with \`pgrunbook status ${workflowId}\`; cancel it with \`temporal workflow cancel --workflow-id ${workflowId}\` if it must stop`,
    ),
  });
}

/** approve / reject: the workflow's validator refuses it unless the restore waits for approval. */
export async function decideApproval(client: Client, workflowId: string, decision: 'approve' | 'reject', reason?: string): Promise<DecisionRecord> {
  const handle = client.workflow.getHandle(workflowId);
  const update = decision === 'approve' ? approveUpdate : rejectUpdate;
  return handle.executeUpdate(update, { args: [{ by: operatorIdentity(), ...(reason ? { reason } : {}) }] });
}

/** retry / skip / abort the step the restore waits on. */
export async function resolveStep(client: Client, workflowId: string, action: StepAction, options: { step?: string; reason?: string } = {}): Promise<DecisionRecord> {
  const handle = client.workflow.getHandle(workflowId);
  return handle.executeUpdate(resolveStepUpdate, { args: [{ action, by: operatorIdentity(), ...options }] });
}
