import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listArchivedWal, walReachability } from '../../pitr/wal-inventory.js';
import { parseLsn } from '../../pitr/wal-names.js';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { projectRoot } from '../../stack/binaries.js';
import { ageKeygen, ageTool, type AgeKey } from '../encryption/age-cli.js';
import { plainBaseBackup, recoverToLatest, startArchivingCluster, startWalTestStack, type PitrSetup, type WalTestStack } from '../support/pitr.js';

// Encrypted WAL archives: age-encrypted to the repository's recipients, in a local repository
// (gzip) and in S3 (SeaweedFS, zstd). The stored objects decrypt with the stock age CLI and
// decompress with stock gunzip/zstd; a recovery runs through wal-fetch and, for the local
// repository, through a plain restore_command of those stock tools.

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

describe.each([
  { repositoryId: 'local' as const, compression: 'gzip:6', ext: 'gz', decompress: ['gzip', '-d', '-c'] },
  { repositoryId: 's3' as const, compression: 'zstd:5', ext: 'zst', decompress: ['zstd', '-d', '-q', '-c'] },
])('an encrypted wal archive in the $repositoryId repository ($compression)', ({ repositoryId, compression, ext, decompress }) => {
  let stack: WalTestStack;
  let setup: PitrSetup;
  let repository: Repository;
  let key: AgeKey;
  let work: string;
  let keyDir: string;

  /** The stock CLIs' view of a stored object: age -d, then gunzip / zstd -d. */
  async function stockDecrypt(objectKey: string): Promise<Buffer> {
    const stored = join(work, 'stored.age');
    writeFileSync(stored, await readAll(repository, objectKey));
    const plain = execFileSync(ageTool('age'), ['-d', '-i', key.file, stored], { maxBuffer: 64 << 20 });
    return execFileSync(decompress[0]!, decompress.slice(1), { input: plain, maxBuffer: 64 << 20 });
  }

  beforeAll(async () => {
    stack = await startWalTestStack({ s3: repositoryId === 's3' });
    keyDir = mkdtempSync(join(tmpdir(), 'pgrunbook-wal-keys-'));
    chmodSync(keyDir, 0o755);
    key = ageKeygen(keyDir, 'wal');
    // restore_command runs as the server's user: it must read the identity (wal-push never does).
    if (isRoot()) chownSync(key.file, postgresUid().uid, postgresUid().gid);
    setup = await startArchivingCluster(stack, {
      repository: repositoryId,
      encryption: { recipients: [key.recipient], identityFile: key.file },
      cluster: { wal: { compression } },
    });
    repository = new RepositoryRegistry(setup.config, setup.env).get(repositoryId);
    work = join(setup.dir, 'work');
    mkdirSync(work);
    await setup.source.sql('CREATE TABLE events (id int PRIMARY KEY, note text)', 'app');
  });

  afterAll(async () => {
    await setup?.stop();
    await stack?.teardown();
    if (keyDir) rmSync(keyDir, { recursive: true, force: true });
  });

  it('stores segments and backup labels age-encrypted, which the stock age CLI and decompressor turn back into the original bytes', async () => {
    await setup.source.sql("INSERT INTO events SELECT g, 'one' FROM generate_series(1, 500) g", 'app');
    const segment = await setup.switchAndArchive();
    const files = await listArchivedWal(repository, 'main');
    const file = files.find((f) => f.name === segment)!;
    expect(file.key).toMatch(new RegExp(`^pitr/main/wal/${segment.slice(0, 16)}/${segment}-[0-9a-f]{64}\\.${ext}\\.age$`));
    const original = await stockDecrypt(file.key);
    expect(original.length).toBe(16 * 1024 * 1024);
    expect(sha256(original)).toBe(file.sha256);
    // Not readable without the key: the stored bytes are an age file, not a compressed frame.
    expect((await readAll(repository, file.key)).subarray(0, 21).toString()).toBe('age-encryption.org/v1');
  });

  it('recovers a stock base backup to the latest WAL through pgrunbook wal-fetch (and, from a local repository, a plain restore_command)', async () => {
    await setup.source.sql("INSERT INTO events SELECT g, 'in base' FROM generate_series(501, 1000) g", 'app');
    const viaFetch = await plainBaseBackup(setup, 'fetch');
    const viaPlain = repositoryId === 'local' ? await plainBaseBackup(setup, 'plain') : undefined;
    await setup.source.sql("INSERT INTO events SELECT g, 'after base' FROM generate_series(1001, 1500) g", 'app');
    await setup.switchAndArchive();
    const expected = await setup.source.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base') FROM events", 'app');
    expect(expected).toBe('1500|1125750|500');

    // pg_basebackup's backup label went through wal-push too, encrypted like the segments.
    const labels = (await listArchivedWal(repository, 'main')).filter((f) => f.kind === 'backup');
    expect(labels.length).toBeGreaterThan(0);
    expect(labels[0]!.key).toMatch(new RegExp(`^pitr/main/wal/timelines/[0-9A-F]{24}\\.[0-9A-F]{8}\\.backup-[0-9a-f]{64}\\.${ext}\\.age$`));
    expect((await stockDecrypt(labels[0]!.key)).toString()).toContain('START WAL LOCATION');

    const fetch = `${process.execPath} ${join(projectRoot, 'dist', 'client', 'main.js')} wal-fetch "%f" "%p" --cluster main --config ${setup.configPath}`;
    const byFetch = await recoverToLatest(setup, viaFetch, fetch);
    try {
      expect(await byFetch.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base') FROM events", 'app')).toBe(expected);
    } finally {
      await byFetch.stop();
    }
    if (viaPlain) {
      const repo = join(setup.dir, 'repo');
      const plain = `f=$(ls ${repo}/pitr/main/wal/*/%f-* 2>/dev/null | head -n 1); [ -n "$f" ] && age -d -i ${key.file} "$f" | gzip -d -c > "%p"`;
      const byPlain = await recoverToLatest(setup, viaPlain, plain);
      try {
        expect(await byPlain.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base') FROM events", 'app')).toBe(expected);
      } finally {
        await byPlain.stop();
      }
    }
  });

  it('fails wal-fetch with a decryption error for a modified object and leaves nothing at %p', async () => {
    const segment = await setup.switchAndArchive();
    const file = (await listArchivedWal(repository, 'main')).find((f) => f.name === segment)!;
    const stored = await readAll(repository, file.key);
    const modified = Buffer.from(stored);
    modified[modified.length - 40]! ^= 0x01;
    await writeAll(repository, file.key, modified);
    try {
      const destination = join(work, 'RECOVERYXLOG');
      const result = await setup.cli(['wal-fetch', segment, destination]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^pgrunbook wal-fetch: ${segment} could not be read back from .*failed authentication.*\nHINT: `));
      expect(existsSync(destination)).toBe(false);
      expect(readdirSync(work).filter((n) => n.includes('RECOVERYXLOG'))).toEqual([]);
    } finally {
      await writeAll(repository, file.key, stored);
    }
  });

  it('is continuous for walReachability and wal verify, which read only object names', async () => {
    const startLsn = parseLsn(await setup.source.sql('SELECT pg_current_wal_lsn()'))!;
    const segment = await setup.switchAndArchive();
    expect(await walReachability(repository, 'main', { timeline: 1, startLsn }, { latest: true })).toMatchObject({ reachable: true, lastSegment: segment, timelines: [1] });
    const verify = await setup.cli(['wal', 'verify', '--json']);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, gaps: [] });
  });
});
