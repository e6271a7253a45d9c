// Records workflow histories for the replay tests from real runs on the real stack:
//   npx tsx test/histories/record.ts
// Re-record only on purpose (a deliberate, patched() change); the committed histories are what
// running workflows in production look like, and replaying them catches non-determinism.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import pg from 'pg';
import { startBackup } from '../../client/backup.js';
import { freePort } from '../../stack/ports.js';
import { loadSampleData } from '../../stack/sample-data.js';
import { statusQuery } from '../../workflows/runbook.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack();
try {
  await stack.cluster.sql('CREATE DATABASE app');
  await loadSampleData(stack.cluster.url('app'));
  const config = stack.config({ app: { url: stack.databaseUrl('app') }, gone: { host: '127.0.0.1', port: await freePort(), dbname: 'app' } });
  const { stop } = await stack.startWorker(config);
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };

  const ok = await startBackup(stack.client, config, { database: 'app', label: 'nightly' });
  await ok.result();
  await save('backup-verified', ok);

  const unreachable = await startBackup(stack.client, config, { database: 'gone' });
  await unreachable.result().catch(() => undefined);
  await save('backup-connection-failed', unreachable);

  const invalid = await stack.client.workflow.start('backupDatabase', { taskQueue: config.temporal.taskQueue, workflowId: 'invalid-input', args: [{ database: 'Bad!' }] });
  await invalid.result().catch(() => undefined);
  await save('backup-invalid-input', invalid);

  const lock = new pg.Client({ connectionString: stack.cluster.url('app') });
  await lock.connect();
  await lock.query('BEGIN; LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE');
  const cancelled = await startBackup(stack.client, config, { database: 'app' });
  while ((await cancelled.query(statusQuery)).currentStep !== 'dump') await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 1_000));
  await cancelled.cancel();
  await cancelled.result().catch(() => undefined);
  await lock.end();
  await save('backup-cancelled', cancelled);
  await stop();
} finally {
  await stack.teardown();
}
