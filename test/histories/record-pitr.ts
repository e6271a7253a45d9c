// Records point-in-time recovery histories for the replay tests from real runs on the real stack
// (PostgreSQL 15 archiving through `pgrunbook wal-push`; `npm run build` first):
//   npx tsx test/histories/record-pitr.ts
// basebackup-verified: probe, pg_basebackup, verify (pg_verifybackup), manifest, no retention;
// basebackup-pruned: the same with retention, starting its pruneBaseBackups child;
// basebackup-prune-completed: plan, retire, delete (base backups and WAL), report;
// pitr-promoted: mode new to a time, paused at it, verified, promoted by `approve`;
// pitr-discarded: mode new to an LSN, discarded by `reject` (the undo stack runs);
// pitr-unreachable: refused at resolve (a WAL gap), nothing created.
// Each is recorded under a workflow id equal to its file name and replayed under the same id.
// Re-record only on purpose; see record.ts.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import { listBaseBackups } from '../../pitr/base-catalog.js';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { parseLsn, segmentOf } from '../../pitr/wal-names.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { approveUpdate, rejectUpdate } from '../../workflows/restore-messages.js';
import type { BasebackupInput } from '../../workflows/basebackup-input.js';
import type { PitrInput } from '../../workflows/pitr-input.js';
import { Config } from '../../config/schema.js';
import { PITR_CLUSTER, startArchivingCluster } from '../support/pitr.js';
import { startTestStack } from '../support/stack.js';
import { startPitrWorker } from '../pitr/basebackup-support.js';
import { serverNow, waitForStatus } from '../pitr/pitr-support.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const here = fileURLToPath(new URL('.', import.meta.url));
const stack = await startTestStack();
const pitr = await startArchivingCluster(stack);
try {
  const save = async (name: string, handle: { fetchHistory(): Promise<unknown> }) => {
    writeFileSync(join(here, `${name}.json`), historyToJSON((await handle.fetchHistory()) as never) + '\n');
    console.log(`recorded ${name}`);
  };
  const taskQueue = pitr.config.temporal.taskQueue;
  const start = (type: 'basebackupCluster' | 'pruneBaseBackups' | 'pointInTimeRestore', name: string, input: BasebackupInput | PitrInput | { cluster: string; requestedBy?: string }) =>
    stack.client.workflow.start(type, { taskQueue, workflowId: name, args: [input] });
  const retained = Config.parse({ ...pitr.configObject, clusters: { [PITR_CLUSTER]: { ...(pitr.configObject.clusters as Record<string, object>)[PITR_CLUSTER], retention: { keepLast: 1 } } } });

  await pitr.source.sql('CREATE TABLE organizations (id int PRIMARY KEY, name text NOT NULL); INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'app');
  await pitr.switchAndArchive();

  let worker = await startPitrWorker(stack, pitr);
  const verified = await start('basebackupCluster', 'basebackup-verified', { cluster: PITR_CLUSTER });
  await verified.result();
  await save('basebackup-verified', verified);
  await worker.stop();

  worker = await startPitrWorker(stack, pitr, { config: retained });
  await pitr.source.sql('INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(101, 150) g', 'app');
  await pitr.switchAndArchive();
  const pruned = await start('basebackupCluster', 'basebackup-pruned', { cluster: PITR_CLUSTER });
  await pruned.result();
  await stack.client.workflow.getHandle('basebackup-pruned-prune').result();
  await save('basebackup-pruned', pruned);
  // Another base backup, so the recorded prune has one (and its WAL) to delete.
  await (await start('basebackupCluster', 'basebackup-extra', { cluster: PITR_CLUSTER })).result();
  await stack.client.workflow.getHandle('basebackup-extra-prune').terminate('recording: the next prune is the one recorded').catch(() => undefined);
  const prune = await start('pruneBaseBackups', 'basebackup-prune-completed', { cluster: PITR_CLUSTER, requestedBy: 'recording' });
  await prune.result();
  await save('basebackup-prune-completed', prune);
  await worker.stop();

  worker = await startPitrWorker(stack, pitr);
  const t = await serverNow(pitr);
  await pitr.source.sql('DELETE FROM organizations', 'app');
  await pitr.switchAndArchive();
  const promoted = await start('pointInTimeRestore', 'pitr-promoted', { cluster: PITR_CLUSTER, target: { time: t }, requestedBy: 'recording' });
  await waitForStatus(promoted, (s) => s.pendingDecision?.step === 'decide');
  await promoted.executeUpdate(approveUpdate, { args: [{ by: 'recording', reason: 'recorded history' }] });
  await promoted.result();
  await save('pitr-promoted', promoted);

  const lsn = (await pitr.source.sql('SELECT pg_current_wal_lsn()')).trim();
  await pitr.switchAndArchive();
  const discarded = await start('pointInTimeRestore', 'pitr-discarded', { cluster: PITR_CLUSTER, target: { lsn }, requestedBy: 'recording' });
  await waitForStatus(discarded, (s) => s.pendingDecision?.step === 'decide');
  await discarded.executeUpdate(rejectUpdate, { args: [{ by: 'recording', reason: 'recorded history' }] });
  await discarded.result();
  await save('pitr-discarded', discarded);

  // A gap: a segment after the newest base backup's start is gone from the archive.
  const repository = new RepositoryRegistry(pitr.config, pitr.env).get('local');
  const [newest] = (await listBaseBackups(repository, PITR_CLUSTER)).filter((b) => b.state === 'verified');
  const from = segmentOf(parseLsn(newest!.manifest!.startLsn)!);
  const wal = await listArchivedWal(repository, PITR_CLUSTER);
  const victim = wal.find((f) => f.kind === 'segment' && f.segment !== null && f.segment > from);
  if (!victim) throw new Error('no archived segment to remove for the gap');
  await repository.delete(victim.key);
  const unreachable = await start('pointInTimeRestore', 'pitr-unreachable', { cluster: PITR_CLUSTER, target: { latest: true }, requestedBy: 'recording' });
  await unreachable.result().catch(() => undefined);
  await save('pitr-unreachable', unreachable);
  await worker.stop();
} finally {
  await pitr.stop();
  await stack.teardown();
}
