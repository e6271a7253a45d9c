import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { type ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackup } from '../../client/backup.js';
import { startDrill } from '../../client/drill.js';
import { startRestore } from '../../client/restore.js';
import { Config } from '../../config/schema.js';
import { readManifest } from '../../repository/catalog.js';
import type { Manifest } from '../../repository/manifest.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll } from '../../repository/types.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import type { DrillResult } from '../../workflows/restore-drill.js';
import { runCli } from '../support/cli.js';
import { contentFingerprint } from '../support/content.js';
import { flipByte } from '../support/restore.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { ageKeygen, ageTool, type AgeKey } from './age-cli.js';

// Encrypted backups end to end on the real stack (Temporal, PostgreSQL 15, SeaweedFS), with the
// stock `age` CLI and stock pg_restore/psql as the proof that the artifacts stay standard.

let stack: TestStack;
let alice: AgeKey;
let bob: AgeKey;

beforeAll(async () => {
  stack = await startTestStack({ s3: true, sampleDatabase: 'app' });
  alice = ageKeygen(stack.workDir, 'alice');
  bob = ageKeygen(stack.workDir, 'bob');
});

afterAll(async () => {
  await stack?.teardown();
});

type Encryption = { recipients?: string[]; identityFile?: string; identityEnv?: string };

/** The stack's config with every repository encrypted as given. */
function configObject(database: object, encryption: Encryption): Record<string, unknown> {
  const base = stack.configObject({ app: { url: stack.databaseUrl('app'), ...database } });
  const repositories = Object.fromEntries(Object.entries(base.repositories as Record<string, object>).map(([id, spec]) => [id, { ...spec, encryption }]));
  return { ...base, repositories };
}
const encryptedConfig = (database: object, encryption: Encryption = { recipients: [alice.recipient], identityFile: alice.file }): Config => Config.parse(configObject(database, encryption));

async function backup(config: Config, label?: string): Promise<BackupResult> {
  return (await (await startBackup(stack.client, config, { database: 'app', ...(label ? { label } : {}) })).result()) as BackupResult;
}

/** Downloads a stored object to a file, as an operator would fetch it from the bucket. */
async function download(config: Config, repositoryId: string, key: string): Promise<string> {
  const file = join(stack.workDir, key.replace(/\//g, '_'));
  await pipeline(await new RepositoryRegistry(config, stack.workerEnv).get(repositoryId).read(key), createWriteStream(file));
  return file;
}

/**
 * A shell pipeline of stock tools, exactly as the README documents it. pipefail, except where the
 * reader stops early by design (pg_restore -l reads the table of contents only: age gets EPIPE).
 */
function shell(script: string, ...args: string[]): string {
  return execFileSync('bash', ['-c', script.includes('pg_restore -l') ? script : `set -o pipefail; ${script}`, 'stock', ...args], {
    env: { ...process.env, ...stack.cluster.env(), PATH: `${stack.cluster.binDir}:${process.env.PATH}` },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

// Restores of this file decrypt into their own temp dir: other test files restore in parallel.
const restoreTemp = mkdtempSync(join(tmpdir(), 'pgrunbook-test-enc-restore-'));
const tempRestoreFiles = (): string[] => readdirSync(restoreTemp).filter((f) => f.startsWith('pgrunbook-restore-'));

describe.each(['local', 's3'])('an encrypted backup in the %s repository', (repositoryId) => {
  it('is stored as age files, records its recipient and no key, and decrypts with the stock age CLI into what stock pg_restore restores', async () => {
    const config = encryptedConfig({ repository: repositoryId });
    const { stop } = await stack.startWorker(config);
    try {
      const result = await backup(config, 'sealed');
      // Verified right after the dump: decrypted in-stream (this worker holds the key) and listed by pg_restore -l.
      expect(result.verification).toMatchObject({ ok: true, sha256Matches: true, sizeMatches: true, decrypted: true });
      expect(result.verification.tocEntries).toBeGreaterThan(50);

      const repository = new RepositoryRegistry(config, stack.workerEnv).get(repositoryId);
      const manifest = await readManifest(repository, result.backupId);
      expect(manifest.encryption).toEqual({ format: 'age', recipients: [alice.recipient] });
      expect(manifest.dump).toMatchObject({ file: 'db_full.dump.age', size: result.size, sha256: result.sha256 });
      expect(Object.keys(manifest.files).sort()).toEqual(['db_full.dump.age', 'extensions.tsv', 'row_counts.tsv', 'schema.sql.age', 'schema_version.txt', 'version.txt', 'views_reloptions.tsv']);
      const manifestText = (await readAll(repository, `${result.backupId}/manifest.json`)).toString('utf8');
      expect(manifestText).not.toContain('AGE-SECRET-KEY');
      expect(manifestText).not.toContain(alice.identity);

      // What is stored is ciphertext; its sha256 is the manifest's (checkable without the key).
      const file = await download(config, repositoryId, `${result.backupId}/db_full.dump.age`);
      const stored = readFileSync(file);
      expect(stored.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
      expect(stored.includes(Buffer.from('PGDMP'))).toBe(false);
      expect(createHash('sha256').update(stored).digest('hex')).toBe(manifest.dump!.sha256);

      // Stock tools: age -d | pg_restore -l reads the archive's table of contents ...
      const listing = shell('age -d -i "$1" "$2" | pg_restore -l', alice.file, file);
      expect(listing.split('\n').filter((l) => l.trim() && !l.startsWith(';')).length).toBe(result.verification.tocEntries);
      // ... and age -d | pg_restore -d restores it into a new database with the same rows.
      const copy = `app_stock_${repositoryId}`;
      await stack.cluster.sql(`CREATE DATABASE ${copy}`);
      shell('age -d -i "$1" "$2" | pg_restore --exit-on-error -d "$3"', alice.file, file, copy);
      const [source, restored] = await Promise.all([contentFingerprint(stack.cluster.url('app')), contentFingerprint(stack.cluster.url(copy))]);
      expect(restored).toEqual(source);
      expect(Number(await stack.cluster.sql('SELECT count(*) FROM public.processed_updates', copy))).toBe(manifest.rowCounts!['public.processed_updates']);
      expect(Number(await stack.cluster.sql('SELECT count(*) FROM "Ops Data"."Störungen"', copy))).toBe(manifest.rowCounts!['Ops Data.Störungen']);
      await stack.cluster.sql(`DROP DATABASE ${copy}`);

      // schema.sql is encrypted like the dump.
      const schema = await download(config, repositoryId, `${result.backupId}/schema.sql.age`);
      expect(shell('age -d -i "$1" "$2"', alice.file, schema)).toContain('CREATE TABLE "Ops Data"."Störungen"');
    } finally {
      await stop();
    }
  });
});

describe('a worker that only backs up (recipients, no identity)', () => {
  it('verifies the stored bytes by checksum only, and the manifest says so', async () => {
    const config = encryptedConfig({ repository: 'local' }, { recipients: [alice.recipient] });
    const { stop } = await stack.startWorker(config);
    try {
      const result = await backup(config);
      expect(result.verification).toMatchObject({ ok: true, sha256Matches: true, sizeMatches: true, decrypted: false, tocEntries: null });
      const manifest = await readManifest(new RepositoryRegistry(config, stack.workerEnv).get('local'), result.backupId);
      expect(manifest.status).toBe('verified');
      expect(manifest.verification?.note).toMatch(/not decrypted by the worker that verified it, as it holds no identity .*sha256 and size of the stored bytes checked only/);
    } finally {
      await stop();
    }
  });
});

describe('restoring an encrypted backup', () => {
  const made: Record<string, BackupResult> = {};

  it.each([
    { repository: 's3', format: 'custom', jobs: 2, method: 'download' },
    { repository: 's3', format: 'custom', jobs: 1, method: 'stream' },
    // pg_restore -j cannot read the encrypted file in place: it is decrypted into a temp file first.
    { repository: 'local', format: 'custom', jobs: 2, method: 'download' },
    { repository: 'local', format: 'plain', jobs: 1, method: 'stream' },
  ] as const)('$format in $repository with -j $jobs: decrypted in-stream, restored by $method, equal to the source', async ({ repository, format, jobs, method }) => {
    const config = encryptedConfig({ repository, dump: { format }, restore: { jobs, approval: { required: false }, tempDir: restoreTemp } });
    const { stop } = await stack.startWorker(config);
    try {
      const key = `${repository}-${format}`;
      made[key] ??= await backup(config);
      expect(made[key].verification.decrypted).toBe(true);
      const source = await contentFingerprint(stack.cluster.url('app'));
      const target = `enc_${repository}_${format}_${jobs}`;
      const result = await (await startRestore(stack.client, config, { database: 'app', backup: made[key].backupId, targetDatabase: target })).result();
      expect(result.restore).toMatchObject({ method, jobs: format === 'plain' ? 1 : jobs });
      expect(result.verification.ok).toBe(true);
      expect(await contentFingerprint(stack.cluster.url(target))).toEqual(source);
      // The decrypted temp file is gone.
      expect(tempRestoreFiles()).toEqual([]);
      await stack.cluster.sql(`DROP DATABASE ${target}`);
    } finally {
      await stop();
    }
  });

  it.each([
    { worker: 'a wrong identity', encryption: () => ({ recipients: [alice.recipient], identityFile: bob.file }), message: () => new RegExp(`encrypted \\(age\\) to ${alice.recipient}; the identity in repositories\\.local\\.encryption\\.identityFile is for ${bob.recipient}, which is not one of them; nothing was changed`) },
    { worker: 'no identity', encryption: () => ({ recipients: [alice.recipient] }), message: () => new RegExp(`encrypted \\(age\\) to ${alice.recipient}; this worker holds no identity for repository local, so it cannot decrypt it; nothing was changed\\nHINT: set repositories\\.local\\.encryption\\.identityFile \\(or identityEnv\\)`) },
  ])('with $worker fails at preflight, naming the recipient and the config field, with the live database untouched', async ({ encryption, message }) => {
    const writer = encryptedConfig({ repository: 'local' });
    let backupId: string;
    {
      const { stop } = await stack.startWorker(writer);
      try {
        backupId = (await backup(writer)).backupId;
      } finally {
        await stop();
      }
    }
    const config = encryptedConfig({ repository: 'local', restore: { approval: { required: false }, tempDir: restoreTemp } }, encryption());
    const { stop } = await stack.startWorker(config);
    try {
      const before = await contentFingerprint(stack.cluster.url('app'));
      const databases = await stack.cluster.sql('SELECT string_agg(datname, \',\' ORDER BY datname) FROM pg_database');
      const handle = await startRestore(stack.client, config, { database: 'app', backup: backupId });
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      const cause = (error as WorkflowFailedError).cause?.cause as ApplicationFailure;
      expect(cause.type).toBe('DecryptionFailed');
      expect(cause.nonRetryable).toBe(true);
      expect(cause.message).toMatch(message());
      expect(cause.message).not.toContain('AGE-SECRET-KEY');
      // Failed at preflight, on the first attempt (not retried), before anything destructive.
      const { statusQuery } = await import('../../workflows/runbook.js');
      const status = await handle.query(statusQuery);
      const steps = status.finished.map((s) => `${s.step}:${s.outcome}`);
      expect(steps.slice(0, 2)).toEqual(['resolve:ok', 'preflight:failed']);
      // After it only the report and the notification: no restore, no undo.
      expect(steps.slice(2).every((s) => /^(report|notify):/.test(s))).toBe(true);
      expect(await contentFingerprint(stack.cluster.url('app'))).toEqual(before);
      expect(await stack.cluster.sql('SELECT string_agg(datname, \',\' ORDER BY datname) FROM pg_database')).toBe(databases);
      expect(JSON.stringify(await handle.fetchHistory())).not.toContain('AGE-SECRET-KEY');
    } finally {
      await stop();
    }
  });

  it('a modified ciphertext byte is a verification failure at preflight (and in `backups verify`), not a crash', async () => {
    const config = encryptedConfig({ repository: 'local', restore: { approval: { required: false }, tempDir: restoreTemp } });
    const { stop } = await stack.startWorker(config);
    try {
      const made = await backup(config, 'tampered');
      await flipByte(join(stack.workDir, 'repo', made.backupId, 'db_full.dump.age'), 100_000);
      const handle = await startRestore(stack.client, config, { database: 'app', backup: made.backupId, targetDatabase: 'app_tampered' });
      const error = await handle.result().catch((e: unknown) => e);
      const cause = (error as WorkflowFailedError).cause?.cause as ApplicationFailure;
      expect(cause.type).toBe('VerificationFailed');
      expect(cause.message).toMatch(/failed verification at preflight: .*sha256 [0-9a-f]{64} differs.*decryption failed: chunk 1 of the age payload failed authentication: the file was modified or truncated; nothing was changed/);
      expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname = 'app_tampered'")).toBe('0');

      const path = writeCliConfig({ repository: 'local' }, { recipients: [alice.recipient], identityFile: alice.file });
      const cli = await runCli(['backups', 'verify', made.backupId, '--config', path, '--json'], stack.workerEnv);
      expect(cli.code).toBe(1);
      const report = JSON.parse(cli.stdout) as { ok: boolean; problems: string[] };
      expect(report.ok).toBe(false);
      expect(report.problems.join('\n')).toMatch(/db_full\.dump\.age: .*decryption failed: chunk 1 of the age payload failed authentication/);
    } finally {
      await stop();
    }
  });
});

/** A config file for the CLI process (`npm run build` first), with the repositories encrypted as given. */
function writeCliConfig(database: object, encryption: Encryption): string {
  const path = join(stack.workDir, `cli-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, stringify(configObject(database, encryption)));
  return path;
}

describe('`pgrunbook backups verify` on an encrypted backup', () => {
  it('decrypts and lists it with the key, checks the checksum only without one, and refuses a wrong key', async () => {
    const config = encryptedConfig({ repository: 's3' });
    const { stop } = await stack.startWorker(config);
    let made: BackupResult;
    try {
      made = await backup(config);
    } finally {
      await stop();
    }
    const verify = (encryption: Encryption, ...flags: string[]) => runCli(['backups', 'verify', made.backupId, ...flags, '--config', writeCliConfig({ repository: 's3' }, encryption)], stack.workerEnv);
    const verifyJson = async (encryption: Encryption) => JSON.parse((await verify(encryption, '--json')).stdout) as { ok: boolean; dump: Manifest['verification']; problems: string[]; encryption: unknown };

    const withKey = await verify({ recipients: [alice.recipient], identityFile: alice.file });
    expect(withKey.code).toBe(0);
    expect(withKey.stdout).toMatch(new RegExp(`backup ${made.backupId}: OK \\(sha256 matches, decrypted, ${made.verification.tocEntries} TOC entries, 7 files checked\\)`));
    expect(await verifyJson({ recipients: [alice.recipient], identityFile: alice.file })).toMatchObject({ ok: true, dump: { decrypted: true, tocEntries: made.verification.tocEntries }, encryption: { format: 'age', recipients: [alice.recipient] } });

    // The key from the environment works the same (identityEnv).
    const identityEnv = await runCli(['backups', 'verify', made.backupId, '--config', writeCliConfig({ repository: 's3' }, { recipients: [alice.recipient], identityEnv: 'TEST_AGE_IDENTITY' })], { ...stack.workerEnv, TEST_AGE_IDENTITY: alice.identity });
    expect(identityEnv.stdout).toMatch(/OK \(sha256 matches, decrypted/);

    const withoutKey = await verify({ recipients: [alice.recipient] });
    expect(withoutKey.code).toBe(0);
    expect(withoutKey.stdout).toMatch(/OK \(sha256 matches; encrypted and no identity configured here: checksum only, 7 files checked\)/);
    expect((await verifyJson({ recipients: [alice.recipient] })).dump).toMatchObject({ decrypted: false, tocEntries: null, note: expect.stringMatching(/no identity configured here \(repositories\.s3\.encryption\.identityFile\)/) });

    const wrongKey = await verify({ recipients: [alice.recipient], identityFile: bob.file });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stdout).toContain(`db_full.dump.age: cannot decrypt: encrypted (age) to ${alice.recipient}; the identity in repositories.s3.encryption.identityFile is for ${bob.recipient}`);
    expect(`${wrongKey.stdout}${wrongKey.stderr}`).not.toContain('AGE-SECRET-KEY');
  });
});

describe('a restore drill of an encrypted backup', () => {
  it('passes with the key; without it the drill fails its checksum check, naming the recipient', async () => {
    const drillConfig = (encryption: Encryption) => encryptedConfig({ repository: 'local', drill: { target: { type: 'server', host: '127.0.0.1', port: stack.cluster.port, user: 'postgres', passwordEnv: 'TEST_DRILL_PASSWORD' } } }, encryption);
    stack.workerEnv.TEST_DRILL_PASSWORD = stack.cluster.password;
    const config = drillConfig({ recipients: [alice.recipient], identityFile: alice.file });
    {
      const { stop } = await stack.startWorker(config);
      try {
        const made = await backup(config);
        const result: DrillResult = await (await startDrill(stack.client, config, { database: 'app', backup: made.backupId })).result();
        expect(result.report).toMatchObject({ outcome: 'passed', restore_success: true, backup_id: made.backupId });
        expect(result.report.checks.find((c) => c.kind === 'checksum')).toMatchObject({ outcome: 'pass', actual: { tocEntries: made.verification.tocEntries } });
      } finally {
        await stop();
      }
    }
    const keyless = drillConfig({ recipients: [alice.recipient] });
    const { stop } = await stack.startWorker(keyless);
    try {
      const error = await (await startDrill(stack.client, keyless, { database: 'app' })).result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect(String((error as WorkflowFailedError).cause)).toMatch(/restore drill of app failed at checksum/);
      const { listDrillReports } = await import('../../repository/reports.js');
      const [report] = await listDrillReports(new RepositoryRegistry(keyless, stack.workerEnv).get('local'), 'app');
      expect(report!.outcome).toBe('failed');
      expect(report!.checks.find((c) => c.kind === 'checksum')).toMatchObject({ outcome: 'fail' });
      expect(report!.checks.find((c) => c.kind === 'checksum')!.detail).toMatch(new RegExp(`encrypted \\(age\\) to ${alice.recipient}; this worker holds no identity`));
      expect(await stack.cluster.sql("SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_\\_drill\\_%'")).toBe('0');
    } finally {
      await stop();
    }
  });
});

// The stock age CLI must be there (scripts/bootstrap.sh installs it); fail loudly, not skip.
it('has the stock age CLI', () => {
  expect(ageTool('age')).toMatch(/age$/);
});
