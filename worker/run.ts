import { Connection } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config/schema.js';
import { temporalConnectionOptions } from '../client/temporal-connection.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { resolveConnection } from '../postgres/connection.js';
import { ConfigError } from '../config/errors.js';
import { connectWorker, createWorker, ensureSearchAttributes } from './worker.js';

/**
 * Checks, before polling for work, that every database connection and repository in the config
 * can be resolved from this worker's environment (missing ${VAR}s, S3 credentials), so a bad
 * deployment fails at start rather than in the middle of the night.
 */
export function checkWorkerEnvironment(config: Config, env: NodeJS.ProcessEnv = process.env): void {
  const problems: ConfigError['problems'] = [];
  for (const [id, db] of Object.entries(config.databases)) {
    try {
      resolveConnection(id, db, env);
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems);
      else throw error;
    }
  }
  const repositories = new RepositoryRegistry(config, env);
  for (const id of Object.keys(config.repositories)) {
    try {
      repositories.get(id);
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems);
      else throw error;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems, 'worker environment');
}

export interface RunningWorker {
  worker: Worker;
  connection: NativeConnection;
  /** Resolves when the worker has shut down. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

/** Starts a worker on the config's task queue; SIGINT/SIGTERM shut it down gracefully. */
export async function startWorker(config: Config, options: { handleSignals?: boolean } = {}): Promise<RunningWorker> {
  checkWorkerEnvironment(config);
  const client = await Connection.connect(temporalConnectionOptions(config.temporal));
  try {
    await ensureSearchAttributes(client, config.temporal.namespace);
  } finally {
    await client.close();
  }
  const connection = await connectWorker(config);
  let worker: Worker;
  try {
    worker = await createWorker({ config, connection });
  } catch (error) {
    await connection.close();
    throw error;
  }
  const done = worker.run().finally(() => connection.close());
  const shutdown = async (): Promise<void> => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await done;
  };
  if (options.handleSignals !== false) {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void shutdown());
  }
  return { worker, connection, done, shutdown };
}
