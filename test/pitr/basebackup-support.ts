import { createWorker, type WorkerSetup } from '../../worker/worker.js';
import type { PitrSetup } from '../support/pitr.js';
import type { TestStack } from '../support/stack.js';

/** An in-process worker for an archiving cluster (or a variant of its config), with its environment (the database URL variable). */
export async function startPitrWorker(stack: TestStack, pitr: PitrSetup, options: { config?: WorkerSetup['config']; wrapActivities?: WorkerSetup['wrapActivities']; metrics?: WorkerSetup['metrics'] } = {}): Promise<{ stop: () => Promise<void> }> {
  const worker = await createWorker({ config: options.config ?? pitr.config, connection: stack.temporal.nativeConnection, workflowBundle: stack.bundle, env: pitr.env, configPath: pitr.configPath, ...(options.wrapActivities ? { wrapActivities: options.wrapActivities } : {}), ...(options.metrics ? { metrics: options.metrics } : {}) });
  const running = worker.run();
  return {
    stop: async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
    },
  };
}
