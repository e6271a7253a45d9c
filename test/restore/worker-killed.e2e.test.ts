import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandAppConfig } from '../../app-controllers/schema.js';
import { startBackup } from '../../client/backup.js';
import { startRestore } from '../../client/restore.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import { contentFingerprint, type ContentFingerprint } from '../support/content.js';
import { demoApp } from '../support/restore.js';
import { freezeAfterRead, processesMatching, withKillableWorker } from '../support/processes.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// kill -9 of the worker process at the riskiest moments of a restore; a new worker process takes
// over after the heartbeat timeout and the restore must still end right: data equal to the
// backup, one old database kept (swap), the app up, and no destructive step repeated harmfully.

let stack: TestStack;
let app: Awaited<ReturnType<typeof demoApp>>;
let backupId: string;
let source: ContentFingerprint;
let live: ContentFingerprint;

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  // ~40 MB of poorly compressible rows, so pg_restore runs long enough to be caught mid-way.
  await stack.cluster.sql("CREATE TABLE public.bulk AS SELECT g AS id, encode(gen_random_bytes(700), 'base64') AS payload FROM generate_series(1, 50000) g", 'app');
  app = await demoApp(stack, 'app');
  const config = stack.config(databases(app.config, 'swap'));
  const { stop } = await stack.startWorker(config);
  try {
    backupId = ((await (await startBackup(stack.client, config, { database: 'app' })).result()) as BackupResult).backupId;
  } finally {
    await stop();
  }
  source = await contentFingerprint(stack.cluster.url('app'));
  await stack.cluster.sql('DELETE FROM public.bulk WHERE id % 3 = 0', 'app');
  live = await contentFingerprint(stack.cluster.url('app'));
});

afterAll(async () => {
  await app?.stop().catch(() => undefined);
  await stack?.teardown();
});

function databases(appConfig: CommandAppConfig, strategy: 'swap' | 'in-place') {
  return { app: { url: stack.databaseUrl('app'), repository: 'local', restore: { strategy, approval: { required: false }, onStepFailure: 'abort' }, app: appConfig } };
}

/** A command that first marks it was entered, then waits for a release file: the kill lands there. */
function gate(name: string): { script: string; entered: () => boolean; release: () => void } {
  const entered = join(stack.workDir, `${name}.entered`);
  const released = join(stack.workDir, `${name}.released`);
  return {
    script: `touch '${entered}'; while [ ! -f '${released}' ]; do sleep 0.1; done`,
    entered: () => existsSync(entered),
    release: () => writeFileSync(released, ''),
  };
}

const pgRestorePids = (port: number): number[] => processesMatching(/(^|\/)pg_restore\0/, (env) => env.includes(`PGPORT=${port}`));

/** SIGSTOPs every pg_restore of this cluster once they have read `bytes` of the archive together. */
const freezePgRestoreAfter = (bytes: number): Promise<number[]> => freezeAfterRead('pg_restore', () => pgRestorePids(stack.cluster.port), bytes, 60_000);

async function until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function resetLive(): Promise<void> {
  // Every scenario starts from the same live data and a running app.
  await stack.cluster.sql("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'app\\_\\_%'").then(async (names) => {
    for (const name of names.split(',').filter(Boolean)) await stack.cluster.sql(`DROP DATABASE "${name}" WITH (FORCE)`);
  });
  // A finished restore left the backup's content under the live name: make it "live" again.
  await stack.cluster.sql('DELETE FROM public.bulk WHERE id % 3 = 0', 'app');
  expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(live);
  await app.start();
}

describe('a worker killed with SIGKILL during a restore', () => {
  it.each(['swap', 'in-place'] as const)('%s, during pg_restore: a new worker re-creates the half-restored database, restores, and the data equals the backup', async (strategy) => {
    await resetLive();
    const configFile = stack.writeConfig(databases(app.config, strategy));
    await withKillableWorker(configFile, stack.workerEnv, async (kill, restart) => {
      const handle = await startRestore(stack.client, stack.config(databases(app.config, strategy)), { database: 'app', backup: backupId });
      const frozen = await freezePgRestoreAfter(8 * 1024 * 1024);
      await kill();
      for (const pid of frozen) process.kill(pid, 'SIGKILL');
      if (strategy === 'in-place') expect(app.running()).toBe(false); // down before the drop
      restart();
      const result = await handle.result();
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
      expect(app.running()).toBe(true);
      const status = await handle.query(statusQuery);
      expect(status.finished.filter((s) => s.step === 'restore').map((s) => s.outcome)).toEqual(['ok']);
      if (strategy === 'swap') {
        // The old database holds the live data; only one was made.
        expect(await contentFingerprint(stack.cluster.url(result.preRestoreDatabase!))).toEqual(live);
        expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_\\_%'")).toBe('1');
      } else {
        expect(status.finished.filter((s) => s.step === 'drop-and-recreate')).toHaveLength(1);
      }
      const history = await handle.fetchHistory();
      const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes).map((e) => Number(e.activityTaskStartedEventAttributes!.attempt));
      expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
    });
  });

  it.each([
    { moment: 'right after scale-down (the app is stopped)', which: 'stop' as const },
    { moment: 'after the rename, during scale-up', which: 'start' as const },
  ])('swap, $moment: the new worker carries on; one rename, data equal to the backup, app up', async ({ which }) => {
    await resetLive();
    const hold = gate(`${which}-${Date.now()}`);
    const appConfig: CommandAppConfig = { ...app.config, [which]: which === 'stop' ? `${app.config.stop}\n${hold.script}` : `${hold.script}\n${app.config.start}` };
    const configFile = stack.writeConfig(databases(appConfig, 'swap'));
    await withKillableWorker(configFile, stack.workerEnv, async (kill, restart) => {
      const handle = await startRestore(stack.client, stack.config(databases(appConfig, 'swap')), { database: 'app', backup: backupId });
      await until(`the ${which} command`, hold.entered);
      expect(app.running()).toBe(false);
      if (which === 'start') {
        // The swap already happened: the live name holds the restored data.
        expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
      }
      await kill();
      hold.release();
      restart();
      const result = await handle.result();
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(source);
      expect(await contentFingerprint(stack.cluster.url(result.preRestoreDatabase!))).toEqual(live);
      expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'app\\_\\_%'")).toBe('1');
      expect(app.running()).toBe(true);
      expect(await app.healthy()).toBe(true);
      const status = await handle.query(statusQuery);
      expect(status.finished.filter((s) => s.step === 'swap').map((s) => s.outcome)).toEqual(['ok']);
      expect(status.undo!.every((u) => u.state === 'registered')).toBe(true); // no undo ran
    });
  });
});
