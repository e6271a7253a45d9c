import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startBackup } from '../../client/backup.js';
import { startDrill } from '../../client/drill.js';
import { decideApproval, resolveStep, startRestore } from '../../client/restore.js';
import type { Config } from '../../config/schema.js';
import { freePort } from '../../stack/ports.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { statusQuery } from '../../workflows/runbook.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// The webhook notifier on the real stack: a local HTTP server stands in for Slack's incoming
// webhook. Every event the issue names is sent, retried on 5xx, not retried on 4xx, filtered by
// `events`, and no secret (database password, S3 keys, the webhook URL) is ever in a payload.

let stack: TestStack;
let received: { text: string; blocks: unknown[] }[] = [];
/** HTTP statuses to answer with, in order; then 200. */
let answers: number[] = [];
let requests = 0;
let server: Server;
let webhookUrl: string;
const clustersParent = mkdtempSync(join(tmpdir(), 'pgrunbook-test-notify-'));
chmodSync(clustersParent, 0o755);

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      requests += 1;
      const status = answers.shift() ?? 200;
      if (status === 200) received.push(JSON.parse(body) as { text: string; blocks: unknown[] });
      res.writeHead(status).end(status === 200 ? 'ok' : 'no');
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  webhookUrl = `http://127.0.0.1:${port}/services/T000/B000/hook-secret-token`;
  stack.workerEnv.TEST_WEBHOOK = webhookUrl;
});

afterAll(async () => {
  server?.close();
  await stack?.teardown();
  rmSync(clustersParent, { recursive: true, force: true });
});

beforeEach(() => {
  received = [];
  answers = [];
  requests = 0;
});

function config(databases: Record<string, object> = {}, events?: string[]): Config {
  return stack.config(
    { app: { url: stack.databaseUrl('app'), repository: 's3', drill: { target: { type: 'cluster', dir: clustersParent } } }, ...databases },
    { notifications: { webhook: { urlEnv: 'TEST_WEBHOOK', ...(events ? { events } : {}) } } },
  );
}

/** No payload carries a secret the worker knows. */
function expectNoSecrets(): void {
  const all = JSON.stringify(received);
  for (const secret of [stack.cluster.password, stack.s3!.secretAccessKey, stack.s3!.accessKeyId, 'hook-secret-token']) expect(all).not.toContain(secret);
}

async function until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('webhook notifications', () => {
  it('a failed backup is told, with its step and error, and no secret', async () => {
    // A database that does not exist: the probe fails at once (DatabaseNotFound).
    const cfg = config({ gone: { url: stack.databaseUrl('gone_db', 'TEST_GONE_URL'), repository: 's3' } });
    const { stop } = await stack.startWorker(cfg);
    try {
      const handle = await startBackup(stack.client, cfg, { database: 'gone' });
      await expect(handle.result()).rejects.toThrow();
      expect(received).toHaveLength(1);
      expect(received[0]!.text).toMatch(/backup of \*gone\* FAILED at probe: .*gone_db/);
      expect((await handle.query(statusQuery)).details.notified).toMatch(/^sent \(HTTP 200\)/);
      expectNoSecrets();
    } finally {
      await stop();
    }
  });

  it('a restore waiting for approval is told while it waits, and its end is told too', async () => {
    const cfg = config();
    const { stop } = await stack.startWorker(cfg);
    try {
      const backup = (await (await startBackup(stack.client, cfg, { database: 'app' })).result()) as BackupResult;
      received = [];
      // Under another name no approval is needed: it just runs, and its end is told.
      const handle = await startRestore(stack.client, cfg, { database: 'app', backup: backup.backupId, targetDatabase: 'app_notified' });
      await handle.result();
      expect(received.map((r) => r.text)).toEqual([expect.stringMatching(/restore of \*app\* completed from `app\/\d{8}T\d{6}Z`/)]);
      received = [];
      const live = await startRestore(stack.client, cfg, { database: 'app', backup: backup.backupId });
      await until('the approval notification', () => received.length === 1);
      expect(received[0]!.text).toMatch(/restore of \*app\* waits for approval/);
      expect(JSON.stringify(received[0])).toContain(`pgrunbook approve ${live.workflowId}`);
      await decideApproval(stack.client, live.workflowId, 'reject', 'notification test');
      await expect(live.result()).rejects.toThrow();
      await until('the finished notification', () => received.length === 2);
      expect(received[1]!.text).toMatch(/restore of \*app\* rejected/);
      expectNoSecrets();
      await stack.cluster.sql('DROP DATABASE app_notified');
    } finally {
      await stop();
    }
  });

  it('a restore waiting for an operator is told with the failed step and the commands', async () => {
    const cfg = config({
      app: { url: stack.databaseUrl('app'), repository: 's3', restore: { smokeQueries: [{ name: 'impossible', sql: 'SELECT 1', expect: 2 }] } },
    });
    const { stop } = await stack.startWorker(cfg);
    try {
      const backup = (await (await startBackup(stack.client, cfg, { database: 'app' })).result()) as BackupResult;
      received = [];
      const handle = await startRestore(stack.client, cfg, { database: 'app', backup: backup.backupId, targetDatabase: 'app_operator' });
      await until('the operator notification', () => received.length === 1);
      expect(received[0]!.text).toMatch(/restore of \*app\* waits for an operator: step verify failed: .*impossible/);
      expect(JSON.stringify(received[0])).toContain(`pgrunbook step retry|skip|abort ${handle.workflowId}`);
      await resolveStep(stack.client, handle.workflowId, 'abort', { reason: 'notification test' });
      await expect(handle.result()).rejects.toThrow();
      await until('the finished notification', () => received.length === 2);
      expect(received[1]!.text).toMatch(/restore of \*app\* failed/);
    } finally {
      await stop();
    }
  });

  it('a drill result is told when it passes too; a 5xx is retried until delivered', async () => {
    const cfg = config();
    const { stop } = await stack.startWorker(cfg);
    try {
      await (await startBackup(stack.client, cfg, { database: 'app' })).result();
      received = [];
      requests = 0;
      answers = [503, 500];
      const handle = await startDrill(stack.client, cfg, { database: 'app' });
      const result = await handle.result();
      expect(result.report.outcome).toBe('passed');
      expect(requests).toBe(3);
      expect(received).toHaveLength(1);
      expect(received[0]!.text).toMatch(/restore drill of \*app\* passed: RTO \d+\.\d s, RPO \d+\.\d s/);
      expect((await handle.query(statusQuery)).details.notified).toMatch(/^sent/);
    } finally {
      await stop();
    }
  });

  it('a 4xx is not retried and changes nothing about the runbook; events filter what is sent', async () => {
    const cfg = config({}, ['backup-failed']);
    const { stop } = await stack.startWorker(cfg);
    try {
      await (await startBackup(stack.client, cfg, { database: 'app' })).result();
      // Filtered out: a passed drill is not a backup failure.
      const drill = await startDrill(stack.client, cfg, { database: 'app' });
      expect((await drill.result()).report.outcome).toBe('passed');
      expect(requests).toBe(0);
      expect((await drill.query(statusQuery)).details.notified).toMatch(/not sent: drill-result is not in notifications.webhook.events/);

      const all = config();
      const worker2 = await stack.startWorker({ ...all, temporal: { ...all.temporal, taskQueue: `${all.temporal.taskQueue}-b` } });
      try {
        answers = [404];
        const allCfg = { ...all, temporal: { ...all.temporal, taskQueue: `${all.temporal.taskQueue}-b` } };
        const drill2 = await startDrill(stack.client, allCfg, { database: 'app' });
        expect((await drill2.result()).report.outcome).toBe('passed');
        expect(requests).toBe(1);
        expect((await drill2.query(statusQuery)).details.notified).toMatch(/^failed: the webhook refused the message with HTTP 404/);
      } finally {
        await worker2.stop();
      }
    } finally {
      await stop();
    }
  });
});
