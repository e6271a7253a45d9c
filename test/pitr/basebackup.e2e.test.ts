import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBasebackup } from '../../client/commands/basebackup.js';
import { resolveRepositoryKeys } from '../../encryption/keys.js';
import { listBaseBackups, readBaseManifest } from '../../pitr/base-catalog.js';
import { extractBaseBackup } from '../../pitr/base-extract.js';
import { BASE_ARTIFACT, baseBackupFolder } from '../../pitr/layout.js';
import { parseLsn, segmentFileName, segmentOf } from '../../pitr/wal-names.js';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll } from '../../repository/types.js';
import { postgresServerBinDir } from '../../stack/binaries.js';
import type { BasebackupResult } from '../../workflows/basebackup-cluster.js';
import { ageKeygen, ageTool } from '../encryption/age-cli.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';

// basebackupCluster on a real worker, Temporal, PostgreSQL 15 and SeaweedFS: the manifest says
// what the server says, and the stored artifact is standard (stock age, zstd/gzip, tar and
// pg_verifybackup read it without pgrunbook).

let stack: TestStack;
let scratch: string;
const bin = postgresServerBinDir();

beforeAll(async () => {
  stack = await startTestStack({ s3: true });
  scratch = mkdtempSync(join(tmpdir(), 'pgrunbook-basebackup-test-'));
  // The server user extracts below it.
  chmodSync(scratch, 0o755);
});

afterAll(async () => {
  await stack?.teardown();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe.each([
  { repository: 'local' as const, compression: 'zstd:3', encrypted: false },
  { repository: 's3' as const, compression: 'zstd:3', encrypted: true },
  { repository: 'local' as const, compression: 'gzip:1', encrypted: true },
])('basebackupCluster into the $repository repository, $compression, encrypted: $encrypted', ({ repository, compression, encrypted }) => {
  let pitr: PitrSetup;
  let result: BasebackupResult;
  const key = encrypted ? ageKeygen(mkdtempSync(join(tmpdir(), 'pgrunbook-basebackup-key-')), 'alice') : undefined;

  beforeAll(async () => {
    pitr = await startArchivingCluster(stack, {
      repository,
      cluster: { basebackup: { compression } },
      ...(key ? { encryption: { recipients: [key.recipient], identityFile: key.file } } : {}),
    });
    await pitr.source.sql('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g', 'app');
    const { stop } = await startPitrWorker(stack, pitr);
    try {
      result = await (await startBasebackup(stack.client, pitr.config, { cluster: PITR_CLUSTER })).result();
    } finally {
      await stop();
    }
  }, 180_000);

  afterAll(async () => {
    await pitr?.stop();
  });

  it('records LSNs, timeline, WAL range, version and the server\'s system identifier in a verified manifest', async () => {
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get(repository);
    const manifest = await readBaseManifest(repo, result.backupId);
    expect(manifest.status).toBe('verified');
    expect(manifest.timeline).toBe(1);
    const start = parseLsn(manifest.startLsn)!;
    const stop = parseLsn(manifest.stopLsn)!;
    expect(start).toBeGreaterThan(0n);
    expect(start <= stop).toBe(true);
    const sysid = (await pitr.source.sql('SELECT system_identifier FROM pg_control_system()')).trim();
    expect(manifest.systemIdentifier).toBe(sysid);
    expect(manifest.serverVersionNum).toBe(Number((await pitr.source.sql('SHOW server_version_num')).trim()));
    expect(manifest.segmentSize).toBe(16 * 1024 * 1024);
    expect(manifest.walRange).toEqual({ start: segmentFileName(1, segmentOf(start)), stop: segmentFileName(1, segmentOf(stop)) });
    expect(manifest.verification).toMatchObject({ ok: true, tool: 'pg_verifybackup 15' });
    expect(manifest.compression).toBe(compression.split(':')[0]);
    expect(manifest.encryption ?? null).toEqual(key ? { format: 'age', recipients: [key.recipient] } : null);
    const file = `${BASE_ARTIFACT.tar}${compression.startsWith('zstd') ? '.zst' : '.gz'}${encrypted ? '.age' : ''}`;
    expect(Object.keys(manifest.files)).toEqual([file]);
    expect(manifest.files[file]).toEqual({ size: result.size, sha256: result.sha256 });
    expect(manifest.tarSize).toBeGreaterThan(result.size);
    expect(manifest.workflowId).toMatch(/^basebackup-main-/);
    const listed = await listBaseBackups(repo, PITR_CLUSTER);
    expect(listed.map((b) => [b.id, b.state])).toEqual([[result.backupId, 'verified']]);
  });

  it('stores an artifact that the stock age, zstd/gzip, tar and pg_verifybackup read without pgrunbook', async () => {
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get(repository);
    const manifest = await readBaseManifest(repo, result.backupId);
    const [file] = Object.keys(manifest.files);
    const dir = mkdtempSync(join(scratch, 'stock-'));
    const stored = join(dir, file!);
    writeFileSync(stored, await readAll(repo, `${baseBackupFolder(result.backupId)}${file}`));
    const extracted = join(dir, 'data');
    mkdirSync(extracted, { mode: 0o700 });
    // The documented commands: age -d -i KEY base.tar.zst.age | zstd -d | tar -x -C DIR
    const decrypt = key ? `${ageTool('age')} -d -i ${key.file} ${stored}` : `cat ${stored}`;
    const decompress = compression.startsWith('zstd') ? 'zstd -d -c' : 'gzip -d -c';
    execFileSync('bash', ['-o', 'pipefail', '-c', `${decrypt} | ${decompress} | tar -x -C ${extracted}`]);
    const verified = execFileSync(join(bin, 'pg_verifybackup'), [extracted], { encoding: 'utf8' });
    expect(verified).toContain('backup successfully verified');
  });

  it('extracts with extractBaseBackup into a 0700 directory the server user owns, and again over a half-extracted one', async () => {
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get(repository);
    const manifest = await readBaseManifest(repo, result.backupId);
    const keys = await resolveRepositoryKeys(repository, pitr.config.repositories[repository]!, pitr.env);
    const parent = mkdtempSync(join(scratch, 'extract-'));
    if (isRoot()) execFileSync('chown', [`${postgresUid().uid}:${postgresUid().gid}`, parent]);
    const dataDir = join(parent, 'data');
    // What a killed attempt leaves behind: a directory with a stray file.
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'leftover'), 'x');
    let reported = 0;
    const { bytes } = await extractBaseBackup({ repository: repo, manifest, keys, dataDir, asServerUser: isRoot(), onBytes: (b) => (reported = b) });
    expect(bytes).toBe(result.size);
    expect(reported).toBe(result.size);
    const info = statSync(dataDir);
    expect(info.mode & 0o777).toBe(0o700);
    if (isRoot()) expect(statSync(join(dataDir, 'PG_VERSION')).uid).toBe(postgresUid().uid);
    expect(() => statSync(join(dataDir, 'leftover'))).toThrow();
    expect(execFileSync(join(bin, 'pg_verifybackup'), [dataDir], { encoding: 'utf8' })).toContain('backup successfully verified');
  });

  it('refuses a tampered stored tar with a checksum error and leaves no extracted files', async () => {
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get(repository);
    const manifest = await readBaseManifest(repo, result.backupId);
    const [file] = Object.keys(manifest.files);
    const storedKey = `${baseBackupFolder(result.backupId)}${file}`;
    const original = await readAll(repo, storedKey);
    const keys = await resolveRepositoryKeys(repository, pitr.config.repositories[repository]!, pitr.env);
    const tampered = Buffer.from(original);
    // A byte in the last 64 KiB: the stream decrypts and decompresses up to there (or fails there).
    tampered[tampered.length - 100] = tampered[tampered.length - 100]! ^ 0xff;
    await writeAll(repo, storedKey, tampered);
    const dataDir = join(mkdtempSync(join(scratch, 'tampered-')), 'data');
    try {
      await expect(extractBaseBackup({ repository: repo, manifest, keys, dataDir, asServerUser: isRoot() })).rejects.toThrow(new RegExp(`base backup ${result.backupId}: .*sha256 of .* is [0-9a-f]{64}, its manifest says ${manifest.files[file!]!.sha256}: the stored tar was modified or damaged`));
      expect(() => statSync(dataDir)).toThrow();
    } finally {
      await writeAll(repo, storedKey, original);
    }
  });
});
