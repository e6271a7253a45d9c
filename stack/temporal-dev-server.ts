import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.js';
import { temporalCli } from './binaries.js';
import { freePort } from './ports.js';

export interface DevServerOptions {
  /** gRPC port; a free one when omitted. */
  port?: number;
  /** Serve the Web UI on this port. */
  uiPort?: number;
  /** Persist to this SQLite file (dev); in memory when omitted (tests). */
  dbFilename?: string;
  namespace?: string;
}

/**
 * The real `temporal server start-dev`, from $TEMPORAL_CLI or PATH (or .tools/venv/bin), with
 * pgrunbook's search attributes registered. Tests, benchmarks and `pgrunbook dev` all start it here.
 */
export async function startTemporalDevServer(options: DevServerOptions = {}): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalCli() },
      ip: '127.0.0.1',
      port: options.port,
      ui: options.uiPort !== undefined,
      uiPort: options.uiPort,
      dbFilename: options.dbFilename,
      namespace: options.namespace,
      searchAttributes: [...SEARCH_ATTRIBUTES],
      log: { format: 'pretty', level: 'error' },
    },
  });
}

export interface SpawnedDevServer {
  /** host:port of the frontend. */
  readonly address: string;
  stop(): Promise<void>;
}

/**
 * `temporal server start-dev` as a child whose output goes to `logFile`, for `pgrunbook dev`:
 * unlike createLocal, nothing of the server's reaches our stdout, so `--json` output stays one
 * document. Resolves once the frontend answers.
 */
export async function spawnTemporalDevServer(options: DevServerOptions & { logFile: string }): Promise<SpawnedDevServer> {
  const port = options.port ?? (await freePort());
  const address = `127.0.0.1:${port}`;
  const args = [
    'server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'warn',
    ...(options.uiPort !== undefined ? ['--ui-port', String(options.uiPort)] : ['--headless']),
    ...(options.dbFilename ? ['--db-filename', options.dbFilename] : []),
    ...(options.namespace ? ['--namespace', options.namespace] : []),
    ...SEARCH_ATTRIBUTES.flatMap((key) => ['--search-attribute', `${key.name}=Keyword`]),
  ];
  const log = openSync(options.logFile, 'a');
  const child = spawn(temporalCli(), args, { stdio: ['ignore', log, log] });
  closeSync(log);
  // However this process ends (an error, EPIPE on a closed stdout), the server must not outlive it.
  const killOnExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    killOnExit();
    await exited;
    process.off('exit', killOnExit);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`temporal server start-dev exited with code ${child.exitCode}\n${readFileSync(options.logFile, 'utf8').slice(-2000)}`);
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: '2 seconds' });
      try {
        await connection.workflowService.getSystemInfo({});
        return { address, stop };
      } finally {
        await connection.close();
      }
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`temporal dev server on ${address} did not answer within 60 s: ${(error as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
