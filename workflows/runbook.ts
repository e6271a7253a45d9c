import { defineQuery, isCancellation, setHandler } from '@temporalio/workflow';

// The state every runbook-shaped workflow exposes through its `status` query: the current step,
// finished steps with timings and outcomes, and what it waits for. The same step names appear in
// the CLI, reports and metrics.

export type StepOutcome = 'ok' | 'failed' | 'skipped' | 'cancelled';

export interface StepRecord {
  step: string;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  outcome: StepOutcome;
  error?: string;
}

export type RunState = 'running' | 'completed' | 'failed' | 'cancelled';

export interface RunbookStatus {
  operation: string;
  state: RunState;
  currentStep: string | null;
  /** When set, the workflow is blocked on this (an approval, an operator decision). */
  waitingFor: string | null;
  finished: StepRecord[];
  /** Operation-specific facts, e.g. the backup id once known. */
  details: Record<string, string | number | boolean | null>;
  /** Long steps report bytes moved (restore). */
  progress?: { step: string; phase: string; bytes: number; totalBytes: number | null; at: string } | null;
  /** The operator decision the workflow waits for, with the options it accepts. */
  pendingDecision?: PendingDecision | null;
  /** Approvals and step decisions so far: who, what, why. */
  decisions?: { decision: string; step: string; by: string; reason: string | null; at: string }[];
  /** Undo actions registered before the steps that need them, and what became of them. */
  undo?: { name: string; state: 'registered' | 'done' | 'failed'; error?: string }[];
}

export interface PendingDecision {
  kind: 'approval' | 'step';
  step: string;
  /** Why the step waits: its last error. */
  error: string | null;
  /** What the workflow accepts: approve/reject, or retry/skip/abort. */
  options: string[];
  since: string;
  deadline: string;
}

export const statusQuery = defineQuery<RunbookStatus>('status');

export class Runbook<Step extends string> {
  readonly status: RunbookStatus;

  constructor(operation: string) {
    this.status = { operation, state: 'running', currentStep: null, waitingFor: null, finished: [], details: {} };
    setHandler(statusQuery, () => this.status);
  }

  /** Runs one named step, recording its timing and outcome. */
  async step<T>(name: Step, run: () => Promise<T>): Promise<T> {
    const started = Date.now();
    this.status.currentStep = name;
    try {
      const result = await run();
      this.record(name, started, 'ok');
      return result;
    } catch (error) {
      this.record(name, started, isCancellation(error) ? 'cancelled' : 'failed', messageOf(error));
      throw error;
    } finally {
      this.status.currentStep = null;
    }
  }

  /** Records a step an operator chose to skip. */
  skip(name: Step, reason: string): void {
    this.record(name, Date.now(), 'skipped', reason);
  }

  finish(state: Exclude<RunState, 'running'>): void {
    this.status.state = state;
    this.status.currentStep = null;
    this.status.waitingFor = null;
  }

  private record(step: string, started: number, outcome: StepOutcome, error?: string): void {
    const finished = Date.now();
    this.status.finished.push({
      step,
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date(finished).toISOString(),
      durationMs: finished - started,
      outcome,
      ...(error ? { error } : {}),
    });
  }
}

export function messageOf(error: unknown): string {
  const e = error as { cause?: { message?: string }; message?: string };
  // Activity failures wrap the activity's own error; that one says what went wrong.
  return e?.cause?.message ?? e?.message ?? String(error);
}

/** The failure type an operator acts on: the activity's own (its cause), else the failure's. */
export function failureTypeOf(error: unknown): string | undefined {
  const e = error as { cause?: { type?: string }; type?: string };
  return e?.cause?.type ?? e?.type;
}
