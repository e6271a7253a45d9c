import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, WorkflowFailedError } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackup } from '../../client/backup.js';
import { Config, TemporalConfig } from '../../config/schema.js';
import { clientDataConverter, codecKeyId, ENCRYPTED_ENCODING } from '../../encryption/payload-codec.js';
import { temporalCli } from '../../stack/binaries.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { runCli } from '../support/cli.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { ageKeygen, type AgeKey } from './age-cli.js';

// The payload codec in a real worker and real clients against a real Temporal server: after a real
// backup, the history exported as an operator would (`temporal workflow show`), and as the raw
// bytes the server stores, holds no workflow input, no result and no configured secret.

const key = randomBytes(32);
const DATABASE = 'ledger';
// Distinctive values that exist only in the workflow's input and results.
const LABEL = 'quarter-close-q7x';
const REPOSITORY = 'vault-q7x';

let stack: TestStack;
let age: AgeKey;
let config: Config;
let address: string;

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: DATABASE, payloadCodecKey: key.toString('base64') });
  age = ageKeygen(stack.workDir, 'vault');
  // The repository's backups are age-encrypted too, with the identity in the worker's environment:
  // one more configured secret that must not reach the history.
  stack.workerEnv.TEST_VAULT_AGE_IDENTITY = age.identity;
  stack.workerEnv.TEST_MISSING_DB_URL = stack.cluster.url('ledger_missing_q7x');
  config = Config.parse(configObject());
  address = stack.temporal.connection.options.address ?? '';
});

afterAll(async () => {
  await stack?.teardown();
});

function configObject(): Record<string, unknown> {
  return {
    ...stack.configObject({ [DATABASE]: { url: stack.databaseUrl(DATABASE) }, broken: { url: '${TEST_MISSING_DB_URL}' } }),
    repositories: { [REPOSITORY]: { type: 'local', path: join(stack.workDir, 'vault'), encryption: { recipients: [age.recipient], identityEnv: 'TEST_VAULT_AGE_IDENTITY' } } },
  };
}

/** Every secret the worker was configured with, in every spelling that could leak. */
function configuredSecrets(): string[] {
  return [
    stack.cluster.password, encodeURIComponent(stack.cluster.password), stack.cluster.url(DATABASE),
    key.toString('base64'), key.toString('hex'), key.toString('base64url'),
    age.identity, 'AGE-SECRET-KEY',
  ];
}

/**
 * The history as `temporal workflow show --output json` exports it, with every payload's base64
 * data and metadata decoded: all that anyone without the key can read from it.
 */
interface ExportedHistory {
  /** The JSON as exported. */
  json: string;
  /** The same with payloads decoded. */
  readable: { events: Record<string, unknown>[] };
  /** Both, to search. */
  text: string;
}

function exportHistory(workflowId: string): ExportedHistory {
  const exported = execFileSync(temporalCli(), ['workflow', 'show', '--address', address, '--namespace', 'default', '--workflow-id', workflowId, '--output', 'json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const decode = (value: string): string => Buffer.from(value, 'base64').toString('utf8');
  const readable = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(readable);
    if (!node || typeof node !== 'object') return node;
    const record = node as Record<string, unknown>;
    if (record.metadata && typeof record.metadata === 'object') {
      return { metadata: Object.fromEntries(Object.entries(record.metadata).map(([k, v]) => [k, decode(String(v))])), data: typeof record.data === 'string' ? decode(record.data) : record.data };
    }
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, readable(v)]));
  };
  const decoded = readable(JSON.parse(exported)) as ExportedHistory['readable'];
  return { json: exported, readable: decoded, text: `${exported}\n${JSON.stringify(decoded)}` };
}

/** The history as the server stores it: protobuf bytes, every payload's data included. */
async function rawHistory(workflowId: string): Promise<Buffer> {
  const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
  return Buffer.from(proto.temporal.api.history.v1.History.encode(history).finish());
}

/** Every Payload in a history (by shape), with where it sits. */
function payloadsOf(node: unknown, path = '', out: { path: string; payload: Payload }[] = []): { path: string; payload: Payload }[] {
  if (!node || typeof node !== 'object' || node instanceof Uint8Array) return out;
  const record = node as Record<string, unknown>;
  if (record.metadata && typeof record.metadata === 'object' && 'encoding' in (record.metadata as object)) {
    out.push({ path, payload: record as Payload });
    return out;
  }
  for (const [k, v] of Object.entries(record)) payloadsOf(v, `${path}.${k}`, out);
  return out;
}

const encodingOf = (payload: Payload): string => Buffer.from(payload.metadata!.encoding!).toString('utf8');

describe('with temporal.payloadCodec on (worker and client)', () => {
  let result: BackupResult;
  let workflowId: string;

  it('a real backup completes, and the client reads its result', async () => {
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await startBackup(stack.client, config, { database: DATABASE, label: LABEL, repository: REPOSITORY });
      workflowId = handle.workflowId;
      result = (await handle.result()) as BackupResult;
      expect(result).toMatchObject({ status: 'verified', repository: REPOSITORY, database: DATABASE });
      expect(result.backupId).toBe(`${DATABASE}/${result.backupId.split('/')[1]}`);
      expect(result.backupId).toMatch(new RegExp(`_${LABEL}$`));
      expect(result.verification).toMatchObject({ ok: true, decrypted: true });
    } finally {
      await stop();
    }
  });

  it('the exported history holds no input, no result and no configured secret in plaintext', async () => {
    const exported = exportHistory(workflowId);
    const raw = await rawHistory(workflowId);
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    const payloads = payloadsOf(history.events);
    const indexed = payloads.filter((p) => p.path.includes('searchAttributes'));
    // patched() markers: the SDK records the patch id itself, outside any codec. Only that id.
    const patches = payloads.filter((p) => p.path.includes('markerRecordedEventAttributes.details.patch-data'));
    for (const { payload } of patches) expect(Object.keys(JSON.parse(Buffer.from(payload.data!).toString('utf8')) as object).sort()).toEqual(['deprecated', 'id']);
    const data = payloads.filter((p) => !indexed.includes(p) && !patches.includes(p));

    // Every input, result, activity argument and heartbeat is encrypted with this key.
    expect(data.length).toBeGreaterThanOrEqual(12);
    for (const { path, payload } of data) {
      expect(encodingOf(payload), path).toBe(ENCRYPTED_ENCODING);
      expect(Buffer.from(payload.metadata!['encryption-key-id']!).toString(), path).toBe(codecKeyId(key));
    }
    // Search attributes are Temporal's index (Database, Operation, Label): readable by design,
    // the only place the label appears. Nothing else of the input or the result does.
    expect(indexed.map((p) => encodingOf(p.payload)).every((e) => e === 'json/plain')).toBe(true);
    expect(indexed.map((p) => Buffer.from(p.payload.data!).toString('utf8'))).toContain(JSON.stringify(LABEL));
    const plaintext = [exported.text, raw.toString('latin1'), raw.toString('utf8')];
    const outsideIndex = JSON.stringify(exported.readable.events, (k, v: unknown) => (k === 'searchAttributes' ? undefined : v));
    expect(JSON.stringify(exported.readable)).toContain(LABEL);
    expect(outsideIndex).not.toContain(LABEL);
    for (const text of plaintext) {
      for (const value of [REPOSITORY, result.backupId, result.sha256, result.manifestKey, '"verified"', 'db_full.dump.age', 'pg_dump', '"database":"ledger"', '"database": "ledger"']) {
        expect(text, `history shows ${value}`).not.toContain(value);
      }
      for (const secret of configuredSecrets()) expect(text, 'history shows a configured secret').not.toContain(secret);
    }
    // The exported JSON says what an operator (or the Temporal UI) sees instead: encrypted payloads.
    expect(exported.text).toContain(`"encoding":"${ENCRYPTED_ENCODING}"`);
    expect(exported.text).toContain(`"encryption-key-id":"${codecKeyId(key)}"`);
  });

  it('a failure message is encrypted too: "Encoded failure" in history, the real message for a client with the key', async () => {
    const { stop } = await stack.startWorker(config);
    try {
      const handle = await startBackup(stack.client, config, { database: 'broken', repository: REPOSITORY });
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      // Decoded by the client's codec: the real message, with its database name.
      expect(String((error as WorkflowFailedError).cause?.cause ?? (error as WorkflowFailedError).cause)).toMatch(/ledger_missing_q7x/);
      const exported = exportHistory(handle.workflowId);
      const raw = await rawHistory(handle.workflowId);
      expect(exported.text).toContain('Encoded failure');
      for (const text of [exported.text, raw.toString('latin1')]) {
        expect(text).not.toContain('ledger_missing_q7x');
        expect(text).not.toContain('does not exist');
        for (const secret of configuredSecrets()) expect(text).not.toContain(secret);
      }
    } finally {
      await stop();
    }
  });

  it('a client without the key, or with another key, cannot read the result and says why', async () => {
    const keyless = new Client({ connection: stack.temporal.connection, dataConverter: clientDataConverter(TemporalConfig.parse({}), {}) });
    await expect(keyless.workflow.getHandle(workflowId).result()).rejects.toThrow(
      new RegExp(`this workflow's data is encrypted with pgrunbook's payload codec \\(key ${codecKeyId(key)}\\); this process has no key\\nHINT: set temporal.payloadCodec.keyEnv`),
    );
    const other = randomBytes(32);
    const wrong = new Client({ connection: stack.temporal.connection, dataConverter: clientDataConverter(TemporalConfig.parse({ payloadCodec: { keyEnv: 'K' } }), { K: other.toString('hex') }) });
    await expect(wrong.workflow.getHandle(workflowId).result()).rejects.toThrow(
      `it was encrypted with payload codec key ${codecKeyId(key)}, and the key in temporal.payloadCodec.keyEnv here is ${codecKeyId(other)}`,
    );
    // A bare SDK client (no pgrunbook codec at all) fails on the unknown encoding.
    const bare = new Client({ connection: stack.temporal.connection });
    await expect(bare.workflow.getHandle(workflowId).result()).rejects.toThrow(/binary\/encrypted/);
  });

  it('the CLI with the key runs a backup end to end (progress from encrypted heartbeats); without the key it refuses with a config error (exit 2)', async () => {
    const path = join(stack.workDir, 'codec.yaml');
    writeFileSync(path, stringify(configObject()));
    const { stop } = await stack.startWorker(config);
    try {
      const ok = await runCli(['backup', '--database', DATABASE, '--repository', REPOSITORY, '--wait', '--json', '--config', path], stack.workerEnv);
      expect(ok.stderr).not.toMatch(/error/i);
      expect(ok.code).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, status: 'verified', repository: REPOSITORY });
      const { TEST_PAYLOAD_CODEC_KEY: _key, ...withoutKey } = stack.workerEnv;
      const refused = await runCli(['backup', '--database', DATABASE, '--config', path], withoutKey);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/temporal\.payloadCodec\.keyEnv: environment variable TEST_PAYLOAD_CODEC_KEY is not set/);
    } finally {
      await stop();
    }
  });

  it('accepts a plain JSON input from `temporal workflow start` (the input is then the sender\'s plaintext), and still encrypts what the worker writes', async () => {
    const { stop } = await stack.startWorker(config);
    try {
      const workflowId = `backup-${DATABASE}-from-temporal-cli`;
      execFileSync(temporalCli(), [
        'workflow', 'start', '--address', address, '--namespace', 'default', '--task-queue', config.temporal.taskQueue,
        '--type', 'backupDatabase', '--workflow-id', workflowId, '--input', JSON.stringify({ database: DATABASE, repository: REPOSITORY }),
      ], { stdio: 'ignore' });
      const result = (await stack.client.workflow.getHandle(workflowId).result()) as BackupResult;
      expect(result.status).toBe('verified');
      const raw = await rawHistory(workflowId);
      expect(raw.toString('latin1')).not.toContain(result.sha256);
      // The same checks would see a plaintext value: this input was sent as JSON, and shows.
      expect(raw.toString('latin1')).toContain(REPOSITORY);
      expect(exportHistory(workflowId).text).toContain(REPOSITORY);
    } finally {
      await stop();
    }
  });
});
