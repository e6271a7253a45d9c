import { ApplicationFailure, CancellationScope, condition, isCancellation, log, patched, setHandler, workflowInfo } from '@temporalio/workflow';
import { approveUpdate, rejectUpdate, resolveStepUpdate, type Decision, type DecisionRecord, type StepAction } from './restore-messages.js';
import { notifySafely } from './notify.js';
import { failureTypeOf, messageOf, type Runbook, type RunbookStatus } from './runbook.js';

// What makes a runbook steerable by a person, shared by restoreDatabase and pointInTimeRestore:
// the approve/reject and resolveStep updates, waiting for a decision (and saying so in the
// channel), the failed-step loop (retry, skip, abort) and the undo stack (saga) that runs
// newest-first, non-cancellable, when the runbook fails, is cancelled or aborted.

export interface OperatorControlOptions {
  database: string;
  /** Extra words for the approval refusal text ("this restore is not waiting for approval"). */
  noun: string;
  /** What each step that may not be skipped would break; shown when someone tries. */
  skipRefusals: Record<string, string>;
}

export interface StepPolicy {
  /** abort: a step that fails after its retries fails the runbook at once; ask: wait for a person. */
  onStepFailure: 'ask' | 'abort';
  decisionTimeoutSeconds: number;
}

export class OperatorControl<Step extends string> {
  private approvalDecision: DecisionRecord | undefined;
  private stepDecision: (DecisionRecord & { action: StepAction }) | undefined;
  private readonly undos: { name: string; run: () => Promise<unknown> }[] = [];
  private readonly workflowId = workflowInfo().workflowId;

  constructor(
    private readonly runbook: Runbook<Step | `undo:${string}`>,
    private readonly options: OperatorControlOptions,
  ) {
    const { status } = runbook;
    status.pendingDecision = null;
    status.decisions = [];
    status.undo = [];
    const expectApproval = (): void => {
      if (status.pendingDecision?.kind !== 'approval') {
        throw new Error(`this ${options.noun} is not waiting for approval (${status.pendingDecision ? `it waits for a decision on step ${status.pendingDecision.step}` : `current step: ${status.currentStep ?? status.state}`})`);
      }
    };
    setHandler(approveUpdate, (d: Decision) => (this.approvalDecision = this.record('approved', status.pendingDecision?.step ?? 'approval', d)), { validator: (_d: Decision) => expectApproval() });
    setHandler(rejectUpdate, (d: Decision) => (this.approvalDecision = this.record('rejected', status.pendingDecision?.step ?? 'approval', d)), {
      validator: (d: Decision) => {
        expectApproval();
        if (!d?.reason?.trim()) throw new Error('a rejection needs a reason (--reason "...")');
      },
    });
    setHandler(
      resolveStepUpdate,
      (request) => {
        const entry = this.record(request.action, status.pendingDecision!.step, request);
        this.stepDecision = { ...entry, action: request.action };
        return entry;
      },
      {
        validator: (request) => {
          const pending = status.pendingDecision;
          if (pending?.kind !== 'step') throw new Error(`no step is waiting for an operator decision (${pending ? `the ${options.noun} waits for approval: use approve/reject` : `current step: ${status.currentStep ?? status.state}`})`);
          if (!['retry', 'skip', 'abort'].includes(request?.action)) throw new Error('action must be retry, skip or abort');
          if (request.step && request.step !== pending.step) throw new Error(`the ${options.noun} waits on step ${pending.step}, not ${request.step}`);
          if (!pending.options.includes(request.action)) throw new Error(`step ${pending.step} cannot be skipped: ${options.skipRefusals[pending.step] ?? 'later steps depend on it'}; retry or abort`);
        },
      },
    );
  }

  /** Appends to the status's decisions: who, what, why. */
  record(decision: DecisionRecord['decision'], step: string, d: Decision | undefined): DecisionRecord {
    const entry: DecisionRecord = { decision, step, by: d?.by?.trim() || 'unknown', reason: d?.reason?.trim() || null, at: new Date().toISOString() };
    this.runbook.status.decisions!.push(entry);
    return entry;
  }

  /**
   * Waits for approve or reject at `step`. Resolves to the decision, or undefined after
   * `timeoutSeconds` without one. `waitingFor` is the status line shown meanwhile.
   */
  async approval(step: string, timeoutSeconds: number, waitingFor?: string, options: string[] = ['approve', 'reject']): Promise<DecisionRecord | undefined> {
    this.approvalDecision = undefined;
    return this.waitFor('approval', step, null, options, timeoutSeconds, () => this.approvalDecision, waitingFor);
  }

  private async waitFor<T>(kind: 'approval' | 'step', step: string, error: string | null, options: string[], timeoutSeconds: number, decided: () => T | undefined, waitingFor?: string): Promise<T | undefined> {
    const { status } = this.runbook;
    const since = new Date();
    status.pendingDecision = { kind, step, error, options, since: since.toISOString(), deadline: new Date(since.getTime() + timeoutSeconds * 1000).toISOString() };
    status.waitingFor =
      waitingFor ??
      (kind === 'approval'
        ? `approval (pgrunbook approve|reject ${this.workflowId})`
        : `operator decision on failed step ${step}: ${options.join(', ')} (pgrunbook step ${options.join('|')} ${this.workflowId})`);
    // Someone has to act: say so in the channel, while already waiting (a quick decision is not held up).
    const notified = patched('notify-restore-waiting')
      ? notifySafely({ kind: 'restore-waiting', database: this.options.database, workflowId: this.workflowId, waitingFor: kind === 'approval' ? 'approval' : 'operator', step, error, options, deadline: status.pendingDecision.deadline })
      : Promise.resolve(null);
    try {
      await condition(() => decided() !== undefined, timeoutSeconds * 1000);
      return decided();
    } finally {
      status.pendingDecision = null;
      status.waitingFor = null;
      const said = await notified;
      if (said) status.details.notified = said;
    }
  }

  /**
   * Runs a step; if it still fails after its retries, waits for an operator (unless the policy
   * aborts at once). Returns undefined only when the operator skipped a skippable step.
   */
  async step<T>(name: Step, run: () => Promise<T>, policy: StepPolicy, skippable = false): Promise<T | undefined> {
    for (;;) {
      try {
        return await this.runbook.step(name, run);
      } catch (error) {
        if (isCancellation(error) || policy.onStepFailure === 'abort' || isOperatorAbort(error)) throw error;
        this.stepDecision = undefined;
        const options = skippable ? ['retry', 'skip', 'abort'] : ['retry', 'abort'];
        const decision = await this.waitFor('step', name, messageOf(error), options, policy.decisionTimeoutSeconds, () => this.stepDecision);
        if (!decision) {
          this.record('timed-out', name, { by: 'pgrunbook', reason: `no decision within ${policy.decisionTimeoutSeconds} s` });
          throw ApplicationFailure.create({ type: 'DecisionTimedOut', nonRetryable: true, message: `step ${name} failed and nobody decided within ${policy.decisionTimeoutSeconds} s: ${messageOf(error)}`, cause: error as Error });
        }
        if (decision.action === 'retry') continue;
        if (decision.action === 'skip') {
          this.runbook.skip(name, `skipped by ${decision.by}${decision.reason ? `: ${decision.reason}` : ''}`);
          return undefined;
        }
        throw ApplicationFailure.create({ type: 'AbortedByOperator', nonRetryable: true, message: `aborted by ${decision.by} at step ${name}${decision.reason ? ` (${decision.reason})` : ''}: ${messageOf(error)}` });
      }
    }
  }

  /** Undo (saga): registered before the step it undoes, run newest-first by compensate(). */
  registerUndo(name: string, run: () => Promise<unknown>): void {
    this.undos.unshift({ name, run });
    this.runbook.status.undo!.push({ name, state: 'registered' });
  }

  /** Done: nothing to undo any more. */
  forgetUndos(): void {
    this.undos.length = 0;
  }

  /** Runs the registered undos newest-first, non-cancellable; returns the failures, in words. */
  async compensate(): Promise<string[]> {
    const failures: string[] = [];
    await CancellationScope.nonCancellable(async () => {
      for (const undo of this.undos) {
        const entry = this.runbook.status.undo!.find((u) => u.name === undo.name && u.state === 'registered')!;
        try {
          await this.runbook.step(`undo:${undo.name}`, undo.run);
          entry.state = 'done';
        } catch (error) {
          // Loud: an undo that failed leaves something for a person to fix, and says what.
          entry.state = 'failed';
          entry.error = messageOf(error);
          failures.push(`undo ${undo.name} failed: ${messageOf(error)}`);
          log.error(`${this.options.noun} undo failed`, { undo: undo.name, error: messageOf(error) });
        }
      }
    });
    this.undos.length = 0;
    return failures;
  }
}

export function isOperatorAbort(error: unknown): boolean {
  const type = (error as { type?: string }).type;
  return type === 'AbortedByOperator' || type === 'DecisionTimedOut';
}

/** What a failed runbook's report says went wrong: the step, the failure type an operator acts on, the message. */
export interface RunbookFailure {
  step: string;
  type: string;
  message: string;
}

/** The failure `error` ends the runbook with. Read it before compensate(): the undo steps come after the failed one. */
export function failureOf(status: RunbookStatus, error: unknown): RunbookFailure {
  return { step: status.finished.at(-1)?.step ?? 'unknown', type: failureTypeOf(error) ?? (error as Error)?.name ?? 'Error', message: messageOf(error) };
}

/** The report's error: the failure, and each undo that failed on a line of its own. */
export function reportedFailure(failure: RunbookFailure | null, undoFailures: string[]): RunbookFailure | null {
  return failure ? { ...failure, message: [failure.message, ...undoFailures].join('\n') } : null;
}

/** Thrown instead of the runbook's error when an undo failed: not retryable, and it says a person is needed. */
export function compensationFailed(error: unknown, undoFailures: string[]): ApplicationFailure {
  return ApplicationFailure.create({
    type: 'CompensationFailed',
    nonRetryable: true,
    message: `${messageOf(error)}\nUNDO FAILED, the system needs a person: ${undoFailures.join('; ')}`,
    cause: error as Error,
  });
}
