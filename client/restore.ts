import { userInfo, hostname } from 'node:os';
import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { Config } from '../config/schema.js';
import { describeIssues } from '../workflows/backup-input.js';
import type { RestoreResult } from '../workflows/restore-database.js';
import { RestoreInput } from '../workflows/restore-input.js';
import { approveUpdate, rejectUpdate, resolveStepUpdate, type DecisionRecord, type StepAction } from '../workflows/restore-messages.js';
import { DATABASE_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { assertConfigured } from './backup.js';
import { UsageError } from './output.js';

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

/** Validates the request against the schema and the config, then starts `restoreDatabase`. */
export async function startRestore(client: Client, config: Config, raw: RestoreInput): Promise<WorkflowHandleWithFirstExecutionRunId<(input: RestoreInput) => Promise<RestoreResult>>> {
  const parsed = RestoreInput.safeParse({ requestedBy: operatorIdentity(), ...raw });
  if (!parsed.success) throw new UsageError(`invalid restore request: ${describeIssues(parsed.error)}`, 'pgrunbook restore --database <id> [--backup <id>|latest] [--target-database NAME] [--strategy swap|in-place]');
  const input = parsed.data;
  assertConfigured(config, input.database, input.repository);
  const workflowId = restoreWorkflowId(input.database);
  try {
    return await client.workflow.start('restoreDatabase', {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: DATABASE_ATTRIBUTE, value: input.database },
        { key: OPERATION_ATTRIBUTE, value: 'restore' },
      ],
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      throw new UsageError(
        `a restore of ${input.database} is already running (workflow ${workflowId}); only one restore per database runs at a time`,
        `see where it is with \`pgrunbook status ${workflowId}\`; cancel it with \`temporal workflow cancel --workflow-id ${workflowId}\` if it must stop`,
      );
    }
    throw error;
  }
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
