import { scrubSecrets } from '../process/secrets.js';

/**
 * An application controller could not stop, start or inspect the application. The message names
 * the target (`describe()` of the controller), says what went wrong and ends with a `HINT:` line;
 * secrets are scrubbed.
 */
export class AppControllerError extends Error {
  override readonly name = 'AppControllerError';
  constructor(
    /** `describe()` of the controller, e.g. `kubernetes deployment/default/backend`. */
    readonly target: string,
    problem: string,
    readonly hint: string,
    options?: { cause?: unknown },
  ) {
    super(scrubSecrets(`${target}: ${problem}\nHINT: ${hint}`), options);
  }
}

/** The message of anything thrown, secrets scrubbed. */
export function messageOf(error: unknown): string {
  return scrubSecrets(error instanceof Error ? error.message : String(error));
}
