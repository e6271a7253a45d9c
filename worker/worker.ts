import type { Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { NativeConnection, Worker, type WorkflowBundleOption } from '@temporalio/worker';
import { createBackupActivities } from '../activities/backup.js';
import { createBasebackupActivities } from '../activities/basebackup.js';
import { createDrillActivities } from '../activities/drill.js';
import { createNotifyActivities } from '../activities/notify.js';
import { createPitrActivities } from '../activities/pitr.js';
import { createFleetActivities } from '../activities/fleet.js';
import { createGlobalsActivities } from '../activities/globals.js';
import { createPruneActivities } from '../activities/prune.js';
import { createRestoreActivities } from '../activities/restore.js';
import type { RunbookMetrics } from '../activities/runbook-metrics.js';
import type { DumpSlots } from '../activities/dump-slots.js';
import { SHUTDOWN_FORCE_MARGIN_SECONDS, type Config } from '../config/schema.js';
import { RepositoryRegistry } from '../repository/registry.js';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.js';
import { temporalConnectionOptions } from '../client/temporal-connection.js';
import { workerDataConverter } from '../encryption/payload-codec.js';
import { loadWorkflowBundle } from './workflow-bundle.js';

export { bundleWorkflows, workflowsPath } from './workflow-bundle.js';

export function createActivities(config: Config, env: NodeJS.ProcessEnv = process.env, metrics?: RunbookMetrics, configPath?: string, dumpSlots?: DumpSlots) {
  const repositories = new RepositoryRegistry(config, env);
  const deps = { config, repositories, env, metrics, configPath, dumpSlots };
  return { ...createBackupActivities(deps), ...createRestoreActivities(deps), ...createDrillActivities(deps), ...createNotifyActivities(deps), ...createPruneActivities(deps), ...createBasebackupActivities(deps), ...createPitrActivities(deps), ...createFleetActivities(deps), ...createGlobalsActivities(deps) };
}

export interface WorkerSetup {
  config: Config;
  connection: NativeConnection;
  /**
   * A pre-built bundle (tests share one); otherwise workflows are bundled at start. With
   * temporal.payloadCodec, build it with bundleWorkflows({ encodeFailureAttributes: true }).
   */
  workflowBundle?: WorkflowBundleOption;
  env?: NodeJS.ProcessEnv;
  identity?: string;
  /** Wraps the activities, e.g. to inject a failure at a given step in tests. */
  wrapActivities?: (activities: ReturnType<typeof createActivities>) => ReturnType<typeof createActivities>;
  /** Told when runbooks finish (worker/metrics.ts). */
  metrics?: RunbookMetrics;
  /** The config file's path, for recovered servers' restore_command (point-in-time recovery). */
  configPath?: string;
  /** The task queue this worker polls; default temporal.taskQueue. */
  taskQueue?: string;
  /** Activities shared by the workers of one process (one set of dump slots); default: created here. */
  activities?: ReturnType<typeof createActivities>;
}

export async function createWorker(setup: WorkerSetup): Promise<Worker> {
  const { config } = setup;
  // temporal.payloadCodec: inputs, results, heartbeats and failure messages encrypted in history.
  const { dataConverter, encodeFailureAttributes } = workerDataConverter(config.temporal, setup.env);
  return Worker.create({
    connection: setup.connection,
    namespace: config.temporal.namespace,
    taskQueue: setup.taskQueue ?? config.temporal.taskQueue,
    dataConverter,
    workflowBundle: setup.workflowBundle ?? (await loadWorkflowBundle({ encodeFailureAttributes })),
    activities: (setup.wrapActivities ?? ((a) => a))(setup.activities ?? createActivities(config, setup.env, setup.metrics, setup.configPath)),
    ...(setup.identity ? { identity: setup.identity } : {}),
    // worker: in the config. Dumps are bounded per process by the activities' dump slots.
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentActivities,
    maxConcurrentWorkflowTaskExecutions: config.worker.maxConcurrentWorkflowTasks,
    // On shutdown, steps still running after the grace time are cancelled; the worker reports them
    // failed and Temporal retries them on another worker.
    shutdownGraceTime: config.worker.shutdownGraceSeconds * 1000,
    // A step that ignores its cancellation must not keep the process alive forever: some seconds
    // after the grace time the worker gives up (Temporal retries the step after its heartbeat timeout).
    shutdownForceTime: (config.worker.shutdownGraceSeconds + SHUTDOWN_FORCE_MARGIN_SECONDS) * 1000,
    // Heartbeats carry progress (bytes, rate) that `pgrunbook backup --wait` shows; by default
    // they reach the server only every 0.8 x heartbeatTimeout (24 s at 30 s), too slow to watch.
    maxHeartbeatThrottleInterval: '2 seconds',
  });
}

export async function connectWorker(config: Config): Promise<NativeConnection> {
  return NativeConnection.connect(temporalConnectionOptions(config.temporal));
}

/**
 * Registers pgrunbook's search attributes where missing. The dev server and self-hosted clusters
 * allow this; Temporal Cloud needs them created once in its UI or `tcld` (README).
 */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<void> {
  const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
  const missing = SEARCH_ATTRIBUTES.filter((key) => !customAttributes?.[key.name]);
  if (missing.length === 0) return;
  const keyword = proto.temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;
  try {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, keyword])),
    });
  } catch (error) {
    throw new Error(
      `search attributes ${missing.map((k) => k.name).join(', ')} are not registered in namespace ${namespace} and could not be added: ${(error as Error).message}\n` +
        `HINT: ${missing.map((k) => `temporal operator search-attribute create --namespace ${namespace} --name ${k.name} --type Keyword`).join(' && ')}`,
    );
  }
}
