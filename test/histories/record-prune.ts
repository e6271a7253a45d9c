// Records retention histories for the replay tests from real runs on the real stack:
//   npx tsx test/histories/record-prune.ts
// backup-pruned: a verified backup that starts its prune child (patched 'prune-after-backup');
// prune-completed: a prune that plans, retires, deletes and reports; prune-dry-run: plans only.
// Each is recorded under a workflow id equal to its file name (the prune child's id derives from
// it) and replayed under the same id. Re-record only on purpose; see record.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { startBackup } from '../../client/backup.js';
import type { BackupInput } from '../../workflows/backup-input.js';
import type { PruneInput } from '../../workflows/prune-input.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack({ sampleDatabase: 'app' });
try {
  const database = (retention?: object) => ({ app: { url: stack.databaseUrl('app'), repository: 'local', ...(retention ? { retention } : {}) } });
  const plain = stack.config(database());
  const retained = stack.config(database({ keepLast: 1 }));
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };
  const start = (type: 'backupDatabase' | 'pruneBackups', name: string, input: BackupInput | PruneInput) =>
    stack.client.workflow.start(type, { taskQueue: retained.temporal.taskQueue, workflowId: name, args: [input] });

  // An older backup for the prunes to delete, taken without retention (no prune child).
  let worker = await stack.startWorker(plain);
  await (await startBackup(stack.client, plain, { database: 'app' })).result();
  await worker.stop();

  worker = await stack.startWorker(retained);
  const backup = await start('backupDatabase', 'backup-pruned', { database: 'app' });
  await backup.result();
  await stack.client.workflow.getHandle('backup-pruned-prune').result();
  await save('backup-pruned', backup);
  await worker.stop();

  // One more backup without a prune child, so the recorded prune has something to delete.
  worker = await stack.startWorker(plain);
  await (await startBackup(stack.client, plain, { database: 'app' })).result();
  await worker.stop();

  worker = await stack.startWorker(retained);
  const dryRun = await start('pruneBackups', 'prune-dry-run', { database: 'app', dryRun: true });
  await dryRun.result();
  await save('prune-dry-run', dryRun);
  const pruned = await start('pruneBackups', 'prune-completed', { database: 'app', requestedBy: 'recording' });
  await pruned.result();
  await save('prune-completed', pruned);
  await worker.stop();
} finally {
  await stack.teardown();
}
