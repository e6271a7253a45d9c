import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CreateMultipartUploadCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inventory, pruneReportKey, removeBackupFolder, type PruneReport } from '../../activities/prune.js';
import { startBackup } from '../../client/backup.js';
import { startPrune } from '../../client/prune.js';
import { decideApproval, startRestore } from '../../client/restore.js';
import type { Config } from '../../config/schema.js';
import { latestGoodBackup, listBackups, readManifest } from '../../repository/catalog.js';
import { ARTIFACT, backupId as makeBackupId } from '../../repository/layout.js';
import type { Manifest } from '../../repository/manifest.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { applySchedules, describeIfExists, desiredSchedules } from '../../schedules/apply.js';
import { findSchedule, triggerSchedule } from '../../schedules/operate.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import type { PruneResult } from '../../workflows/prune-backups.js';
import { statusQuery } from '../../workflows/runbook.js';
import { runCli } from '../support/cli.js';
import { failingAt } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// Real prunes (pruneBackups on a real worker, Temporal, PostgreSQL) against the local and the S3
// repository: one real backup per repository, plus older backups planted through the repository
// API as byte-for-byte copies of it (restorable, checksums intact) with rewritten manifests.

const DAY = 86_400_000;
const HOUR = 3_600_000;

let stack: TestStack;

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
});

afterAll(async () => {
  await stack?.teardown();
});

describe.each(['local', 's3'])('pruneBackups on the %s repository', (repositoryId) => {
  const configWith = (retention?: Record<string, unknown>): Config => stack.config({ app: { url: stack.databaseUrl('app'), repository: repositoryId, ...(retention ? { retention } : {}) } });
  let repository: Repository;
  /** The real backup every test keeps (the newest verified one unless a test makes a newer one). */
  let real: string;
  let realFiles: Map<string, Buffer>;
  let realManifest: Manifest;

  beforeAll(async () => {
    // Without retention: the real backup's own prune child must not race the tests' planting.
    const config = configWith();
    repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
    const { stop } = await stack.startWorker(config);
    try {
      real = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
    } finally {
      await stop();
    }
    realManifest = await readManifest(repository, real);
    realFiles = new Map();
    for (const object of await repository.list(`${real}/`)) {
      const name = object.key.slice(real.length + 1);
      if (name !== ARTIFACT.manifest) realFiles.set(name, await readAll(repository, object.key));
    }
  });

  /** Removes every backup folder but the real one; reports stay. */
  async function reset(): Promise<void> {
    for (const c of await inventory(repository, 'app')) if (c.id !== real) await removeBackupFolder(repository, c.id);
  }

  type Planted = 'verified' | 'failed' | 'incomplete' | 'partial-upload';

  /** Plants a backup folder started `ageMs` ago: a copy of the real backup, or what a dead writer leaves. */
  async function plant(ageMs: number, state: Planted, label?: string): Promise<string> {
    const startedAt = new Date(Math.floor((Date.now() - ageMs) / 1000) * 1000);
    const id = makeBackupId('app', startedAt, label);
    if (state === 'partial-upload') {
      await simulateCrashedWriter(`${id}/${ARTIFACT.customDump}`);
      return id;
    }
    for (const [name, content] of realFiles) {
      if (state === 'incomplete' && name !== ARTIFACT.customDump) continue;
      await writeAll(repository, `${id}/${name}`, content);
    }
    if (state === 'incomplete') return id;
    const manifest: Manifest = {
      ...realManifest,
      id,
      label: label ?? null,
      status: state,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date(startedAt.getTime() + 10_000).toISOString(),
      ...(state === 'failed' ? { verification: null, error: { step: 'verify', type: 'VerificationFailed', message: 'planted failure' } } : {}),
    };
    await writeAll(repository, `${id}/${ARTIFACT.manifest}`, JSON.stringify(manifest, null, 2));
    return id;
  }

  /** What a writer killed mid-upload leaves: a temp file (local) or an open multipart upload (S3), nothing listed. */
  async function simulateCrashedWriter(key: string): Promise<void> {
    if (repositoryId === 'local') {
      const path = join(stack.workDir, 'repo', ...key.split('/'));
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`), randomBytes(1024));
      return;
    }
    const s3 = stack.s3!;
    const raw = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    try {
      const Key = `pgrunbook/${key}`;
      const { UploadId } = await raw.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key }));
      await raw.send(new UploadPartCommand({ Bucket: s3.bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(5 * 1024 * 1024) }));
    } finally {
      raw.destroy();
    }
  }

  /** Everything under app/ and reports/: published objects and incomplete writes. */
  async function snapshot(): Promise<string[]> {
    const objects = [...(await repository.list('app/')), ...(await repository.list('reports/'))].map((o) => `${o.key} ${o.size}`);
    const writes = (await repository.listIncompleteWrites('app/')).map((w) => `incomplete ${w.key}`);
    return [...objects, ...writes].sort();
  }

  async function folderGone(id: string): Promise<void> {
    expect(await repository.list(`${id}/`)).toEqual([]);
    expect(await repository.listIncompleteWrites(`${id}/`)).toEqual([]);
    if (repositoryId === 'local') expect(existsSync(join(stack.workDir, 'repo', ...id.split('/')))).toBe(false);
  }

  async function prune(config: Config, dryRun = false): Promise<PruneResult> {
    return (await startPrune(stack.client, config, { database: 'app', dryRun, requestedBy: 'test' })).result();
  }

  const actionsOf = (r: PruneResult) => Object.fromEntries(r.decisions.map((d) => [d.id, d.action]));
  const reasonsOf = (r: PruneResult, id: string) => r.decisions.find((d) => d.id === id)?.reasons;

  it('a dry run changes nothing; the prune deletes exactly what it planned, by the rule that decided it, and a second prune deletes nothing', async () => {
    await reset();
    const retention = { keepLast: 2, labels: { 'pre-upgrade': { keepLast: 1 } } };
    const config = configWith(retention);
    const ids = {
      kept: await plant(1 * DAY, 'verified'),
      beyondKeepLast: await plant(2 * DAY, 'verified', 'scheduled'),
      beyondKeepLastToo: await plant(3 * DAY, 'verified'),
      preUpgradeKept: await plant(5 * DAY, 'verified', 'pre-upgrade'),
      preUpgradeOld: await plant(6 * DAY, 'verified', 'pre-upgrade'),
      failedOld: await plant(8 * DAY, 'failed'),
      failedRecent: await plant(1 * DAY + HOUR, 'failed'),
      incompleteOld: await plant(2 * DAY + HOUR, 'incomplete'),
      incompleteRecent: await plant(HOUR, 'incomplete'),
      orphanedUpload: await plant(3 * DAY + HOUR, 'partial-upload'),
    };
    // Reports beside the backups are never backups and never pruned.
    await writeAll(repository, 'reports/app/drill-20250101T100000Z.json', '{"kind":"drill"}');
    await writeAll(repository, 'app/_reports/restore-20250101T100000Z.json', '{}');
    const doomed = [ids.beyondKeepLast, ids.beyondKeepLastToo, ids.preUpgradeOld, ids.failedOld, ids.incompleteOld, ids.orphanedUpload];
    const survivors = [real, ids.kept, ids.preUpgradeKept, ids.failedRecent, ids.incompleteRecent];

    const { stop } = await stack.startWorker(config);
    try {
      const before = await snapshot();
      const planned = await prune(config, true);
      expect(await snapshot()).toEqual(before);
      expect(planned).toMatchObject({ dryRun: true, configured: true, deleted: [], reportKey: null, repository: repositoryId });
      expect(Object.keys(actionsOf(planned)).sort()).toEqual([...doomed, ...survivors].sort());
      expect(planned.decisions.filter((d) => d.action === 'delete').map((d) => d.id).sort()).toEqual([...doomed].sort());
      expect(reasonsOf(planned, real)).toEqual(['newest verified backup (never deleted)', 'keepLast 2 (#1)']);
      expect(reasonsOf(planned, ids.beyondKeepLast)).toEqual(['outside keepLast 2']);
      expect(reasonsOf(planned, ids.preUpgradeKept)).toEqual(['labels.pre-upgrade.keepLast 1 (#1)']);
      expect(reasonsOf(planned, ids.preUpgradeOld)).toEqual(['outside labels.pre-upgrade.keepLast 1']);
      expect(reasonsOf(planned, ids.failedOld)).toEqual(['failedMaxAgeDays 7: failed more than 7 days ago']);
      expect(reasonsOf(planned, ids.orphanedUpload)?.[0]).toMatch(/^incompleteMaxAgeHours 24: no manifest, started more than 24 h ago/);
      expect(reasonsOf(planned, ids.incompleteRecent)?.[0]).toMatch(/may still be written/);

      if (repositoryId === 'local') {
        // The operator's view of the same dry run: a table of backup, state, action and rule.
        const path = stack.writeConfig({ app: { url: stack.databaseUrl('app'), repository: repositoryId, retention } });
        const cli = await runCli(['backups', 'prune', '--database', 'app', '--dry-run', '--config', path], stack.workerEnv);
        expect(cli.code).toBe(0);
        expect(cli.stdout).toContain(`(dry run: nothing was deleted): would delete 6 of 11 backup folders`);
        expect(cli.stdout).toMatch(/BACKUP\s+STATE\s+ACTION\s+RULE/);
        expect(cli.stdout).toMatch(new RegExp(`${ids.beyondKeepLast}\\s+verified\\s+delete\\s+outside keepLast 2\\n`));
        expect(cli.stdout).toMatch(new RegExp(`${ids.failedOld}\\s+failed\\s+delete\\s+failedMaxAgeDays 7`));
        expect(cli.stdout).toMatch(new RegExp(`${real.replace('/', '\\/')}\\s+verified\\s+keep\\s+newest verified backup`));
        const json = await runCli(['backups', 'prune', '--database', 'app', '--dry-run', '--json', '--config', path], stack.workerEnv);
        expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, dryRun: true, deleted: [] });
        expect(await snapshot()).toEqual(before);
      }

      const pruned = await prune(config);
      expect(pruned.deleted.sort()).toEqual([...doomed].sort());
      expect((await listBackups(repository, 'app')).map((b) => b.id).sort()).toEqual([...survivors].sort());
      for (const id of doomed) await folderGone(id);
      expect((await latestGoodBackup(repository, 'app'))?.id).toBe(real);
      expect(await repository.stat('reports/app/drill-20250101T100000Z.json')).toBeDefined();
      expect(await repository.stat('app/_reports/restore-20250101T100000Z.json')).toBeDefined();
      const report = JSON.parse((await readAll(repository, pruneReportKey('app'))).toString('utf8')) as PruneReport;
      expect(report).toMatchObject({ kind: 'prune', database: 'app', repository: repositoryId, requested_by: 'test', kept: survivors.length });
      expect(report.deleted.find((d) => d.backup_id === ids.preUpgradeOld)).toEqual({ backup_id: ids.preUpgradeOld, state: 'verified', reasons: ['outside labels.pre-upgrade.keepLast 1'] });

      const again = await prune(config);
      expect(again.deleted).toEqual([]);
      expect((await listBackups(repository, 'app')).map((b) => b.id).sort()).toEqual([...survivors].sort());
    } finally {
      await stop();
    }
  });

  it('a prune that fails after retiring manifests leaves no half-deleted backup listed as good, and the next prune finishes it', async () => {
    await reset();
    const config = configWith({ keepLast: 2 });
    const kept = await plant(1 * DAY, 'verified');
    const doomed = [await plant(2 * DAY, 'verified'), await plant(3 * DAY, 'verified')];

    // The worker dies (here: fails for good) between deleting the manifests and the other files.
    const broken = await stack.startWorker(config, failingAt('removeBackupFiles', 'before'));
    try {
      await expect(prune(config)).rejects.toBeInstanceOf(WorkflowFailedError);
    } finally {
      await broken.stop();
    }
    const listed = await listBackups(repository, 'app');
    for (const id of doomed) {
      expect(listed.find((b) => b.id === id)?.state).toBe('incomplete');
      expect((await repository.list(`${id}/`)).length).toBeGreaterThan(0); // files still there, manifest gone
    }
    expect(listed.filter((b) => b.state === 'verified').map((b) => b.id)).toEqual([real, kept]);
    expect((await latestGoodBackup(repository, 'app'))?.id).toBe(real);

    const { stop } = await stack.startWorker(config);
    try {
      const rerun = await prune(config);
      expect(rerun.deleted.sort()).toEqual([...doomed].sort());
      for (const id of doomed) expect(reasonsOf(rerun, id)?.[0]).toMatch(/^incompleteMaxAgeHours 24: no manifest, started more than 24 h ago \(orphaned partial upload or half-deleted backup\)/);
      for (const id of doomed) await folderGone(id);
      expect((await listBackups(repository, 'app')).map((b) => b.id)).toEqual([real, kept]);
    } finally {
      await stop();
    }
  });

  it('never deletes the backup a running restore uses; once the restore ends, the next prune does', async () => {
    await reset();
    const config = configWith({ keepLast: 2 });
    const kept = await plant(1 * DAY, 'verified');
    const used = await plant(10 * DAY, 'verified');
    const { stop } = await stack.startWorker(config);
    try {
      // A restore of the old backup over the live database waits for approval, its backup resolved and checked.
      const restore = await startRestore(stack.client, config, { database: 'app', backup: used });
      for (let i = 0; (await restore.query(statusQuery)).pendingDecision?.kind !== 'approval'; i++) {
        if (i > 600) throw new Error('the restore never asked for approval');
        await new Promise((r) => setTimeout(r, 200));
      }
      const pruned = await prune(config);
      expect(pruned.deleted).toEqual([]);
      expect(actionsOf(pruned)[used]).toBe('keep');
      expect(reasonsOf(pruned, used)).toEqual([`protected: restore ${restore.workflowId} is running`, 'outside keepLast 2']);
      expect((await listBackups(repository, 'app')).map((b) => b.id)).toEqual([real, kept, used]);

      await decideApproval(stack.client, restore.workflowId, 'reject', 'the prune test is done with it');
      await expect(restore.result()).rejects.toBeInstanceOf(WorkflowFailedError);
      const after = await prune(config);
      expect(after.deleted).toEqual([used]);
      await folderGone(used);
    } finally {
      await stop();
    }
  });

  it('a verified backup starts a prune of its database as an abandoned child', async () => {
    await reset();
    const config = configWith({ keepLast: 2 });
    const old = [await plant(1 * DAY, 'verified'), await plant(2 * DAY, 'verified')];
    const { stop } = await stack.startWorker(config);
    try {
      const backup = await startBackup(stack.client, config, { database: 'app' });
      const result = (await backup.result()) as BackupResult;
      expect((await backup.query(statusQuery)).details.prune).toBe(`${backup.workflowId}-prune`);
      const child = stack.client.workflow.getHandle(`${backup.workflowId}-prune`);
      const description = await child.describe();
      expect(description.type).toBe('pruneBackups');
      expect(description.parentExecution?.workflowId).toBe(backup.workflowId);
      const pruned = (await child.result()) as PruneResult;
      // The newest two verified backups stay: the new one and the real one; both planted ones go.
      expect(pruned.deleted.sort()).toEqual([...old].sort());
      expect((await listBackups(repository, 'app')).map((b) => b.id)).toEqual([result.backupId, real]);
      await removeBackupFolder(repository, result.backupId);
    } finally {
      await stop();
    }
  });
});

describe('the prune schedule', () => {
  it('exists only where retention is configured: daily at 03:00 UTC, starting pruneBackups; removing retention deletes it', async () => {
    // A task queue of its own (apply manages its own queue's schedules); backup and drill schedules off.
    const temporal = { ...(stack.configObject({}).temporal as object), taskQueue: `prune-schedule-${process.pid}` };
    const off = { backup: { enabled: false }, drill: { enabled: false } };
    const configWith = (retention?: object): Config => stack.config({ app: { url: stack.databaseUrl('app'), repository: 'local', schedules: off, ...(retention ? { retention } : {}) } }, { temporal });
    const without = configWith();
    const withRetention = configWith({ keepLast: 7 });
    expect(desiredSchedules(without).find((d) => d.kind === 'prune')).toMatchObject({ scheduleId: 'pgrunbook-prune-app', enabled: false });

    expect(await applySchedules(stack.client, withRetention)).toEqual([expect.objectContaining({ scheduleId: 'pgrunbook-prune-app', kind: 'prune', action: 'created' })]);
    const description = (await describeIfExists(stack.client, 'pgrunbook-prune-app'))!;
    expect(description.action).toMatchObject({ workflowType: 'pruneBackups', workflowId: 'prune-app', args: [{ database: 'app', requestedBy: 'schedule' }] });
    expect(description.spec.calendars?.[0]).toMatchObject({ hour: [{ start: 3, end: 3, step: 1 }], minute: [{ start: 0, end: 0, step: 1 }] });
    expect(description.spec.timezone || 'UTC').toBe('UTC');

    const { stop } = await stack.startWorker(withRetention);
    try {
      const { handle } = await findSchedule(stack.client, withRetention, 'pgrunbook-prune-app', { mutating: true, usage: '' });
      const triggered = await triggerSchedule(handle, description);
      expect(triggered.workflowId).toMatch(/^prune-app-\d{4}-\d{2}-\d{2}T/);
      const result = (await stack.client.workflow.getHandle(triggered.workflowId!).result()) as PruneResult;
      expect(result).toMatchObject({ database: 'app', configured: true, dryRun: false });
    } finally {
      await stop();
    }

    expect(await applySchedules(stack.client, without)).toEqual([
      expect.objectContaining({ scheduleId: 'pgrunbook-prune-app', action: 'deleted', reason: 'no retention configured (databases.app.retention)' }),
    ]);
    expect(await describeIfExists(stack.client, 'pgrunbook-prune-app')).toBeNull();
  });
});
