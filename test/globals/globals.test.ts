import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGlobalsActivities, type GlobalsBackupInput, type GlobalsBackupResult } from '../../activities/globals.js';
import { DumpSlots } from '../../activities/dump-slots.js';
import { Config } from '../../config/schema.js';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { registerSecret } from '../../process/secrets.js';
import { GLOBALS_FILE, globalsKey, listGlobals, readGlobalsManifest, serverFolder } from '../../repository/globals.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll } from '../../repository/types.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { startS3Server, type S3Server } from '../../stack/seaweedfs.js';
import { ageKeygen, ageTool, type AgeKey } from '../encryption/age-cli.js';

// backupGlobals against real servers: pg_dumpall --globals-only of a throwaway PostgreSQL 15
// cluster into a local directory and into SeaweedFS, applied with stock psql to a fresh cluster,
// decrypted with the stock age CLI. The activity runs in the SDK's activity context (heartbeats,
// cancellation) without a Temporal server: the fleet workflow that calls it is tested by the lead.

const OWNER_PASSWORD = 'owner-Pw-3f9c1d77';
const BACKUP_PASSWORD = 'backup-Pw-81c2e4aa';

let source: PostgresCluster;
let fresh: PostgresCluster;
let s3: S3Server;
let workDir: string;
let key: AgeKey;
let tablespaceDir: string;
let config: Config;
const env: NodeJS.ProcessEnv = { ...process.env };

beforeAll(async () => {
  [source, fresh, s3] = await Promise.all([startPostgresCluster(), startPostgresCluster(), startS3Server()]);
  registerSecret(source.password);
  registerSecret(fresh.password);
  workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-globals-'));
  key = ageKeygen(workDir, 'repo-key');
  // A tablespace needs an empty directory the server's user owns (and can reach: not under workDir).
  tablespaceDir = mkdtempSync(join(tmpdir(), 'pgrunbook-tablespace-'));
  if (isRoot()) chownSync(tablespaceDir, postgresUid().uid, postgresUid().gid);
  await source.sql(`CREATE ROLE app_owner LOGIN PASSWORD '${OWNER_PASSWORD}'`);
  await source.sql('CREATE ROLE app_reader NOLOGIN');
  await source.sql('CREATE ROLE "Reporting Team" NOLOGIN');
  await source.sql('GRANT app_reader TO app_owner');
  await source.sql(`CREATE ROLE globals_backup LOGIN PASSWORD '${BACKUP_PASSWORD}'`);
  await source.sql('CREATE DATABASE orders OWNER app_owner');
  await source.sql(`CREATE TABLESPACE fleet_space OWNER app_owner LOCATION '${tablespaceDir}'`);

  env.GLOBALS_SOURCE_URL = source.url('orders');
  env.GLOBALS_WRONG_URL = `postgresql://postgres:not-the-Pw-5521aa@127.0.0.1:${source.port}/orders`;
  env.GLOBALS_BACKUP_URL = `postgresql://globals_backup:${encodeURIComponent(BACKUP_PASSWORD)}@127.0.0.1:${source.port}/orders`;
  env.GLOBALS_S3_ACCESS_KEY = s3.accessKeyId;
  env.GLOBALS_S3_SECRET_KEY = s3.secretAccessKey;
  config = Config.parse({
    repositories: {
      local: { type: 'local', path: join(workDir, 'repo') },
      sealed: { type: 'local', path: join(workDir, 'sealed'), encryption: { recipients: [key.recipient], identityFile: key.file } },
      // A backup-only worker: it encrypts to the recipient and holds no identity.
      'sealed-backup-only': { type: 'local', path: join(workDir, 'sealed-backup-only'), encryption: { recipients: [key.recipient] } },
      s3: { type: 's3', bucket: s3.bucket, prefix: 'fleet', endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyIdEnv: 'GLOBALS_S3_ACCESS_KEY', secretAccessKeyEnv: 'GLOBALS_S3_SECRET_KEY' },
    },
    defaults: { repository: 'local' },
    databases: {
      orders: { url: '${GLOBALS_SOURCE_URL}' },
      'orders-wrong-password': { url: '${GLOBALS_WRONG_URL}' },
      'orders-non-superuser': { url: '${GLOBALS_BACKUP_URL}' },
    },
    metrics: { enabled: false },
  });
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([source?.stop(), fresh?.stop(), s3?.stop()]);
  for (const dir of [workDir, tablespaceDir]) if (dir) rmSync(dir, { recursive: true, force: true });
});

function activities(dumpSlots?: DumpSlots) {
  return createGlobalsActivities({ config, repositories: new RepositoryRegistry(config, env), env, ...(dumpSlots ? { dumpSlots } : {}) });
}

const input = (overrides: Partial<GlobalsBackupInput> = {}): GlobalsBackupInput => ({
  database: 'orders',
  startedAt: '2026-11-21T02:00:00.000Z',
  rolePasswords: false,
  keepLast: 30,
  ...overrides,
});

/** The SDK's activity context (heartbeats, cancellation); the failures the tests expect are not logged. */
const activityEnvironment = (): MockActivityEnvironment => new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR') });

async function backupGlobals(request: GlobalsBackupInput, activityEnv = activityEnvironment()): Promise<GlobalsBackupResult> {
  return activityEnv.run(activities().backupGlobals, request);
}

const storedText = async (repository: string, result: GlobalsBackupResult): Promise<string> =>
  (await readAll(new RepositoryRegistry(config, env).get(repository), globalsKey(result.key, result.file))).toString('utf8');

/** Runs a SQL file with the stock psql as PostgreSQL's docs restore pg_dumpall output: errors reported, not fatal. */
function applyWithPsql(target: PostgresCluster, file: string): string[] {
  const run = spawnSync(join(target.binDir, 'psql'), ['-X', '-q', '-d', 'postgres', '-f', file], { env: { ...process.env, ...target.env() }, encoding: 'utf8' });
  expect(run.status).toBe(0);
  return run.stderr.split('\n').filter((line) => line.includes('ERROR'));
}

describe('backupGlobals', () => {
  it('stores the server\'s roles and tablespaces as SQL with a manifest whose checksum, size and counts match', async () => {
    const heartbeats: unknown[] = [];
    const activityEnv = activityEnvironment();
    activityEnv.on('heartbeat', (details: unknown) => heartbeats.push(details));
    const result = await backupGlobals(input(), activityEnv);

    expect(result).toMatchObject({ server: `127.0.0.1:${source.port}`, serverId: `127.0.0.1-${source.port}`, database: 'orders', repository: 'local', file: 'globals.sql', encrypted: false, rolePasswords: false, alreadyDone: false, pruned: [] });
    expect(result.key).toBe(`globals/127.0.0.1-${source.port}/20261121T020000Z`);
    const sql = await storedText('local', result);
    expect(sql).toContain('CREATE ROLE app_owner;');
    expect(sql).toContain('CREATE ROLE "Reporting Team";');
    expect(sql).toMatch(/GRANT app_reader TO app_owner/);
    expect(sql).toContain(`CREATE TABLESPACE fleet_space OWNER app_owner LOCATION '${tablespaceDir}';`);
    // --no-role-passwords by default: no hash of any kind in the repository.
    expect(sql).not.toMatch(/SCRAM-SHA-256\$|PASSWORD 'md5/);

    const roles = Number(await source.sql("SELECT count(*) FROM pg_roles WHERE rolname !~ '^pg_'"));
    const manifest = await readGlobalsManifest(new RepositoryRegistry(config, env).get('local'), result.key);
    expect(manifest).toMatchObject({
      kind: 'globals', server: `127.0.0.1:${source.port}`, database: 'orders', file: 'globals.sql', encrypted: false, rolePasswords: false,
      roles, tablespaces: 1, bytes: Buffer.byteLength(sql), sha256: createHash('sha256').update(sql).digest('hex'), startedAt: '2026-11-21T02:00:00.000Z',
    });
    expect(manifest.serverVersion).toMatch(/^15\./);
    expect(manifest.pgDumpallVersion).toMatch(/^pg_dumpall \(PostgreSQL\) 15\./);
    expect(manifest.verification).toMatchObject({ ok: true, sha256Matches: true, sizeMatches: true, completeMarker: true });
    expect(result).toMatchObject({ bytes: manifest.bytes, sha256: manifest.sha256, roles, tablespaces: 1 });
    expect(heartbeats.length).toBeGreaterThan(0);
    expect(await listGlobals(new RepositoryRegistry(config, env).get('local'), result.serverId)).toEqual([expect.objectContaining({ id: result.key, manifest })]);
  });

  it('writes a file that stock psql applies to a fresh cluster, recreating roles, memberships and the tablespace', async () => {
    const result = await backupGlobals(input({ startedAt: '2026-11-21T02:05:00.000Z' }));
    const file = join(workDir, 'globals-plain.sql');
    writeFileSync(file, await storedText('local', result));
    // Both clusters are PostgreSQL 15 on this host: the tablespace's directory may hold one of
    // them only. The fresh cluster takes it over, as after a move to new hardware.
    await source.sql('DROP TABLESPACE fleet_space');
    const errors = applyWithPsql(fresh, file);
    // The one expected error (PostgreSQL docs on pg_dumpall): the bootstrap superuser exists.
    expect(errors).toEqual([expect.stringContaining('role "postgres" already exists')]);
    expect((await fresh.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('app_owner', 'app_reader', 'Reporting Team', 'globals_backup') ORDER BY 1")).split('\n')).toEqual(['Reporting Team', 'app_owner', 'app_reader', 'globals_backup']);
    expect(await fresh.sql("SELECT pg_has_role('app_owner', 'app_reader', 'MEMBER')")).toBe('t');
    expect(await fresh.sql("SELECT pg_get_userbyid(spcowner) || ' ' || pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'fleet_space'")).toBe(`app_owner ${tablespaceDir}`);
    // Without password hashes the roles exist but nobody can log in as them yet.
    expect(await fresh.sql("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'app_owner'")).toBe('t');
  });

  it('carries password hashes only with rolePasswords: true, and they let the role log in on the fresh cluster', async () => {
    const result = await backupGlobals(input({ startedAt: '2026-11-21T02:10:00.000Z', rolePasswords: true }));
    const sql = await storedText('local', result);
    expect(sql).toMatch(/ALTER ROLE app_owner WITH .*PASSWORD 'SCRAM-SHA-256\$4096:/);
    expect(sql).not.toContain(OWNER_PASSWORD);
    expect((await readGlobalsManifest(new RepositoryRegistry(config, env).get('local'), result.key)).rolePasswords).toBe(true);

    const file = join(workDir, 'globals-passwords.sql');
    writeFileSync(file, sql);
    applyWithPsql(fresh, file);
    const login = spawnSync(join(fresh.binDir, 'psql'), ['-X', '-At', '-d', 'postgres', '-c', 'SELECT current_user'], { env: { ...process.env, PGHOST: '127.0.0.1', PGPORT: String(fresh.port), PGUSER: 'app_owner', PGPASSWORD: OWNER_PASSWORD }, encoding: 'utf8' });
    expect(login.stderr).toBe('');
    expect(login.stdout.trim()).toBe('app_owner');
  });

  it('dumps as a non-superuser without password hashes, and says what to change when asked for them', async () => {
    const result = await backupGlobals(input({ database: 'orders-non-superuser', startedAt: '2026-11-21T02:15:00.000Z' }));
    expect(await storedText('local', result)).toContain('CREATE ROLE app_owner;');

    const error = await backupGlobals(input({ database: 'orders-non-superuser', startedAt: '2026-11-21T02:16:00.000Z', rolePasswords: true })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect((error as ApplicationFailure).type).toBe('PermissionDenied');
    expect((error as ApplicationFailure).message).toMatch(/permission denied for table pg_authid[\s\S]*\nHINT: .*rolePasswords: false/);
    expect((error as ApplicationFailure).message).not.toContain(BACKUP_PASSWORD);
  });

  it('keeps the newest keepLast complete copies of the server, never the one just written, and removes dead writers\' leftovers', async () => {
    const repo = new RepositoryRegistry(config, env).get('local');
    const serverId = serverFolder('127.0.0.1', source.port);
    // A writer that died a week before: files, no manifest. And one that may still be writing.
    await writeAll(repo, `globals/${serverId}/20261114T020000Z/globals.sql`, '-- cut short\n');
    await writeAll(repo, `globals/${serverId}/20261121T023000Z/globals.sql`, '-- being written\n');
    expect((await listGlobals(repo, serverId)).map((e) => e.timestamp)).not.toContain('20261114T020000Z');

    const newest = await backupGlobals(input({ startedAt: '2026-11-21T02:20:00.000Z', keepLast: 2 }));
    expect(newest.pruned).toEqual([
      `globals/${serverId}/20261121T021000Z`, `globals/${serverId}/20261121T020500Z`, `globals/${serverId}/20261121T020000Z`,
      `globals/${serverId}/20261114T020000Z`,
    ]);
    expect((await listGlobals(repo, serverId)).map((e) => e.timestamp)).toEqual(['20261121T022000Z', '20261121T021500Z']);
    expect(await repo.list(`globals/${serverId}/20261121T020000Z/`)).toEqual([]);
    expect(await repo.list(`globals/${serverId}/20261114T020000Z/`)).toEqual([]);
    expect((await repo.list(`globals/${serverId}/20261121T023000Z/`)).length).toBe(1);

    // A late retry of an older run: kept although two newer copies exist.
    const late = await backupGlobals(input({ startedAt: '2026-11-21T01:00:00.000Z', keepLast: 2 }));
    expect(late.pruned).toEqual([]);
    expect((await listGlobals(repo, serverId)).map((e) => e.timestamp)).toEqual(['20261121T022000Z', '20261121T021500Z', '20261121T010000Z']);
  });

  it('converges when retried: a complete copy is checked and kept, an unfinished one is written again', async () => {
    const repo = new RepositoryRegistry(config, env).get('local');
    const first = await backupGlobals(input({ startedAt: '2026-11-21T02:40:00.000Z' }));
    const again = await backupGlobals(input({ startedAt: '2026-11-21T02:40:00.000Z' }));
    expect(again).toMatchObject({ key: first.key, sha256: first.sha256, bytes: first.bytes, alreadyDone: true });

    // A worker killed between the SQL and the manifest: not listed, and the retry finishes it.
    await repo.delete(globalsKey(first.key, GLOBALS_FILE.manifest));
    expect((await listGlobals(repo, first.serverId)).map((e) => e.id)).not.toContain(first.key);
    const retried = await backupGlobals(input({ startedAt: '2026-11-21T02:40:00.000Z' }));
    expect(retried).toMatchObject({ key: first.key, alreadyDone: false });
    expect((await listGlobals(repo, first.serverId)).filter((e) => e.id === first.key)).toHaveLength(1);

    // A stored file that no longer matches its manifest is not trusted: written again.
    await writeAll(repo, globalsKey(first.key, GLOBALS_FILE.sql), '-- tampered\n');
    const rewritten = await backupGlobals(input({ startedAt: '2026-11-21T02:40:00.000Z' }));
    expect(rewritten.alreadyDone).toBe(false);
    expect(await storedText('local', rewritten)).toContain('CREATE ROLE app_owner;');
    expect((await readGlobalsManifest(repo, first.key)).sha256).toBe(rewritten.sha256);
  });

  it('encrypts into an encrypting repository so that the stock age CLI decrypts it', async () => {
    const result = await backupGlobals(input({ repository: 'sealed' }));
    expect(result).toMatchObject({ file: 'globals.sql.age', encrypted: true });
    const stored = await readAll(new RepositoryRegistry(config, env).get('sealed'), globalsKey(result.key, result.file));
    expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1');
    expect(stored.includes('CREATE ROLE')).toBe(false);
    const encryptedFile = join(workDir, 'globals.sql.age');
    writeFileSync(encryptedFile, stored);
    const sql = execFileSync(ageTool('age'), ['-d', '-i', key.file, encryptedFile], { encoding: 'utf8' });
    expect(sql).toContain('CREATE ROLE app_owner;');
    expect(sql).toMatch(/\n-- PostgreSQL database cluster dump complete\n--\n+$/);
    const manifest = await readGlobalsManifest(new RepositoryRegistry(config, env).get('sealed'), result.key);
    expect(manifest).toMatchObject({ encrypted: true, encryption: { format: 'age', recipients: [key.recipient] }, sqlBytes: Buffer.byteLength(sql), sha256: createHash('sha256').update(stored).digest('hex') });
    // The worker holds the identity: it read the SQL back through the decryption.
    expect(manifest.verification).toMatchObject({ ok: true, decrypted: true, completeMarker: true });
  });

  it('verifies by checksum only, and says so, on a worker that encrypts without holding the key', async () => {
    const result = await backupGlobals(input({ repository: 'sealed-backup-only' }));
    expect(result.verification).toMatchObject({ ok: true, sha256Matches: true, decrypted: false, note: expect.stringContaining('sha256 and size of the stored bytes checked only') });
    const encryptedFile = join(workDir, 'backup-only.sql.age');
    writeFileSync(encryptedFile, await readAll(new RepositoryRegistry(config, env).get('sealed-backup-only'), globalsKey(result.key, result.file)));
    expect(execFileSync(ageTool('age'), ['-d', '-i', key.file, encryptedFile], { encoding: 'utf8' })).toContain('CREATE ROLE app_owner;');
  });

  it('stores into an S3 repository, listed only once complete', async () => {
    const result = await backupGlobals(input({ repository: 's3' }));
    const repo = new RepositoryRegistry(config, env).get('s3');
    const sql = (await readAll(repo, globalsKey(result.key, 'globals.sql'))).toString('utf8');
    expect(sql).toContain('CREATE ROLE app_owner;');
    expect(createHash('sha256').update(sql).digest('hex')).toBe(result.sha256);
    expect((await listGlobals(repo)).map((e) => e.id)).toEqual([result.key]);
    expect((await repo.list('globals/')).map((o) => o.key)).toEqual([globalsKey(result.key, 'globals.sql'), globalsKey(result.key, 'manifest.json')]);
  });

  it('fails with a clear message and a hint that do not contain the wrong password', async () => {
    const error = await backupGlobals(input({ database: 'orders-wrong-password', startedAt: '2026-11-21T03:00:00.000Z' })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplicationFailure);
    const failure = error as ApplicationFailure;
    expect(failure.type).toBe('AuthenticationFailed');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/^authentication to postgres@127\.0\.0\.1:\d+\/orders failed: password authentication failed for user "postgres"\nHINT: /);
    expect(failure.message).not.toContain('not-the-Pw-5521aa');
    expect((await listGlobals(new RepositoryRegistry(config, env).get('local'))).map((e) => e.timestamp)).not.toContain('20261121T030000Z');
  });

  it('waits for a free dump slot before pg_dumpall runs, and a cancel while waiting leaves nothing behind', async () => {
    const slots = new DumpSlots(1);
    let release!: () => void;
    const busy = slots.run(undefined, () => new Promise<void>((resolve) => (release = resolve)));
    const activityEnv = activityEnvironment();
    const running = activityEnv.run(activities(slots).backupGlobals, input({ startedAt: '2026-11-21T04:00:00.000Z' })).catch((e: unknown) => e);
    await expect.poll(() => slots.state.waiting, { timeout: 10_000 }).toBe(1);
    activityEnv.cancel();
    const error = await running;
    release();
    await busy;
    expect(error).toBeInstanceOf(CancelledFailure);
    expect(await new RepositoryRegistry(config, env).get('local').list(`globals/${serverFolder('127.0.0.1', source.port)}/20261121T040000Z/`)).toEqual([]);
  });

  it('refuses bad input before connecting', async () => {
    for (const [bad, field] of [[{ startedAt: 'yesterday' }, 'startedAt'], [{ keepLast: 0 }, 'keepLast'], [{ database: 'nope' }, 'unknown database']] as const) {
      const error = await backupGlobals(input(bad)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApplicationFailure);
      expect((error as ApplicationFailure).type).toBe('InvalidInput');
      expect((error as ApplicationFailure).message).toContain(field);
      expect((error as ApplicationFailure).message).toContain('\nHINT: ');
    }
  });
});

describe('serverFolder', () => {
  it('names a server by host and port, safe for file systems and S3 keys', () => {
    expect(serverFolder('db.internal', 5432)).toBe('db.internal-5432');
    expect(serverFolder('DB.Internal', 5432)).toBe('db.internal-5432');
    expect(serverFolder('/var/run/postgresql', 5432)).toMatch(/^_var_run_postgresql_[0-9a-f]{8}-5432$/);
    expect(serverFolder('::1', 5433)).toMatch(/^__1_[0-9a-f]{8}-5433$/);
    // Two hosts that read alike once made safe stay apart.
    expect(serverFolder('a:b', 1)).not.toBe(serverFolder('a_b', 1));
  });
});
