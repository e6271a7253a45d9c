import { defineSignal, defineUpdate } from '@temporalio/workflow';

// Messages of the restore workflow, shared by the workflow, its activities and the CLI. The same
// names work from `temporal workflow update execute --name approve|reject|resolveStep`.

export interface Decision {
  /** Who decided (user@host); the CLI fills it in. */
  by?: string;
  reason?: string;
}

export interface DecisionRecord extends Required<Pick<Decision, 'by'>> {
  decision: 'approved' | 'rejected' | 'retry' | 'skip' | 'abort' | 'timed-out';
  step: string;
  reason: string | null;
  at: string;
}

export type StepAction = 'retry' | 'skip' | 'abort';

export interface ResolveStepRequest extends Decision {
  action: StepAction;
  /** The step the decision is meant for; rejected if the workflow waits on another one. */
  step?: string;
}

/** The workflow waits for `approve` or `reject` (restores over an existing database). */
export const approveUpdate = defineUpdate<DecisionRecord, [Decision]>('approve');
export const rejectUpdate = defineUpdate<DecisionRecord, [Decision]>('reject');
/** A step failed after its retries: retry it, skip it (if skippable) or abort (runs the undos). */
export const resolveStepUpdate = defineUpdate<DecisionRecord, [ResolveStepRequest]>('resolveStep');

export interface RestoreProgress {
  step: string;
  phase: 'download' | 'restore';
  /** Archive bytes read (stream, download), or the restored database's size (pg_restore -j on a file). */
  bytes: number;
  totalBytes: number | null;
  at: string;
}

/** Sent by the restore activity every few seconds so the `status` query can show progress. */
export const progressSignal = defineSignal<[RestoreProgress]>('progress');
