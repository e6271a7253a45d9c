import { IllegalStateError } from '@temporalio/common';
import { Runtime, type RuntimeOptions } from '@temporalio/worker';
import { freePort } from '../stack/ports.js';

// The Temporal SDK's runtime is a process-wide singleton, configured once, before the first
// native connection. The CLI chooses its options (the log level) at start; the worker installs
// it when it starts, adding the Prometheus exporter for the SDK's own metrics.

let cliOptions: Pick<RuntimeOptions, 'logger'> = {};

/** Options the runtime is installed with when a worker starts (the CLI's logger). Installs nothing. */
export function configureRuntime(options: Pick<RuntimeOptions, 'logger'>): void {
  cliOptions = options;
}

/**
 * Installs the runtime for a worker. With `runtimeMetrics`, the SDK's metrics (temporal_*: polls,
 * task latencies, slots) are exported by its Rust core on a free loopback port, which the
 * worker's /metrics merges in; returns that endpoint. Where something created the runtime
 * first (tests that run many workers in one process), nothing is installed and there are no
 * runtime metrics: null.
 */
export async function installWorkerRuntime(options: { runtimeMetrics: boolean }): Promise<{ runtimeMetricsUrl: string | null }> {
  const address = options.runtimeMetrics ? `127.0.0.1:${await freePort()}` : null;
  try {
    Runtime.install({
      ...cliOptions,
      ...(address
        ? {
            telemetryOptions: {
              // Prometheus conventions: seconds, unit suffixes, counters ending in _total.
              metrics: { prometheus: { bindAddress: address, useSecondsForDurations: true, unitSuffix: true, countersTotalSuffix: true } },
            },
          }
        : {}),
    });
  } catch (error) {
    if (error instanceof IllegalStateError) return { runtimeMetricsUrl: null };
    throw error;
  }
  return { runtimeMetricsUrl: address ? `http://${address}/metrics` : null };
}
