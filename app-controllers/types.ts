// The contract every application controller implements (kubernetes, compose, command, pgbouncer,
// none). A restore stops the application that writes to a database before it touches the
// database, and brings it back afterwards to exactly the state it found it in.
//
// All three operations are idempotent: a worker killed half-way through runs them again, and they
// converge. A snapshot is plain JSON that goes into workflow history: it must never hold a secret.

export type AppSnapshot = { controller: string } & Record<string, unknown>;

export interface AppController {
  /** The config's controller type, e.g. 'kubernetes'. */
  readonly type: string;
  /** One line for logs, status and errors, e.g. `kubernetes deployment/default/backend`. Never a secret. */
  describe(): string;
  /** Reads the application's current state (replica counts, running services) without changing it. */
  capture(signal: AbortSignal): Promise<AppSnapshot>;
  /** Stops the application and waits until it is really down (pods gone, processes exited, pool paused). */
  stop(snapshot: AppSnapshot, signal: AbortSignal): Promise<void>;
  /** Brings the application back to the state in `snapshot` and waits until it has started. */
  start(snapshot: AppSnapshot, signal: AbortSignal): Promise<void>;
}
