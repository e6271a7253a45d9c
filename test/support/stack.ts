import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker, WorkflowBundle } from '@temporalio/worker';
import { stringify } from 'yaml';
import { Config, TemporalConfig } from '../../config/schema.js';
import { clientDataConverter } from '../../encryption/payload-codec.js';
import { registerSecret } from '../../process/secrets.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { startS3Server, type S3Server } from '../../stack/seaweedfs.js';
import { startTemporalDevServer } from '../../stack/temporal-dev-server.js';
import { loadSampleData } from '../../stack/sample-data.js';
import { bundleWorkflows, createWorker, type WorkerSetup } from '../../worker/worker.js';

/**
 * Real components for one test file: a Temporal dev server, a PostgreSQL cluster, optionally
 * SeaweedFS, a local repository directory, and a workflow bundle built once.
 */
export interface TestStack {
  temporal: TestWorkflowEnvironment;
  client: Client;
  cluster: PostgresCluster;
  s3?: S3Server;
  bundle: WorkflowBundle;
  workDir: string;
  /** Environment a worker needs: database URLs and S3 credentials (secrets live only here). */
  workerEnv: NodeJS.ProcessEnv;
  /** The plain config object (YAML-shaped) for the given databases; tweak then `Config.parse`. */
  configObject(databases: Record<string, object>, overrides?: Record<string, unknown>): Record<string, unknown>;
  config(databases: Record<string, object>, overrides?: Record<string, unknown>): Config;
  /** Writes a config file for a worker process / the CLI and returns its path. */
  writeConfig(databases: Record<string, object>, overrides?: Record<string, unknown>): string;
  /** Runs an in-process worker until `stop()`. */
  startWorker(config: Config, wrapActivities?: WorkerSetup['wrapActivities']): Promise<{ worker: Worker; stop: () => Promise<void> }>;
  /** A database URL reference for config, backed by an env var in workerEnv. */
  databaseUrl(database: string, varName?: string): string;
  teardown(): Promise<void>;
}

let counter = 0;

export async function startTestStack(options: {
  s3?: boolean;
  /** create this database with the sample data */ sampleDatabase?: string;
  /** temporal.payloadCodec on: the key (in workerEnv), the client's codec, a bundle encoding failures */ payloadCodecKey?: string;
} = {}): Promise<TestStack> {
  const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-test-'));
  const [temporal, cluster, s3, bundle] = await Promise.all([
    startTemporalDevServer(),
    startPostgresCluster(),
    options.s3 ? startS3Server() : Promise.resolve(undefined),
    bundleWorkflows({ encodeFailureAttributes: options.payloadCodecKey !== undefined }),
  ]);
  registerSecret(cluster.password);
  if (options.sampleDatabase) {
    await cluster.sql(`CREATE DATABASE ${options.sampleDatabase}`);
    await loadSampleData(cluster.url(options.sampleDatabase));
  }
  const workerEnv: NodeJS.ProcessEnv = { ...process.env };
  const codec = options.payloadCodecKey !== undefined ? { payloadCodec: { keyEnv: 'TEST_PAYLOAD_CODEC_KEY' } } : {};
  if (options.payloadCodecKey !== undefined) workerEnv.TEST_PAYLOAD_CODEC_KEY = options.payloadCodecKey;
  if (s3) {
    workerEnv.TEST_S3_ACCESS_KEY = s3.accessKeyId;
    workerEnv.TEST_S3_SECRET_KEY = s3.secretAccessKey;
  }
  const address = temporal.connection.options.address ?? '';
  const taskQueue = `test-${process.pid}-${++counter}`;
  const configObject = (databases: Record<string, object>, overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
    temporal: { address, namespace: temporal.namespace ?? 'default', taskQueue, ...codec },
    repositories: {
      local: { type: 'local', path: join(workDir, 'repo') },
      ...(s3 ? { s3: { type: 's3', bucket: s3.bucket, prefix: 'pgrunbook', endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyIdEnv: 'TEST_S3_ACCESS_KEY', secretAccessKeyEnv: 'TEST_S3_SECRET_KEY', partSizeMiB: 5 } } : {}),
    },
    databases,
    timeouts: { heartbeatSeconds: 5 },
    retry: { maxAttempts: 3, initialIntervalSeconds: 0.2, maximumIntervalSeconds: 1 },
    // Worker processes of test files running side by side would all bind the default metrics
    // port; the metrics tests turn metrics on with a port of their own.
    metrics: { enabled: false },
    ...overrides,
  });
  const stack: TestStack = {
    temporal,
    client: new Client({ connection: temporal.connection, namespace: temporal.namespace ?? 'default', dataConverter: clientDataConverter(TemporalConfig.parse(codec), workerEnv) }),
    cluster,
    s3,
    bundle,
    workDir,
    workerEnv,
    configObject,
    config: (databases, overrides) => Config.parse(configObject(databases, overrides)),
    writeConfig: (databases, overrides) => {
      const path = join(workDir, `pgrunbook-${++counter}.yaml`);
      writeFileSync(path, stringify(configObject(databases, overrides)));
      return path;
    },
    databaseUrl: (database, varName = `TEST_DB_URL_${database.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`) => {
      workerEnv[varName] = cluster.url(database);
      return `\${${varName}}`;
    },
    startWorker: async (config, wrapActivities) => {
      const worker = await createWorker({ config, connection: temporal.nativeConnection, workflowBundle: bundle, env: workerEnv, wrapActivities });
      const running = worker.run();
      return {
        worker,
        stop: async () => {
          if (worker.getState() === 'RUNNING') worker.shutdown();
          await running;
        },
      };
    },
    teardown: async () => {
      await Promise.allSettled([temporal.teardown(), cluster.stop(), s3?.stop()]);
      rmSync(workDir, { recursive: true, force: true });
    },
  };
  return stack;
}
