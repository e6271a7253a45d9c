import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startRestore } from '../../client/restore.js';
import { projectRoot, temporalCli } from '../../stack/binaries.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery, type RunbookStatus } from '../../workflows/runbook.js';
import { contentFingerprint, type ContentFingerprint } from '../support/content.js';
import { demoApp, flipByte } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const run = promisify(execFile);
let stack: TestStack;
let app: Awaited<ReturnType<typeof demoApp>>;
let backupId: string;
let source: ContentFingerprint;
let configFile: string;
let stopWorker: () => Promise<void>;

const databases = () => ({
  app: {
    url: stack.databaseUrl('app'),
    repository: 'local',
    restore: {
      smokeQueries: [
        { name: 'reporting role exists', sql: "SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'", expect: 1 },
        { name: 'seeded users present', sql: 'SELECT count(*) FROM public.users', expect: 200 },
      ],
    },
    app: app.config,
  },
});

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  app = await demoApp(stack, 'app');
  await stack.cluster.sql('CREATE ROLE reporting');
  configFile = stack.writeConfig(databases());
  const config = stack.config(databases());
  ({ stop: stopWorker } = await stack.startWorker(config));
  backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
  source = await contentFingerprint(stack.cluster.url('app'));
  await app.start();
});

afterAll(async () => {
  await stopWorker?.();
  await app?.stop().catch(() => undefined);
  await stack?.teardown();
});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), ...args, '--config', configFile], { env: stack.workerEnv }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

async function waitForStatus(workflowId: string, done: (s: RunbookStatus) => boolean, timeoutMs = 60_000): Promise<RunbookStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await stack.client.workflow.getHandle(workflowId).query(statusQuery).catch(() => undefined);
    if (status && done(status)) return status;
    if (Date.now() > deadline) throw new Error(`timed out; last status: ${JSON.stringify(status)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const config = () => stack.config(databases());

describe('approval gate', () => {
  it('waits for approve; refuses a second restore of the same database meanwhile; records who approved and why', async () => {
    const handle = await startRestore(stack.client, config(), { database: 'app', backup: backupId });
    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    const waiting = await waitForStatus(handle.workflowId, (s) => s.pendingDecision?.kind === 'approval');
    expect(waiting.waitingFor).toMatch(/^approval/);
    expect(app.running()).toBe(true);

    // Only one restore per database.
    await expect(startRestore(stack.client, config(), { database: 'app' })).rejects.toThrow(/a restore of app is already running \(workflow restore-app\)/);
    const second = await cli('restore', '--database', 'app', '--json');
    expect(second.code).toBe(2);
    expect(JSON.parse(second.stdout).error.message).toMatch(/already running/);

    // A step decision is refused while approval is pending; rejecting needs a reason.
    expect((await cli('step', 'retry', handle.workflowId)).code).toBe(2);
    expect((await cli('reject', handle.workflowId)).code).toBe(2);

    const status = await cli('status', handle.workflowId);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/WAITING\s+approval/);

    const approved = await cli('approve', handle.workflowId, '--reason', 'INC-42: corrupted orders', '--json');
    expect(approved.code).toBe(0);
    expect(JSON.parse(approved.stdout)).toMatchObject({ decision: 'approved', reason: 'INC-42: corrupted orders' });
    const result = await handle.result();
    expect(result.verification.ok).toBe(true);
    expect(result.verification.smokeQueries.map((q) => q.ok)).toEqual([true, true]);
    expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
    expect(app.running()).toBe(true);
    expect(await app.healthy()).toBe(true);
    expect(result.downtimeSeconds).toBeGreaterThan(0);
    const final = await handle.query(statusQuery);
    expect(final.decisions).toEqual([expect.objectContaining({ decision: 'approved', step: 'approval', reason: 'INC-42: corrupted orders', by: expect.stringContaining('@') })]);

    // The old database is listed, and dropped only on an explicit command.
    const listed = await cli('pre-restore', 'list', '--database', 'app', '--json');
    const old = JSON.parse(listed.stdout).databases as { name: string }[];
    expect(old.map((o) => o.name)).toContain(result.preRestoreDatabase);
    expect((await cli('pre-restore', 'drop', 'app', '--database', 'app')).code).toBe(2);
    expect((await cli('pre-restore', 'drop', result.preRestoreDatabase!, '--database', 'app')).code).toBe(0);
    expect(await stack.cluster.sql(`SELECT count(*) FROM pg_database WHERE datname = '${result.preRestoreDatabase}'`)).toBe('0');
  });

  it('reject ends the restore with nothing changed and says who rejected it', async () => {
    await stack.cluster.sql("UPDATE public.organizations SET name = name || '!' WHERE id = 1", 'app');
    const before = await contentFingerprint(stack.cluster.url('app'));
    const pid = app.pid();
    const handle = await startRestore(stack.client, config(), { database: 'app', backup: backupId });
    await waitForStatus(handle.workflowId, (s) => s.pendingDecision?.kind === 'approval');
    expect((await cli('reject', handle.workflowId, '--reason', 'wrong backup')).code).toBe(0);
    const error = await handle.result().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(String((error as WorkflowFailedError).cause)).toMatch(/restore rejected by .*@.*: wrong backup; nothing was changed/);
    expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(before);
    expect(app.pid()).toBe(pid);
  });
});

describe('operator decisions on a failed step', () => {
  it('a failing smoke query makes the restore wait; after the fix, `temporal workflow update execute` retries it and the restore completes', async () => {
    // Roles live outside a database dump: the restored copy is fine, the cluster lacks the role.
    await stack.cluster.sql('DROP ROLE reporting');
    const handle = await startRestore(stack.client, config(), { database: 'app', backup: backupId, requireApproval: false });
    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    const waiting = await waitForStatus(handle.workflowId, (s) => s.pendingDecision?.kind === 'step');
    expect(waiting.pendingDecision).toMatchObject({ step: 'verify', options: ['retry', 'skip', 'abort'] });
    expect(waiting.pendingDecision!.error).toMatch(/smoke query "reporting role exists": returned 0, expected 1/);
    // The application was never stopped: verify runs on the scratch copy.
    expect(app.running()).toBe(true);

    // A decision for another step is refused by the validator.
    const wrong = await cli('step', 'skip', handle.workflowId, '--step', 'restore');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/waits on step verify, not restore/);

    // The fix.
    await stack.cluster.sql('CREATE ROLE reporting');
    const address = stack.temporal.connection.options.address!;
    const { stdout } = await run(temporalCli(), [
      'workflow', 'update', 'execute', '--address', address, '--namespace', 'default',
      '--workflow-id', handle.workflowId, '--name', 'resolveStep', '--input', '{"action":"retry","by":"oncall@laptop","reason":"created role reporting"}',
    ], { env: stack.workerEnv });
    expect(stdout).toMatch(/retry/);
    const result = await handle.result();
    expect(result.verification.ok).toBe(true);
    expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
    const final = await handle.query(statusQuery);
    expect(final.finished.filter((s) => s.step === 'verify').map((s) => s.outcome)).toEqual(['failed', 'ok']);
    expect(final.decisions).toEqual([expect.objectContaining({ decision: 'retry', step: 'verify', by: 'oncall@laptop' })]);
  });
});

describe('preflight', () => {
  it('catches a backup with one flipped byte before anything changes', async () => {
    const cfg = config();
    const corrupt = ((await (await startBackup(stack.client, cfg, { database: 'app', label: 'corrupt' })).result()) as BackupResult).backupId;
    await flipByte(join(stack.workDir, 'repo', corrupt, 'db_full.dump'), 2048);
    const before = await contentFingerprint(stack.cluster.url('app'));
    const pid = app.pid();
    try {
      const handle = await startRestore(stack.client, cfg, { database: 'app', backup: corrupt, requireApproval: false });
      const error = await handle.result().then(() => undefined, (e: unknown) => e);
      expect(String((error as WorkflowFailedError).cause?.cause)).toMatch(/failed verification at preflight: .*sha256 [0-9a-f]{64} differs.*nothing was changed/);
      const status = await handle.query(statusQuery);
      expect(status.finished.map((s) => `${s.step}:${s.outcome}`)).toEqual(['resolve:ok', 'preflight:failed', 'report:ok', 'notify:ok']);
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(before);
      expect(app.pid()).toBe(pid);
      expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_\\_restore%'")).toBe('0');
    } finally {
      await rm(join(stack.workDir, 'repo', corrupt), { recursive: true, force: true });
    }
  });
});

describe('restore under another name (seed 000\'s non-destructive test restore)', () => {
  it('needs no approval, leaves the application alone, and refuses to overwrite an existing database', async () => {
    const pid = app.pid();
    const result = await (await startRestore(stack.client, config(), { database: 'app', backup: backupId, targetDatabase: 'app_restore_test' })).result();
    expect(result).toMatchObject({ target: 'app_restore_test', downtimeSeconds: null, preRestoreDatabase: null });
    expect(await contentFingerprint(stack.cluster.url('app_restore_test'))).toEqual(source);
    expect(app.pid()).toBe(pid);
    const again = await (await startRestore(stack.client, config(), { database: 'app', backup: backupId, targetDatabase: 'app_restore_test' })).result().then(() => undefined, (e: unknown) => e);
    expect(String((again as WorkflowFailedError).cause?.cause)).toMatch(/database app_restore_test already exists/);
    await stack.cluster.sql('DROP DATABASE app_restore_test');
  });
});

describe('old databases kept by swap', () => {
  it('are dropped by a later restore only past keepPreRestoreDays, named in its status, and by `pre-restore prune` on request', async () => {
    await stack.cluster.sql('CREATE DATABASE app__pre_restore_20200101000000');
    const keeping = { ...databases(), app: { ...databases().app, restore: { ...databases().app.restore, keepPreRestoreDays: 30 } } };
    const cfg = stack.config(keeping);
    // The worker's config decides: run one with keepPreRestoreDays.
    await stopWorker();
    ({ stop: stopWorker } = await stack.startWorker(cfg));
    const handle = await startRestore(stack.client, cfg, { database: 'app', backup: backupId, requireApproval: false });
    const result = await handle.result();
    const status = await handle.query(statusQuery);
    expect(status.details.pruned).toBe('app__pre_restore_20200101000000');
    const left = await stack.cluster.sql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'app\\_\\_pre\\_restore\\_%'");
    // Younger ones (this restore's, and earlier tests') are kept.
    const kept = left.split(',').filter(Boolean);
    expect(kept).toContain(result.preRestoreDatabase);
    expect(kept).not.toContain('app__pre_restore_20200101000000');

    const pruned = await cli('pre-restore', 'prune', '--database', 'app', '--older-than-days', '0', '--json');
    expect(pruned.code).toBe(0);
    expect(JSON.parse(pruned.stdout).dropped).toEqual(kept);
    expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_\\_pre\\_restore\\_%'")).toBe('0');
  });
});
