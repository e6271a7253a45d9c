// Records fleet histories for the replay tests from real runs on the real stack:
//   npx tsx test/histories/record-fleet.ts
// fleet-partial: two databases backed up as child workflows on the control queue and on a site's
// task queue, one broken database reported as failed, and the server's globals dumped;
// fleet-child-backup: one of fleet-partial's child backups;
// fleet-unknown: a fleet the worker's config does not know (fails in plan).
// Each is recorded under a workflow id equal to its file name and replayed under the same id.
// Re-record only on purpose; see record.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { FleetInput, FleetResult } from '../../workflows/fleet-input.js';
import { createWorker } from '../../worker/worker.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack({ sampleDatabase: 'app' });
try {
  const control = (stack.configObject({}).temporal as { taskQueue: string }).taskQueue;
  const site = `${control}-site`;
  const config = stack.config(
    {
      app: { url: stack.databaseUrl('app'), labels: { fleet: 'yes' } },
      'app-site': { url: stack.databaseUrl('app'), taskQueue: site, labels: { fleet: 'yes' } },
      broken: { url: stack.databaseUrl('no_such_database'), labels: { fleet: 'yes' } },
    },
    { fleets: { recorded: { select: { labels: { fleet: 'yes' } }, concurrency: 2 } } },
  );
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };
  const start = (name: string, input: FleetInput) => stack.client.workflow.start<(input: FleetInput) => Promise<FleetResult>>('backupFleet', { taskQueue: control, workflowId: name, args: [input] });

  const controlWorker = await stack.startWorker(config);
  const siteWorker = await createWorker({ config, connection: stack.temporal.nativeConnection, workflowBundle: stack.bundle, env: stack.workerEnv, taskQueue: site });
  const siteRun = siteWorker.run();
  try {
    const partial = await start('fleet-partial', { fleet: 'recorded', requestedBy: 'api' });
    const result = await partial.result();
    if (result.failed !== 1 || result.succeeded !== 2 || result.globals[0]?.status !== 'succeeded') throw new Error(`unexpected fleet result: ${JSON.stringify(result)}`);
    await save('fleet-partial', partial);
    // One of its children: a backup whose verified manifest is written non-cancellable (patched
    // 'verified-manifest-not-cancellable'); the older backup-*.json histories replay the other branch.
    await save('fleet-child-backup', stack.client.workflow.getHandle(result.databases.find((d) => d.database === 'app')!.workflowId));
    const unknown = await start('fleet-unknown', { fleet: 'no-such-fleet' });
    await unknown.result().catch(() => undefined);
    await save('fleet-unknown', unknown);
  } finally {
    siteWorker.shutdown();
    await siteRun;
    await controlWorker.stop();
  }
} finally {
  await stack.teardown();
}
