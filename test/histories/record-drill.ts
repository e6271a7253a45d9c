// Records runRestoreDrill histories for the replay tests from real runs on the real stack:
//   npx tsx test/histories/record-drill.ts
// Each is recorded under a workflow id equal to its file name (the canary drill's child backup id
// derives from it), and replayed under the same id. Re-record only on purpose; see record.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { startBackup } from '../../client/backup.js';
import { readManifest } from '../../repository/catalog.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { writeAll } from '../../repository/types.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import type { DrillInput } from '../../workflows/drill-input.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack({ sampleDatabase: 'app' });
try {
  await stack.cluster.sql("CREATE TABLE public.bulk AS SELECT g AS id, encode(gen_random_bytes(700), 'base64') AS payload FROM generate_series(1, 30000) g", 'app');
  const config = stack.config(
    { app: { url: stack.databaseUrl('app'), repository: 'local', drill: { canary: { enabled: true }, smokeQueries: [{ name: 'an admin exists', sql: 'SELECT count(*) > 0 FROM public.users WHERE is_admin', expect: true }] } } },
    { notifications: {} },
  );
  const worker = await stack.startWorker(config);
  const run = async (name: string, input: DrillInput, during?: (id: string) => Promise<void>) => {
    const handle = await stack.client.workflow.start('runRestoreDrill', { taskQueue: config.temporal.taskQueue, workflowId: name, args: [input] });
    await during?.(name);
    await handle.result().catch(() => undefined);
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };

  // Canary on: marker row, child backup, checks all pass, cluster torn down, report written.
  await run('drill-canary-passed', { database: 'app' });

  // No such backup: the resolve step fails; reported and (no webhook configured) not sent.
  await run('drill-backup-not-found', { database: 'app', backup: 'app/20200101T000000Z' });

  // Row-count mismatch in a given backup: checks fail, teardown, report, notify.
  const backup = (await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult;
  const repo = new RepositoryRegistry(config, stack.workerEnv).get('local');
  const manifest = await readManifest(repo, backup.backupId);
  await writeAll(repo, `${backup.backupId}/manifest.json`, JSON.stringify({ ...manifest, rowCounts: { ...manifest.rowCounts, 'public.users': 1 } }));
  await run('drill-checks-failed', { database: 'app', backup: backup.backupId, canary: false });

  // Cancelled mid-restore: teardown and report still run.
  await run('drill-cancelled', { database: 'app', canary: false }, async (id) => {
    const handle = stack.client.workflow.getHandle(id);
    while ((await handle.query<{ currentStep: string | null }>('status')).currentStep !== 'restore') await new Promise((r) => setTimeout(r, 50));
    await handle.cancel();
  });
  await worker.stop();
} finally {
  await stack.teardown();
}
