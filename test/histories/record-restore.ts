// Records restoreDatabase histories for the replay tests from real runs on the real stack:
//   npx tsx test/histories/record-restore.ts
// Re-record only on purpose (a deliberate, patched() change); see record.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { startBackup } from '../../client/backup.js';
import { decideApproval, resolveStep, startRestore } from '../../client/restore.js';
import { loadSampleData } from '../../stack/sample-data.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import { demoApp, failingAt, flipByte } from '../support/restore.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack();
const app = await demoApp(stack, 'app');
try {
  await stack.cluster.sql('CREATE DATABASE app');
  await loadSampleData(stack.cluster.url('app'));
  await stack.cluster.sql('CREATE ROLE reporting');
  await app.start();
  const databases = (strategy: 'swap' | 'in-place', onStepFailure: 'ask' | 'abort' = 'ask') => ({
    app: {
      url: stack.databaseUrl('app'),
      restore: { strategy, onStepFailure, smokeQueries: [{ name: 'reporting role exists', sql: "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'", expect: 1 }] },
      app: app.config,
    },
  });
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };
  const waitFor = async (workflowId: string, kind: 'approval' | 'step') => {
    while ((await stack.client.workflow.getHandle(workflowId).query(statusQuery)).pendingDecision?.kind !== kind) await new Promise((r) => setTimeout(r, 200));
  };

  let config = stack.config(databases('swap'));
  let worker = await stack.startWorker(config);
  const backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;

  // swap with approval, the demo app stopped and started, health checked.
  const swap = await startRestore(stack.client, config, { database: 'app', backup: backupId });
  await waitFor(swap.workflowId, 'approval');
  await decideApproval(stack.client, swap.workflowId, 'approve', 'recording');
  await swap.result();
  await save('restore-swap-completed', swap);

  const rejected = await startRestore(stack.client, config, { database: 'app', backup: backupId });
  await waitFor(rejected.workflowId, 'approval');
  await decideApproval(stack.client, rejected.workflowId, 'reject', 'recording a rejection');
  await rejected.result().catch(() => undefined);
  await save('restore-rejected', rejected);

  // A failing smoke query, then an operator's retry.
  await stack.cluster.sql('DROP ROLE reporting');
  const retried = await startRestore(stack.client, config, { database: 'app', backup: backupId, requireApproval: false });
  await waitFor(retried.workflowId, 'step');
  await stack.cluster.sql('CREATE ROLE reporting');
  await resolveStep(stack.client, retried.workflowId, 'retry', { reason: 'recording' });
  await retried.result();
  await save('restore-operator-retry', retried);
  await worker.stop();

  // in-place, with its child safety backup.
  config = stack.config(databases('in-place'));
  worker = await stack.startWorker(config);
  const inPlace = await startRestore(stack.client, config, { database: 'app', backup: backupId, requireApproval: false });
  await inPlace.result();
  await save('restore-in-place-completed', inPlace);
  await worker.stop();

  // A failure after the rename: every undo runs.
  config = stack.config(databases('swap', 'abort'));
  worker = await stack.startWorker(config, failingAt('startApp', 'after'));
  const compensated = await startRestore(stack.client, config, { database: 'app', backup: backupId, requireApproval: false });
  await compensated.result().catch(() => undefined);
  await save('restore-failed-compensated', compensated);
  await worker.stop();

  // A corrupted artifact stops the restore at preflight.
  worker = await stack.startWorker(config);
  await flipByte(join(stack.workDir, 'repo', backupId, 'db_full.dump'), 2048);
  const corrupt = await startRestore(stack.client, config, { database: 'app', backup: backupId, requireApproval: false });
  await corrupt.result().catch(() => undefined);
  await save('restore-preflight-failed', corrupt);
  await worker.stop();
} finally {
  await app.stop().catch(() => undefined);
  await stack.teardown();
}
