import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startPitr } from '../../client/pitr.js';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { approveUpdate } from '../../workflows/restore-messages.js';
import type { PitrResult } from '../../workflows/point-in-time-restore.js';
import { ageKeygen } from '../encryption/age-cli.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';
import { recoveredSql, removeRecoveredCluster, serverNow, takeBaseBackup, waitForStatus } from './pitr-support.js';

// Point-in-time recovery from an S3 repository (SeaweedFS) whose WAL and base backups are
// age-encrypted: the base backup is decrypted by the worker, every WAL segment by the recovered
// server's restore_command (`pgrunbook wal-fetch`, with fetch-ahead), which gets the S3 keys from
// its environment and reads the identity file as the server's user.

let stack: TestStack;
let pitr: PitrSetup;
let keyDir: string;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  stack = await startTestStack({ s3: true });
  keyDir = mkdtempSync(join(tmpdir(), 'pgrunbook-pitr-keys-'));
  chmodSync(keyDir, 0o755);
  const key = ageKeygen(keyDir, 'pitr');
  if (isRoot()) chownSync(key.file, postgresUid().uid, postgresUid().gid);
  pitr = await startArchivingCluster(stack, { repository: 's3', encryption: { recipients: [key.recipient], identityFile: key.file } });
  await pitr.source.sql('CREATE TABLE organizations (id int PRIMARY KEY, name text NOT NULL); INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'app');
  await takeBaseBackup(stack, pitr);
  ({ stop: stopWorker } = await startPitrWorker(stack, pitr));
});

afterAll(async () => {
  await stopWorker?.();
  await pitr?.stop();
  await stack?.teardown();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

describe('pointInTimeRestore from an encrypted S3 repository', () => {
  it('recovers to T, before DELETE FROM organizations, with every segment fetched from S3 and decrypted by wal-fetch', async () => {
    await pitr.source.sql('INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(101, 130) g', 'app');
    const t = await serverNow(pitr);
    await pitr.source.sql('DELETE FROM organizations', 'app');
    await pitr.source.sql("INSERT INTO organizations VALUES (9001, 'after T')", 'app');
    await pitr.switchAndArchive();

    // The archive really is in S3 and encrypted.
    const repository = new RepositoryRegistry(pitr.config, pitr.env).get('s3');
    const segments = (await listArchivedWal(repository, PITR_CLUSTER)).filter((f) => f.kind === 'segment');
    expect(segments.length).toBeGreaterThan(1);
    expect(segments.every((f) => f.key.endsWith('.zst.age'))).toBe(true);

    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: t } });
    let dataDir: string | null = null;
    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
      await removeRecoveredCluster(pitr, dataDir);
    });
    const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running');
    expect(waiting.finished.map((s) => `${s.step}:${s.outcome}`)).toEqual(['resolve:ok', 'provision:ok', 'extract:ok', 'configure:ok', 'start:ok', 'recover:ok', 'verify:ok']);
    dataDir = String(waiting.details.dataDir);
    const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
    expect(await sql('SELECT count(*) FROM organizations')).toBe('130');
    expect(await sql('SELECT count(*) FROM organizations WHERE id = 9001')).toBe('0');

    await handle.executeUpdate(approveUpdate, { args: [{ by: 'test', reason: 'checked' }] });
    const result: PitrResult = await handle.result();
    expect(result.outcome).toBe('promoted');
    expect(await sql('SELECT pg_is_in_recovery()')).toBe('f');
    // Fetch-ahead leaves nothing behind once recovery ended.
    expect(existsSync(join(result.dataDir, 'pg_wal', '.pgrunbook-prefetch'))).toBe(false);
  });
});
