import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BasePruneReport } from '../../activities/basebackup.js';
import { startBasebackup, startBasePrune } from '../../client/commands/basebackup.js';
import { Config } from '../../config/schema.js';
import { listBaseBackups, readBaseManifest } from '../../pitr/base-catalog.js';
import { baseBackupFolder, BASE_ARTIFACT } from '../../pitr/layout.js';
import { listArchivedWal, walObjectKey } from '../../pitr/wal-inventory.js';
import { parseLsn, parseWalFileName, segmentFileName, segmentOf } from '../../pitr/wal-names.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { applySchedules, describeIfExists } from '../../schedules/apply.js';
import type { BasebackupResult } from '../../workflows/basebackup-cluster.js';
import { statusQuery } from '../../workflows/runbook.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';

// Retention of base backups with their WAL, a base backup that fails verification, and the
// basebackup schedule: real worker, Temporal and PostgreSQL 15, local repository.

let stack: TestStack;
let pitr: PitrSetup;
let repository: Repository;

beforeAll(async () => {
  stack = await startTestStack();
  pitr = await startArchivingCluster(stack);
  repository = new RepositoryRegistry(pitr.config, pitr.env).get('local');
}, 120_000);

afterAll(async () => {
  await pitr?.stop();
  await stack?.teardown();
});

/** The archiving cluster's config with clusters.main changed. */
function withCluster(changes: Record<string, unknown>): Config {
  const clusters = pitr.configObject.clusters as Record<string, Record<string, unknown>>;
  return Config.parse({ ...pitr.configObject, clusters: { [PITR_CLUSTER]: { ...clusters[PITR_CLUSTER], ...changes } } });
}

const fakeSha = (n: number): string => n.toString(16).padStart(64, 'f');

/** Plants an archived WAL object under its real key layout (what wal-push would write). */
async function plantWal(name: string, n: number): Promise<string> {
  const key = walObjectKey(PITR_CLUSTER, parseWalFileName(name)!, fakeSha(n), 'zstd', false);
  await writeAll(repository, key, `planted ${name}`);
  return key;
}

describe('pruneBaseBackups with keepLast 1', () => {
  const made: BasebackupResult[] = [];
  const planted: Record<'before' | 'kept' | 'history' | 'otherTimelineBefore' | 'labelBefore', string> = {} as never;
  let keptStart: bigint;

  beforeAll(async () => {
    // Three base backups without retention, so no prune runs between them.
    const { stop } = await startPitrWorker(stack, pitr);
    try {
      for (let i = 0; i < 3; i++) {
        await pitr.source.sql(`CREATE TABLE IF NOT EXISTS w AS SELECT 1 AS x; INSERT INTO w SELECT generate_series(1, 1000)`, 'app');
        await pitr.source.sql('SELECT pg_switch_wal()');
        made.push(await (await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result());
        // Ids are per second: the next one must start in another second.
        await new Promise((r) => setTimeout(r, 1_100));
      }
    } finally {
      await stop();
    }
    keptStart = segmentOf(parseLsn(made[2]!.startLsn)!);
    // WAL around the newest (kept) backup's start segment, and a history file.
    planted.before = await plantWal(segmentFileName(1, keptStart - 1n), 1);
    planted.kept = await plantWal(segmentFileName(1, keptStart), 2);
    planted.labelBefore = await plantWal(`${segmentFileName(1, keptStart - 1n)}.00000028.backup`, 3);
    planted.otherTimelineBefore = await plantWal(segmentFileName(2, keptStart - 1n), 4);
    planted.history = await plantWal('00000002.history', 5);
    // What a writer that died long ago leaves: a folder without manifest.
    await writeAll(repository, `${baseBackupFolder(`${PITR_CLUSTER}/20200101T000000Z`)}${BASE_ARTIFACT.tar}.zst`, 'partial');
  }, 240_000);

  it('on a dry run says which backups and how much WAL would go, and deletes nothing', async () => {
    const before = (await repository.list(`pitr/${PITR_CLUSTER}/`)).map((o) => o.key);
    const { stop } = await startPitrWorker(stack, pitr, { config: withCluster({ retention: { keepLast: 1 } }) });
    try {
      const result = await (await startBasePrune(stack.client, pitr.config, { cluster: PITR_CLUSTER, dryRun: true })).result();
      expect(result.configured).toBe(true);
      expect(result.decisions.map((d) => [d.id, d.action])).toEqual([
        [made[2]!.backupId, 'keep'],
        [made[1]!.backupId, 'delete'],
        [made[0]!.backupId, 'delete'],
        [`${PITR_CLUSTER}/20200101T000000Z`, 'delete'],
      ]);
      expect(result.decisions[1]!.reasons).toEqual(['outside keepLast 1']);
      expect(result.walCutoff).toEqual({ segment: made[2]!.walRange.start, backupId: made[2]!.backupId });
      expect(result.walToDelete).toBeGreaterThanOrEqual(3);
      expect(result.deleted).toEqual([]);
    } finally {
      await stop();
    }
    expect((await repository.list(`pitr/${PITR_CLUSTER}/`)).map((o) => o.key)).toEqual(before);
  });

  it('deletes the older base backups and the WAL before the kept one\'s start segment, keeping its WAL and history files', async () => {
    const { stop } = await startPitrWorker(stack, pitr, { config: withCluster({ retention: { keepLast: 1 } }) });
    try {
      const result = await (await startBasePrune(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result();
      expect(result.deleted.sort()).toEqual([made[0]!.backupId, made[1]!.backupId, `${PITR_CLUSTER}/20200101T000000Z`].sort());
      expect(result.walDeleted).toBeGreaterThanOrEqual(3);
    } finally {
      await stop();
    }
    expect((await listBaseBackups(repository, PITR_CLUSTER)).map((b) => [b.id, b.state])).toEqual([[made[2]!.backupId, 'verified']]);
    expect(await repository.list(`pitr/${PITR_CLUSTER}/base/20200101T000000Z/`)).toEqual([]);
    const keys = new Set((await repository.list(`pitr/${PITR_CLUSTER}/wal/`)).map((o) => o.key));
    expect([planted.before, planted.labelBefore, planted.otherTimelineBefore].filter((k) => keys.has(k))).toEqual([]);
    expect([planted.kept, planted.history].filter((k) => keys.has(k))).toEqual([planted.kept, planted.history]);
    // Whatever the server archived itself follows the same rule.
    for (const file of await listArchivedWal(repository, PITR_CLUSTER)) {
      if (file.kind !== 'history') expect(file.segment! >= keptStart, file.name).toBe(true);
    }
    const report = JSON.parse((await readAll(repository, `pitr/${PITR_CLUSTER}/reports/last-prune.json`)).toString()) as BasePruneReport;
    expect(report).toMatchObject({ kind: 'basebackup-prune', cluster: PITR_CLUSTER, kept: 1, wal: { cutoff: made[2]!.walRange.start, cutoff_backup: made[2]!.backupId } });
    expect(report.deleted.map((d) => d.backup_id).sort()).toEqual([made[0]!.backupId, made[1]!.backupId, `${PITR_CLUSTER}/20200101T000000Z`].sort());
  });

  it('runs after a verified base backup when retention is configured, deleting the one before it', async () => {
    const { stop } = await startPitrWorker(stack, pitr, { config: withCluster({ retention: { keepLast: 1 } }) });
    try {
      const next = await (await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result();
      expect(next.prune).toMatch(/^basebackup-main-.*-prune$/);
      const prune = await stack.client.workflow.getHandle(next.prune!).result();
      expect(prune).toMatchObject({ deleted: [made[2]!.backupId] });
      expect((await listBaseBackups(repository, PITR_CLUSTER)).map((b) => b.id)).toEqual([next.backupId]);
    } finally {
      await stop();
    }
  });
});

describe('a base backup that fails verification', () => {
  it('is recorded as failed, never verified, and fails the workflow', async () => {
    // The stored tar is damaged between the upload and the verification (a bad disk, a bad copy).
    const { stop } = await startPitrWorker(stack, pitr, {
      wrapActivities: (activities) => ({
        ...activities,
        takeBasebackup: async (input) => {
          const taken = await activities.takeBasebackup(input);
          const key = `${baseBackupFolder(input.backupId)}${taken.file}`;
          const bytes = await readAll(repository, key);
          bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
          await writeAll(repository, key, bytes);
          return taken;
        },
      }),
    });
    try {
      const handle = await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER });
      const failure = await handle.result().then(() => null, (error: unknown) => error);
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      expect(((failure as WorkflowFailedError).cause as Error).message).toMatch(/failed verification: .*sha256 of .* is [0-9a-f]{64}, its manifest says [0-9a-f]{64}: the stored tar was modified or damaged/);
      const status = await handle.query(statusQuery);
      const id = status.details.backupId as string;
      const manifest = await readBaseManifest(repository, id);
      expect(manifest).toMatchObject({ status: 'failed', verification: { ok: false } });
      expect((await listBaseBackups(repository, PITR_CLUSTER)).find((b) => b.id === id)?.state).toBe('failed');
    } finally {
      await stop();
    }
  });
});

describe('schedules apply', () => {
  it('creates pgrunbook-basebackup-<cluster> starting basebackupCluster on Sundays at 01:00 UTC, and a second apply changes nothing', async () => {
    const changes = await applySchedules(stack.client, pitr.config);
    expect(changes.find((c) => c.scheduleId === 'pgrunbook-basebackup-main')).toMatchObject({ action: 'created', kind: 'basebackup', database: PITR_CLUSTER });
    const description = await describeIfExists(stack.client, 'pgrunbook-basebackup-main');
    expect(description?.action).toMatchObject({ type: 'startWorkflow', workflowType: 'basebackupCluster', workflowId: 'basebackup-main', args: [{ cluster: PITR_CLUSTER, requestedBy: 'schedule' }] });
    expect(description?.spec.calendars?.[0]).toMatchObject({ dayOfWeek: [{ start: 'SUNDAY' }], hour: [{ start: 1 }], minute: [{ start: 0 }] });
    expect((await applySchedules(stack.client, pitr.config)).find((c) => c.scheduleId === 'pgrunbook-basebackup-main')?.action).toBe('unchanged');
    const disabled = withCluster({ schedules: { basebackup: { enabled: false } } });
    expect((await applySchedules(stack.client, disabled)).find((c) => c.scheduleId === 'pgrunbook-basebackup-main')).toMatchObject({ action: 'deleted', reason: 'disabled in the config (clusters.main.schedules.basebackup.enabled: false)' });
    expect(await describeIfExists(stack.client, 'pgrunbook-basebackup-main')).toBeNull();
  });
});

describe('the CLI', () => {
  it('`basebackup --wait --json` takes a verified base backup that `basebackups list --json` shows with its LSNs, and unknown clusters are refused', async () => {
    const { stop } = await startPitrWorker(stack, pitr);
    try {
      const taken = await pitr.cli(['basebackup', '--wait', '--json']);
      expect(taken.code, taken.stderr).toBe(0);
      const result = JSON.parse(taken.stdout) as BasebackupResult & { ok: boolean };
      expect(result).toMatchObject({ ok: true, status: 'verified', cluster: PITR_CLUSTER, timeline: 1 });
      const listed = await pitr.cli(['basebackups', 'list', '--json']);
      expect(listed.code, listed.stderr).toBe(0);
      const { backups } = JSON.parse(listed.stdout) as { backups: { id: string; state: string; startLsn: string; stopLsn: string; verification: { ok: boolean } }[] };
      expect(backups[0]).toMatchObject({ id: result.backupId, state: 'verified', startLsn: result.startLsn, stopLsn: result.stopLsn, verification: { ok: true } });
      const human = await pitr.cli(['basebackups', 'list']);
      expect(human.stdout).toMatch(new RegExp(`${result.backupId} \\(latest\\)\\s+verified\\s+${result.startLsn}`));
    } finally {
      await stop();
    }
    const unknown = await pitr.cli(['basebackups', 'list', '--cluster', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('error: unknown cluster "nope"\nHINT: clusters in the config: main');
  });
});
