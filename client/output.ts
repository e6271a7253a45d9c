import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { ConfigError } from '../config/errors.js';
import { scrubSecrets } from '../process/secrets.js';

/** Exit codes: 0 ok, 1 the operation failed, 2 bad usage or configuration. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(message: string, readonly hint?: string) {
    super(message);
  }
}

/**
 * Human or --json output. In JSON mode stdout carries exactly one JSON document; progress and
 * chatter go to stderr (humans) or nowhere (JSON).
 */
export class Output {
  private progressShown = false;
  private lastProgressLine = 0;

  constructor(readonly json: boolean) {}

  /** A line for humans (suppressed in --json mode). */
  info(line = ''): void {
    if (this.json) return;
    this.clearProgress();
    process.stdout.write(`${line}\n`);
  }

  /** The command's result: JSON document, or the human rendering. */
  result(value: unknown, human: () => string): void {
    this.clearProgress();
    process.stdout.write(this.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
  }

  /** Live progress: one rewritten line on a terminal, a line every 10 s otherwise. */
  progress(line: string): void {
    if (this.json) return;
    if (process.stderr.isTTY) {
      process.stderr.write(`\r\x1b[K${line}`);
      this.progressShown = true;
    } else if (Date.now() - this.lastProgressLine > 10_000) {
      this.lastProgressLine = Date.now();
      process.stderr.write(`${line}\n`);
    }
  }

  private clearProgress(): void {
    if (this.progressShown) process.stderr.write('\r\x1b[K');
    this.progressShown = false;
  }

  /** Prints an error (with its HINT) and returns the exit code to use. */
  error(error: unknown): number {
    this.clearProgress();
    const described = describeError(error);
    if (this.json) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: described }, null, 2)}\n`);
    } else {
      process.stderr.write(`error: ${described.message}\n${described.hint ? `HINT: ${described.hint}\n` : ''}`);
    }
    return error instanceof UsageError || error instanceof ConfigError ? EXIT.usage : EXIT.failed;
  }
}

export function describeError(error: unknown): { type: string; message: string; hint?: string } {
  let type = (error as Error)?.name ?? 'Error';
  let text = (error as Error)?.message ?? String(error);
  if (error instanceof WorkflowFailedError) {
    // The interesting part is the innermost cause: the activity's own ApplicationFailure.
    // Unwrap activity and child-workflow wrappers, not the workflow's own failure: a
    // CompensationFailed carries the original error as its cause, but its own message matters.
    let cause: unknown = error.cause;
    while (cause && !(cause instanceof ApplicationFailure) && (cause as { cause?: unknown }).cause) cause = (cause as { cause: unknown }).cause;
    type = cause instanceof ApplicationFailure ? (cause.type ?? 'ApplicationFailure') : ((cause as Error)?.name ?? type);
    text = (cause as Error)?.message ?? text;
  }
  if (error instanceof UsageError) return { type: 'UsageError', message: error.message, hint: error.hint };
  const [message, ...rest] = scrubSecrets(text).split('\nHINT: ');
  return { type, message: message ?? '', ...(rest.length ? { hint: rest.join(' ') } : {}) };
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
