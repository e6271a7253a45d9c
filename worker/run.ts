import { Connection } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { clusterRepositoryId, configuredTaskQueues, defaultRepositoryId, taskQueueOf, type Config } from '../config/schema.js';
import { temporalConnectionOptions } from '../client/temporal-connection.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { resolveConnection } from '../postgres/connection.js';
import { ConfigError } from '../config/errors.js';
import { checkEncryptionKeys } from '../encryption/keys.js';
import { payloadCodecFor, workerDataConverter } from '../encryption/payload-codec.js';
import { keepMetricsRefreshed, serveMetrics, WorkerMetrics, type MetricsServer } from './metrics.js';
import { installWorkerRuntime } from './runtime.js';
import { connectWorker, createActivities, createWorker, ensureSearchAttributes } from './worker.js';
import { loadWorkflowBundle } from './workflow-bundle.js';
import { DumpSlots } from '../activities/dump-slots.js';

/**
 * Checks, before polling for work, that every database connection and repository in the config
 * can be resolved from this worker's environment (missing ${VAR}s, S3 credentials), so a bad
 * deployment fails at start rather than in the middle of the night.
 */
export function checkWorkerEnvironment(config: Config, env: NodeJS.ProcessEnv = process.env, taskQueues: string[] = configuredTaskQueues(config)): void {
  const problems: ConfigError['problems'] = [];
  // A site's worker needs only its own databases' credentials; the others are another site's.
  for (const id of servedDatabases(config, taskQueues)) {
    const db = config.databases[id]!;
    try {
      resolveConnection(id, db, env);
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems);
      else throw error;
    }
  }
  const repositories = new RepositoryRegistry(config, env);
  for (const id of servedRepositories(config, taskQueues)) {
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
  /** The first task queue's worker. */
  worker: Worker;
  /** One per task queue polled, in the order given. */
  workers: Worker[];
  taskQueues: string[];
  connection: NativeConnection;
  /** Resolves when the worker has shut down. */
  done: Promise<void>;
  shutdown(): Promise<void>;
  /** Where /metrics and /healthz are served (config.metrics), unless disabled. */
  metricsUrl?: string;
}

/** The task queues a worker polls: --task-queue, else worker.taskQueues, else the control queue. */
export function workerTaskQueues(config: Config, given: string[] = []): string[] {
  const queues = [...new Set(given.length > 0 ? given : (config.worker.taskQueues ?? [config.temporal.taskQueue]))];
  // A queue nothing is ever started on is a typo: such a worker would idle while work piles up elsewhere.
  const known = configuredTaskQueues(config);
  const unknown = queues.filter((q) => !known.includes(q));
  if (unknown.length > 0) {
    throw new ConfigError(
      unknown.map((q) => ({
        path: given.length > 0 ? '--task-queue' : 'worker.taskQueues',
        message: `task queue "${q}" is neither temporal.taskQueue nor any database's taskQueue`,
        hint: `task queues in this config: ${known.join(', ')}`,
      })),
      'worker task queues',
    );
  }
  return queues;
}

/**
 * Starts a worker process: one Temporal worker per task queue it polls, sharing one connection,
 * one set of activities and so one set of dump slots. SIGINT/SIGTERM shut it down gracefully.
 */
export async function startWorker(config: Config, options: { handleSignals?: boolean; configPath?: string; taskQueues?: string[] } = {}): Promise<RunningWorker> {
  const taskQueues = workerTaskQueues(config, options.taskQueues);
  checkWorkerEnvironment(config, process.env, taskQueues);
  await checkEncryptionKeys(config, process.env, servedRepositories(config, taskQueues));
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
  const workers: Worker[] = [];
  if (config.metrics.enabled) {
    metrics = new WorkerMetrics({ databases: servedDatabases(config, taskQueues) });
    metricsServer = await serveMetrics({ metrics, host: config.metrics.host, port: config.metrics.port, runtimeMetricsUrl, workerState: () => combinedState(workers) });
  }
  let connection: NativeConnection | undefined;
  try {
    connection = await connectWorker(config);
    const activities = createActivities(config, process.env, metrics, options.configPath, new DumpSlots(config.worker.maxConcurrentDumps));
    const workflowBundle = await loadWorkflowBundle({ encodeFailureAttributes: workerDataConverter(config.temporal).encodeFailureAttributes });
    for (const taskQueue of taskQueues) workers.push(await createWorker({ config, connection, metrics, activities, workflowBundle, taskQueue, ...(options.configPath ? { configPath: options.configPath } : {}) }));
  } catch (error) {
    await connection?.close();
    await metricsServer?.close();
    throw error;
  }
  // Each site's worker shows its own databases' last outcomes, so no series is exported twice.
  const served = {
    ...config,
    databases: Object.fromEntries(servedDatabases(config, taskQueues).map((id) => [id, config.databases[id]!])),
    repositories: Object.fromEntries(servedRepositories(config, taskQueues).map((id) => [id, config.repositories[id]!])),
  };
  const stopRefreshing = metrics ? keepMetricsRefreshed(metrics, served, new RepositoryRegistry(config)) : () => undefined;
  const open = connection;
  // One worker failing (its task queue's poller) stops the others: a half-serving process would
  // look healthy to its supervisor.
  const runs = workers.map((w) =>
    w.run().catch((error: unknown) => {
      for (const other of workers) if (other.getState() === 'RUNNING') other.shutdown();
      throw error;
    }),
  );
  const done = Promise.all(runs)
    .then(() => undefined)
    .finally(async () => {
      stopRefreshing();
      await metricsServer?.close();
      await open.close();
    });
  const shutdown = async (): Promise<void> => {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await done;
  };
  if (options.handleSignals !== false) {
    // process.on, not once: execa's signal-exit handler (one per running pg_dump) re-raises the
    // signal when it finds itself the last listener, which would kill the worker mid-grace.
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void shutdown());
  }
  return { worker: workers[0]!, workers, taskQueues, connection: open, done, shutdown, ...(metricsServer ? { metricsUrl: metricsServer.url } : {}) };
}

/** The databases whose runbooks run on these task queues. */
export function servedDatabases(config: Config, taskQueues: string[]): string[] {
  return Object.keys(config.databases).filter((id) => taskQueues.includes(taskQueueOf(config, id)));
}

/**
 * The repositories this worker may be asked to use: all but those that only other sites'
 * databases (and their clusters) use, such as another site's bucket.
 */
export function servedRepositories(config: Config, taskQueues: string[]): string[] {
  const served = new Set(servedDatabases(config, taskQueues));
  const users = new Map<string, string[]>();
  const use = (repository: string, database: string): void => void users.set(repository, [...(users.get(repository) ?? []), database]);
  for (const id of Object.keys(config.databases)) use(defaultRepositoryId(config, id), id);
  for (const clusterId of Object.keys(config.clusters)) use(clusterRepositoryId(config, clusterId), config.clusters[clusterId]!.database);
  return Object.keys(config.repositories).filter((id) => !users.has(id) || users.get(id)!.some((database) => served.has(database)));
}

/** /healthz's worker state for a process with several workers: the least healthy one's. */
function combinedState(workers: Worker[]): string {
  if (workers.length === 0) return 'STARTING';
  const states = workers.map((w) => w.getState());
  return states.find((state) => state !== 'RUNNING') ?? 'RUNNING';
}
