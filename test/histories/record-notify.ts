// Records histories of the runbooks' notification steps (patched: notify-backup-failure,
// notify-restore-waiting, notify-restore-finished, notify-drill-result) for the replay tests:
//   npx tsx test/histories/record-notify.ts
// A local HTTP server plays the webhook. Re-record only on purpose; see record.ts.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { startBackup } from '../../client/backup.js';
import { decideApproval, startRestore } from '../../client/restore.js';
import { freePort } from '../../stack/ports.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import { startTestStack } from '../support/stack.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack({ sampleDatabase: 'app' });
const server = createServer((req, res) => req.resume().on('end', () => res.writeHead(200).end('ok')));
const port = await freePort();
await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
stack.workerEnv.RECORD_WEBHOOK = `http://127.0.0.1:${port}/hook`;
const clusters = mkdtempSync(join(tmpdir(), 'pgrunbook-record-'));
chmodSync(clusters, 0o755);
try {
  const config = stack.config(
    {
      app: { url: stack.databaseUrl('app'), repository: 'local', drill: { target: { type: 'cluster', dir: clusters } } },
      gone: { url: stack.databaseUrl('gone_db', 'RECORD_GONE_URL'), repository: 'local' },
    },
    { notifications: { webhook: { urlEnv: 'RECORD_WEBHOOK' } } },
  );
  const worker = await stack.startWorker(config);
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };

  // A backup of a database that does not exist: failed, manifest, notify.
  const failed = await startBackup(stack.client, config, { database: 'gone' });
  await failed.result().catch(() => undefined);
  await save('backup-failed-notified', failed);

  // A restore that waits for approval (notified while waiting), is rejected, and its end is told.
  const backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
  const restore = await startRestore(stack.client, config, { database: 'app', backup: backupId });
  while ((await restore.query(statusQuery)).pendingDecision?.kind !== 'approval') await new Promise((r) => setTimeout(r, 100));
  await decideApproval(stack.client, restore.workflowId, 'reject', 'recording');
  await restore.result().catch(() => undefined);
  await save('restore-rejected-notified', restore);

  // A passed drill, told.
  const drill = await stack.client.workflow.start('runRestoreDrill', { taskQueue: config.temporal.taskQueue, workflowId: 'drill-passed-notified', args: [{ database: 'app', backup: backupId }] });
  await drill.result();
  await save('drill-passed-notified', drill);
  await worker.stop();
} finally {
  server.close();
  await stack.teardown();
  rmSync(clusters, { recursive: true, force: true });
}
