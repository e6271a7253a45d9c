import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { z } from 'zod';
import { runbookTaskQueue, type Config } from '../config/schema.js';
import { describeIssues } from '../workflows/backup-input.js';
import { DATABASE_ATTRIBUTE, LABEL_ATTRIBUTE, OPERATION_ATTRIBUTE } from '../workflows/search-attributes.js';
import { UsageError } from './output.js';

// Starting a runbook from the CLI (or a test): the request is checked against the workflow's own
// input schema and the config before anything reaches Temporal, then started with the search
// attributes the UI and `temporal workflow list` filter on.

interface Request {
  database: string;
  repository?: string;
}

/** The input as the workflow will parse it, or a UsageError naming the field; unknown databases and repositories refused. */
export function checkRequest<S extends z.ZodType<Request>>(schema: S, raw: unknown, config: Config, what: string, usage: string): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new UsageError(`invalid ${what} request: ${describeIssues(parsed.error)}`, usage);
  assertConfigured(config, parsed.data.database, parsed.data.repository);
  return parsed.data;
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

export interface RunbookStart<I extends Request> {
  workflowType: string;
  workflowId: string;
  input: I;
  /** PgrunbookOperation: backup, restore, drill, prune. */
  operation: string;
  label?: string;
  /** The error when a workflow with this id already runs; default: "started this very second". */
  alreadyRunning?: UsageError;
}

/** Starts a runbook on a database (the input names it); a second one with the same id is refused. */
export async function startRunbook<I extends Request, R>(client: Client, config: Config, start: RunbookStart<I>): Promise<WorkflowHandleWithFirstExecutionRunId<(input: I) => Promise<R>>> {
  return startTaggedRunbook<I, R>(client, config, {
    ...start,
    database: start.input.database,
    alreadyRunning:
      start.alreadyRunning ?? new UsageError(`a ${start.operation} of ${start.input.database} started this very second is already running (${start.workflowId})`, 'wait a second and try again, or follow it with `pgrunbook status`'),
  });
}

export interface TaggedRunbookStart<I> {
  workflowType: string;
  workflowId: string;
  input: I;
  /** PgrunbookDatabase: the database it acts on; a cluster's base backups and their prune: the cluster id. */
  database: string;
  /** PgrunbookOperation: backup, restore, drill, prune, basebackup, basebackup-prune, pitr. */
  operation: string;
  label?: string;
  /** The error when a workflow with this id already runs. */
  alreadyRunning: UsageError;
  /** Default: the database's (or cluster's) site, runbookTaskQueue. */
  taskQueue?: string;
}

/** Starts a runbook's workflow with the search attributes the UI and `temporal workflow list` filter on. */
export async function startTaggedRunbook<I, R>(client: Client, config: Config, start: TaggedRunbookStart<I>): Promise<WorkflowHandleWithFirstExecutionRunId<(input: I) => Promise<R>>> {
  try {
    return await client.workflow.start<(input: I) => Promise<R>>(start.workflowType, {
      // The database's site (databases.<id>.taskQueue): its worker runs the workflow and every step.
      taskQueue: start.taskQueue ?? runbookTaskQueue(config, start.database),
      workflowId: start.workflowId,
      args: [start.input],
      typedSearchAttributes: [
        { key: DATABASE_ATTRIBUTE, value: start.database },
        { key: OPERATION_ATTRIBUTE, value: start.operation },
        ...(start.label ? [{ key: LABEL_ATTRIBUTE, value: start.label }] : []),
      ],
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) throw start.alreadyRunning;
    throw error;
  }
}
