import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.js';
import { temporalCli } from './binaries.js';

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
