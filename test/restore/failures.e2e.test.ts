import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startRestore } from '../../client/restore.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import type { createActivities } from '../../worker/worker.js';
import { contentFingerprint, type ContentFingerprint } from '../support/content.js';
import { demoApp, failingAt } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';

let stack: TestStack;
let app: Awaited<ReturnType<typeof demoApp>>;
let backupId: string;
/** The live data before any restore: differs from the backup, so "intact" and "restored" differ. */
let live: ContentFingerprint;

const databaseConfig = (strategy: 'swap' | 'in-place') => ({
  url: stack.databaseUrl('app'),
  repository: 'local',
  restore: { strategy, approval: { required: false }, onStepFailure: 'abort', drainTimeoutSeconds: 20 },
  app: app.config,
});

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  app = await demoApp(stack, 'app');
  const config = stack.config({ app: databaseConfig('swap') });
  const { stop } = await stack.startWorker(config);
  try {
    backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
  } finally {
    await stop();
  }
  await stack.cluster.sql("DELETE FROM public.processed_updates WHERE id % 5 = 0; UPDATE public.organizations SET name = name || ' (renamed)'", 'app');
  live = await contentFingerprint(stack.cluster.url('app'));
});

afterAll(async () => {
  await app?.stop().catch(() => undefined);
  await stack?.teardown();
});

type Activity = keyof ReturnType<typeof createActivities>;
const SWAP_UNDOS = ['swap-back', 'allow-connections', 'scale-up', 'drop-scratch'];
const IN_PLACE_UNDOS = ['restore-safety-backup', 'allow-connections', 'scale-up'];
const cases: { strategy: 'swap' | 'in-place'; step: string; activity: Activity; when: 'before' | 'after'; undone: string[] }[] = [
  { strategy: 'swap', step: 'restore', activity: 'restoreIntoScratch', when: 'after', undone: ['drop-scratch'] },
  { strategy: 'swap', step: 'verify', activity: 'verifyRestoredDatabase', when: 'before', undone: ['drop-scratch'] },
  { strategy: 'swap', step: 'scale-down', activity: 'stopApp', when: 'after', undone: ['scale-up', 'drop-scratch'] },
  { strategy: 'swap', step: 'block-connections', activity: 'blockConnections', when: 'after', undone: ['allow-connections', 'scale-up', 'drop-scratch'] },
  { strategy: 'swap', step: 'swap', activity: 'swapDatabases', when: 'after', undone: SWAP_UNDOS },
  { strategy: 'swap', step: 'allow-connections', activity: 'allowConnections', when: 'before', undone: SWAP_UNDOS },
  { strategy: 'swap', step: 'scale-up', activity: 'startApp', when: 'after', undone: SWAP_UNDOS },
  { strategy: 'swap', step: 'health', activity: 'waitForAppHealth', when: 'before', undone: SWAP_UNDOS },
  { strategy: 'in-place', step: 'scale-down', activity: 'stopApp', when: 'after', undone: ['scale-up'] },
  { strategy: 'in-place', step: 'drop-and-recreate', activity: 'dropAndRecreateTarget', when: 'after', undone: IN_PLACE_UNDOS },
  { strategy: 'in-place', step: 'restore', activity: 'restoreIntoTarget', when: 'after', undone: IN_PLACE_UNDOS },
  { strategy: 'in-place', step: 'verify', activity: 'verifyRestoredDatabase', when: 'before', undone: IN_PLACE_UNDOS },
];

describe('restoreDatabase with a failure injected at a step', () => {
  it.each(cases)('$strategy, $step ($when the activity ran): runs exactly the undos registered so far; the app is up and the original data intact', async (c) => {
    await app.start();
    const config = stack.config({ app: databaseConfig(c.strategy) });
    const { stop } = await stack.startWorker(config, failingAt(c.activity, c.when));
    try {
      const handle = await startRestore(stack.client, config, { database: 'app', backup: backupId });
      const error = await handle.result().then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect(String((error as WorkflowFailedError).cause?.cause)).toContain(`injected failure in ${c.activity}`);

      const status = await handle.query(statusQuery);
      expect(status.state).toBe('failed');
      expect(status.finished.find((s) => s.step === c.step)?.outcome).toBe('failed');
      // Exactly the undos registered before the failure, newest first, all succeeded.
      expect(status.undo!.map((u) => `${u.name}:${u.state}`)).toEqual([...c.undone].reverse().map((name) => `${name}:done`));
      expect(status.finished.filter((s) => s.step.startsWith('undo:')).map((s) => s.step)).toEqual(c.undone.map((name) => `undo:${name}`));

      // The system works: original data, sessions allowed, no leftovers, the app up and healthy.
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(live);
      expect(await stack.cluster.sql("SELECT datallowconn FROM pg_database WHERE datname = 'app'")).toBe('t');
      expect(await stack.cluster.sql("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'app\\_\\_%'")).toBe('');
      expect(app.running()).toBe(true);
      expect(await app.healthy()).toBe(true);
    } finally {
      await stop();
    }
  });
});

describe('an undo that fails', () => {
  it('is reported loudly: the workflow fails with CompensationFailed naming it, and the other undos still run', async () => {
    await app.start();
    const config = stack.config({ app: databaseConfig('swap') });
    // scale-up fails as a step and again as an undo: the application cannot be brought back.
    const { stop } = await stack.startWorker(config, (activities) => ({
      ...activities,
      startApp: async () => {
        throw ApplicationFailure.nonRetryable('the app controller is unreachable', 'InjectedFailure');
      },
    }));
    try {
      const handle = await startRestore(stack.client, config, { database: 'app', backup: backupId });
      const error = await handle.result().then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      const cause = (error as WorkflowFailedError).cause as ApplicationFailure;
      expect(cause.type).toBe('CompensationFailed');
      expect(cause.message).toMatch(/UNDO FAILED, the system needs a person: undo scale-up failed: .*the app controller is unreachable/);
      const status = await handle.query(statusQuery);
      expect(status.undo!.map((u) => `${u.name}:${u.state}`)).toEqual(['drop-scratch:done', 'scale-up:failed', 'allow-connections:done', 'swap-back:done']);
      // Everything else was undone: the original data is back under its name.
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(live);
    } finally {
      await stop();
    }
  });
});
