import { Connection } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config/schema.js';
import { temporalConnectionOptions } from '../client/temporal-connection.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { resolveConnection } from '../postgres/connection.js';
import { ConfigError } from '../config/errors.js';
import { checkEncryptionKeys } from '../encryption/keys.js';
import { payloadCodecFor } from '../encryption/payload-codec.js';
import { keepMetricsRefreshed, serveMetrics, WorkerMetrics, type MetricsServer } from './metrics.js';
import { installWorkerRuntime } from './runtime.js';
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
  try {
    payloadCodecFor(config.temporal, env);
  } catch (error) {
    if (error instanceof ConfigError) problems.push(...error.problems);
    else throw error;
  }
  if (problems.length > 0) throw new ConfigError(problems, 'worker environment');
}

export interface RunningWorker {
  worker: Worker;
  connection: NativeConnection;
  /** Resolves when the worker has shut down. */
  done: Promise<void>;
  shutdown(): Promise<void>;
  /** Where /metrics and /healthz are served (config.metrics), unless disabled. */
  metricsUrl?: string;
}

/** Starts a worker on the config's task queue; SIGINT/SIGTERM shut it down gracefully. */
export async function startWorker(config: Config, options: { handleSignals?: boolean; configPath?: string } = {}): Promise<RunningWorker> {
  checkWorkerEnvironment(config);
  await checkEncryptionKeys(config);
  const client = await Connection.connect(temporalConnectionOptions(config.temporal));
  try {
    await ensureSearchAttributes(client, config.temporal.namespace);
  } finally {
    await client.close();
  }
  // The SDK runtime (with its metrics exporter) before the first native connection; the metrics
  // endpoint before polling, so a taken port fails the start before any work is taken.
  const { runtimeMetricsUrl } = await installWorkerRuntime({ runtimeMetrics: config.metrics.enabled && config.metrics.temporalRuntime });
  let metrics: WorkerMetrics | undefined;
  let metricsServer: MetricsServer | undefined;
  let worker: Worker | undefined;
  if (config.metrics.enabled) {
    metrics = new WorkerMetrics({ databases: Object.keys(config.databases) });
    metricsServer = await serveMetrics({ metrics, host: config.metrics.host, port: config.metrics.port, runtimeMetricsUrl, workerState: () => worker?.getState() ?? 'STARTING' });
  }
  let connection: NativeConnection | undefined;
  try {
    connection = await connectWorker(config);
    worker = await createWorker({ config, connection, metrics, ...(options.configPath ? { configPath: options.configPath } : {}) });
  } catch (error) {
    await connection?.close();
    await metricsServer?.close();
    throw error;
  }
  const stopRefreshing = metrics ? keepMetricsRefreshed(metrics, config, new RepositoryRegistry(config)) : () => undefined;
  const running = worker;
  const done = worker.run().finally(async () => {
    stopRefreshing();
    await metricsServer?.close();
    await connection.close();
  });
  const shutdown = async (): Promise<void> => {
    if (running.getState() === 'RUNNING') running.shutdown();
    await done;
  };
  if (options.handleSignals !== false) {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void shutdown());
  }
  return { worker, connection, done, shutdown, ...(metricsServer ? { metricsUrl: metricsServer.url } : {}) };
}
