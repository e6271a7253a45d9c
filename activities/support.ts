import { Context } from '@temporalio/activity';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import { resolveConnection, type ConnectionParams } from '../postgres/connection.js';
import { failure } from '../postgres/errors.js';
import type { RepositoryRegistry } from '../repository/registry.js';
import { DumpSlots } from './dump-slots.js';
import type { RunbookMetrics } from './runbook-metrics.js';

export interface ActivityDeps {
  config: Config;
  repositories: RepositoryRegistry;
  env?: NodeJS.ProcessEnv;
  /** Told when a runbook's last activity records its outcome (the worker's Prometheus metrics). */
  metrics?: RunbookMetrics;
  /**
   * The config file this worker was started with. A recovered server's restore_command runs
   * `pgrunbook wal-fetch --config <it>` (point-in-time recovery).
   */
  configPath?: string;
  /** pg_dump/pg_dumpall processes at once in this worker process (shared by all its task queues). */
  dumpSlots?: DumpSlots;
}

export interface Progress {
  bytes: number;
  bytesPerSecond: number;
}

/**
 * What every activity family needs from the worker: its config, connections and repositories
 * resolved here (secrets stay in the worker), and heartbeats for long steps.
 */
export function activitySupport(deps: ActivityDeps) {
  const env = deps.env ?? process.env;
  const dumpSlots = deps.dumpSlots ?? new DumpSlots(deps.config.worker.maxConcurrentDumps);

  function databaseConfig(database: string) {
    const db = deps.config.databases[database];
    if (!db) {
      throw failure('InvalidInput', `unknown database "${database}"`, `databases in the worker's config: ${Object.keys(deps.config.databases).join(', ') || '(none)'}`);
    }
    return db;
  }

  /** Config problems found while resolving are non-retryable ConfigError failures. */
  function resolving<T>(resolve: () => T): T {
    try {
      return resolve();
    } catch (error) {
      if (error instanceof ConfigError) throw failure('ConfigError', error.message);
      throw error;
    }
  }

  /**
   * Runs a long step with a steady heartbeat (every second, throttled by the SDK) carrying the
   * latest progress. Heartbeats must not depend on bytes flowing: a tool waiting for a lock
   * still has to prove its worker is alive and still has to receive cancellation.
   */
  async function withHeartbeat<T>(run: (report: (progress: Progress) => void) => Promise<T>): Promise<T> {
    const context = Context.current();
    let progress: Progress = { bytes: 0, bytesPerSecond: 0 };
    const beat = (): void => context.heartbeat(progress);
    beat();
    const timer = setInterval(beat, 1_000);
    try {
      return await run((next) => {
        progress = next;
      });
    } catch (error) {
      // Once cancelled, whatever the killed tool reported is noise: report the cancellation.
      if (context.cancellationSignal.aborted) throw context.cancellationSignal.reason ?? error;
      throw error;
    } finally {
      clearInterval(timer);
    }
  }

  /**
   * Runs a pg_dump/pg_dumpall once one of the worker's dump slots is free (worker.maxConcurrentDumps).
   * Call it inside withHeartbeat: waiting for a turn is still a live step.
   */
  function withDumpSlot<T>(dump: () => Promise<T>): Promise<T> {
    return dumpSlots.run(Context.current().cancellationSignal, dump);
  }

  /** A byte counter for withHeartbeat: bytes so far and the mean rate since `started`. */
  function byteProgress(report: (progress: Progress) => void, started = Date.now()): (bytes: number) => void {
    return (bytes) => report({ bytes, bytesPerSecond: Math.round(bytes / Math.max((Date.now() - started) / 1000, 0.001)) });
  }

  /** Timeouts and retries for a runbook's activities, from the config (the workflow's activityProfiles). */
  function stepSettings() {
    return {
      heartbeatSeconds: deps.config.timeouts.heartbeatSeconds,
      longStepSeconds: Math.round(deps.config.timeouts.longStepHours * 3600),
      retry: {
        maximumAttempts: deps.config.retry.maxAttempts,
        initialIntervalSeconds: deps.config.retry.initialIntervalSeconds,
        maximumIntervalSeconds: deps.config.retry.maximumIntervalSeconds,
      },
    };
  }

  return {
    env,
    stepSettings,
    databaseConfig,
    resolving,
    connection: (database: string): ConnectionParams => resolving(() => resolveConnection(database, databaseConfig(database), env)),
    repository: (id: string) => resolving(() => deps.repositories.get(id)),
    withHeartbeat,
    withDumpSlot,
    byteProgress,
  };
}

export type ActivitySupport = ReturnType<typeof activitySupport>;
