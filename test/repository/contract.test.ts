import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import {
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3RepositoryConfig } from '../../config/schema.js';
import { ConfigError } from '../../config/errors.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { S3Repository } from '../../repository/s3/s3-repository.js';
import { digestStream } from '../../repository/checksum-stream.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { startS3Server, type S3Server } from '../../stack/seaweedfs.js';

const MiB = 1024 * 1024;

/** What the contract suite needs from a driver besides the Repository itself. */
interface Harness {
  repository: Repository;
  /** Incomplete writes (temp files / multipart uploads) that exist for exactly this key. */
  incompleteWrites(key: string): Promise<number>;
  /** Every incomplete write anywhere under `prefix` (a folder-like prefix ending in '/'). */
  incompleteWritesUnder(prefix: string): Promise<number>;
  /** What a writer that was killed mid-write leaves behind for `key`. */
  simulateCrashedWriter(key: string): Promise<void>;
  close(): Promise<void>;
}

function localHarness(): Harness {
  const root = mkdtempSync(join(tmpdir(), 'pgrunbook-contract-'));
  const repository = new LocalRepository('local', root);
  const pathOf = (key: string): string => join(root, ...key.split('/'));
  const partialsOf = (key: string): string[] => {
    const dir = dirname(pathOf(key));
    if (!existsSync(dir)) return [];
    const mine = new RegExp(`^\\.${basename(pathOf(key)).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.[0-9a-f]{12}\\.partial$`);
    return readdirSync(dir).filter((name) => mine.test(name));
  };
  return {
    repository,
    incompleteWrites: async (key) => partialsOf(key).length,
    incompleteWritesUnder: async (prefix) => {
      const dir = pathOf(prefix.replace(/\/$/, ''));
      if (!existsSync(dir)) return 0;
      return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.partial')).length;
    },
    simulateCrashedWriter: async (key) => {
      const path = pathOf(key);
      mkdirSync(dirname(path), { recursive: true });
      // The naming of local-repository.ts: ".<name>.<12 hex>.partial" next to the final name.
      writeFileSync(join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`), randomBytes(1024));
    },
    close: async () => rmSync(root, { recursive: true, force: true }),
  };
}

const S3_PREFIX = 'contract';

function s3Config(server: S3Server): S3RepositoryConfig {
  return {
    type: 's3',
    bucket: server.bucket,
    prefix: S3_PREFIX,
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    accessKeyIdEnv: 'K',
    secretAccessKeyEnv: 'S',
    partSizeMiB: 5,
    queueSize: 2,
  };
}

let s3Server: S3Server | undefined;

async function s3Harness(): Promise<Harness> {
  const server = await startS3Server();
  s3Server = server;
  const repository = new S3Repository('s3', s3Config(server), { K: server.accessKeyId, S: server.secretAccessKey });
  const raw = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    maxAttempts: 1,
  });
  const uploads = async (prefix: string): Promise<{ Key?: string; UploadId?: string }[]> =>
    (await raw.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: `${S3_PREFIX}/${prefix}` }))).Uploads ?? [];
  return {
    repository,
    incompleteWrites: async (key) => (await uploads(key)).filter((u) => u.Key === `${S3_PREFIX}/${key}`).length,
    incompleteWritesUnder: async (prefix) => (await uploads(prefix)).length,
    simulateCrashedWriter: async (key) => {
      const Bucket = server.bucket;
      const Key = `${S3_PREFIX}/${key}`;
      const { UploadId } = await raw.send(new CreateMultipartUploadCommand({ Bucket, Key }));
      await raw.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(5 * MiB) }));
    },
    close: async () => {
      raw.destroy();
      await server.stop();
      s3Server = undefined;
    },
  };
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

// Read-back digests use the product helper; expected digests are computed independently above.
const sha256Of = (stream: Readable) => digestStream(stream);

async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * Starts `write(key)` with a body fed by hand: a first chunk of 6 MiB (more than one 5 MiB part),
 * then waits until the driver has taken all of it and its incomplete write exists, so the write
 * is verifiably in progress.
 */
async function startSlowWrite(
  h: Harness,
  key: string,
  signal?: AbortSignal,
): Promise<{ body: PassThrough; first: Buffer; result: Promise<{ size: number }> }> {
  const body = new PassThrough();
  const result = h.repository.write(key, body, signal ? { signal } : {});
  // Observed later with expect(...).rejects; keep an early rejection from being reported as unhandled.
  result.catch(() => undefined);
  const first = randomBytes(6 * MiB);
  body.write(first);
  await waitFor('the write to be in progress', async () => body.writableLength === 0 && body.readableLength === 0 && (await h.incompleteWrites(key)) >= 1);
  return { body, first, result };
}

const drivers: { driver: 'local' | 's3'; start: () => Promise<Harness> }[] = [
  { driver: 'local', start: async () => localHarness() },
  { driver: 's3', start: s3Harness },
];

describe.each(drivers)('Repository contract ($driver)', ({ driver, start }) => {
  let h: Harness;
  let repo: Repository;

  beforeAll(async () => {
    h = await start();
    repo = h.repository;
  }, 120_000);

  afterAll(async () => {
    await h?.close();
  });

  it('round-trips a small buffer and reports its size', async () => {
    const content = randomBytes(1000);
    expect(await writeAll(repo, 'small/a.bin', content)).toEqual({ size: 1000 });
    expect((await readAll(repo, 'small/a.bin')).equals(content)).toBe(true);
    expect(await repo.stat('small/a.bin')).toMatchObject({ key: 'small/a.bin', size: 1000 });
    expect((await repo.stat('small/a.bin'))?.modified).toBeInstanceOf(Date);
  });

  it('round-trips a ~12 MiB stream byte for byte (several parts on S3)', async () => {
    const source = createHash('sha256');
    let produced = 0;
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 12; i++) {
        const chunk = randomBytes(i === 11 ? MiB + 12_345 : MiB);
        source.update(chunk);
        produced += chunk.length;
        yield chunk;
      }
    }
    const { size } = await repo.write('big/dump.bin', Readable.from(chunks()));
    expect(produced).toBe(12 * MiB + 12_345);
    expect(size).toBe(produced);
    const back = await sha256Of(await repo.read('big/dump.bin'));
    expect(back).toEqual({ sha256: source.digest('hex'), size: produced });
    expect((await repo.stat('big/dump.bin'))?.size).toBe(produced);
    if (driver === 's3') {
      // A multipart ETag ends in "-<part count>": 12 MiB + a bit in 5 MiB parts is 3 parts.
      const server = s3Server!;
      const raw = new S3Client({ endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
      try {
        const head = await raw.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${S3_PREFIX}/big/dump.bin` }));
        expect(head.ETag).toMatch(/-3"?$/);
      } finally {
        raw.destroy();
      }
    }
  });

  it('lists only complete objects under the prefix, sorted by key, with their sizes', async () => {
    for (const [key, size] of [['l/b.txt', 2], ['l/c/d.txt', 4], ['l/a0.txt', 3], ['l/a.txt', 1], ['lx/outside.txt', 5], ['other/l/x.txt', 6]] as const) {
      await writeAll(repo, key, Buffer.alloc(size, 'x'));
    }
    await h.simulateCrashedWriter('l/e.txt');
    expect((await repo.list('l/')).map((o) => [o.key, o.size])).toEqual([
      ['l/a.txt', 1],
      ['l/a0.txt', 3],
      ['l/b.txt', 2],
      ['l/c/d.txt', 4],
    ]);
    // A prefix that ends inside a name.
    expect((await repo.list('l/a')).map((o) => o.key)).toEqual(['l/a.txt', 'l/a0.txt']);
    expect((await repo.list('l/c/')).map((o) => o.key)).toEqual(['l/c/d.txt']);
    expect(await repo.list('nothing-here/')).toEqual([]);
    expect(await repo.removeIncompleteWrites('l/e.txt')).toBe(1);
  });

  it('deletes idempotently: twice, and a key that never existed', async () => {
    await writeAll(repo, 'del/x.txt', 'bye');
    await writeAll(repo, 'del/keep.txt', 'stay');
    expect(await repo.stat('del/x.txt')).toBeDefined();
    await repo.delete('del/x.txt');
    expect(await repo.stat('del/x.txt')).toBeUndefined();
    await expect(repo.delete('del/x.txt')).resolves.toBeUndefined();
    await expect(repo.delete('del/never-written.txt')).resolves.toBeUndefined();
    expect((await repo.list('del/')).map((o) => o.key)).toEqual(['del/keep.txt']);
  });

  it('lists incomplete writes under a prefix by the key they would publish, and a folder emptied by deletes is gone', async () => {
    await writeAll(repo, 'iw/b1/manifest.json', '{}');
    await h.simulateCrashedWriter('iw/b1/db_full.dump');
    await h.simulateCrashedWriter('iw/b2/db_full.dump');
    await h.simulateCrashedWriter('iwx/b3/db_full.dump');
    const started = Date.now();
    const writes = await repo.listIncompleteWrites('iw/');
    expect(writes.map((w) => w.key)).toEqual(['iw/b1/db_full.dump', 'iw/b2/db_full.dump']);
    for (const w of writes) expect(Math.abs(w.modified.getTime() - started)).toBeLessThan(120_000);
    expect((await repo.listIncompleteWrites('iw/b2/')).map((w) => w.key)).toEqual(['iw/b2/db_full.dump']);
    // Never among the complete objects.
    expect((await repo.list('iw/')).map((o) => o.key)).toEqual(['iw/b1/manifest.json']);
    for (const w of writes) expect(await repo.removeIncompleteWrites(w.key)).toBe(1);
    expect(await repo.listIncompleteWrites('iw/')).toEqual([]);
    await repo.delete('iw/b1/manifest.json');
    expect(await repo.list('iw/')).toEqual([]);
    if (driver === 'local') expect(existsSync(join(repo.location, 'iw', 'b1'))).toBe(false);
    expect(await h.incompleteWritesUnder('iwx/')).toBe(1);
  });

  it('makes a key visible only once its write completes', async () => {
    await writeAll(repo, 'atomic/sibling.txt', 'done');
    const { body, first, result } = await startSlowWrite(h, 'atomic/dump.bin');

    expect(await repo.stat('atomic/dump.bin')).toBeUndefined();
    expect((await repo.list('atomic/')).map((o) => o.key)).toEqual(['atomic/sibling.txt']);

    const rest = randomBytes(MiB);
    body.end(rest);
    expect(await result).toEqual({ size: 7 * MiB });
    expect((await repo.stat('atomic/dump.bin'))?.size).toBe(7 * MiB);
    expect((await repo.list('atomic/')).map((o) => o.key)).toEqual(['atomic/dump.bin', 'atomic/sibling.txt']);
    expect(sha256(await readAll(repo, 'atomic/dump.bin'))).toBe(sha256(Buffer.concat([first, rest])));
    expect(await h.incompleteWrites('atomic/dump.bin')).toBe(0);
  });

  it('rejects a write whose body fails mid-way and leaves nothing under the key', async () => {
    const { body, result } = await startSlowWrite(h, 'failed/dump.bin');
    body.destroy(new Error('boom'));
    await expect(result).rejects.toThrow('boom');

    expect(await repo.stat('failed/dump.bin')).toBeUndefined();
    expect(await repo.list('failed/')).toEqual([]);
    // Temp files (local) or multipart uploads (S3) are gone too: nothing is left to abort.
    expect(await h.incompleteWritesUnder('failed/')).toBe(0);
    expect(await repo.removeIncompleteWrites('failed/dump.bin')).toBe(0);
  });

  it('rejects a write whose body fails right after its first part is handed over, leaving nothing', async () => {
    // No waiting for the upload to start: the failure races the driver's own requests.
    const body = new PassThrough();
    const result = repo.write('failed-early/dump.bin', body);
    result.catch(() => undefined);
    body.write(randomBytes(6 * MiB));
    await waitFor('the body to be taken', () => body.writableLength === 0 && body.readableLength === 0);
    body.destroy(new Error('boom early'));
    await expect(result).rejects.toThrow('boom early');

    expect(await repo.stat('failed-early/dump.bin')).toBeUndefined();
    expect(await repo.list('failed-early/')).toEqual([]);
    expect(await h.incompleteWritesUnder('failed-early/')).toBe(0);
    expect(await repo.removeIncompleteWrites('failed-early/dump.bin')).toBe(0);
  });

  it('rejects a write aborted through its AbortSignal and leaves nothing under the key', async () => {
    const controller = new AbortController();
    const { result } = await startSlowWrite(h, 'aborted/dump.bin', controller.signal);
    controller.abort();
    await expect(result).rejects.toMatchObject({ name: 'AbortError' });

    expect(await repo.stat('aborted/dump.bin')).toBeUndefined();
    expect(await repo.list('aborted/')).toEqual([]);
    expect(await h.incompleteWritesUnder('aborted/')).toBe(0);
    expect(await repo.removeIncompleteWrites('aborted/dump.bin')).toBe(0);
  });

  it('removes the incomplete write a crashed writer left behind, and nothing else', async () => {
    await writeAll(repo, 'crash/db_full.dump', 'an earlier complete copy');
    await h.simulateCrashedWriter('crash/db_full.dump');
    expect(await h.incompleteWrites('crash/db_full.dump')).toBe(1);

    expect(await repo.removeIncompleteWrites('crash/db_full.dump')).toBe(1);
    expect(await h.incompleteWrites('crash/db_full.dump')).toBe(0);
    expect(await h.incompleteWritesUnder('crash/')).toBe(0);
    expect((await readAll(repo, 'crash/db_full.dump')).toString()).toBe('an earlier complete copy');
    expect(await repo.removeIncompleteWrites('crash/db_full.dump')).toBe(0);
    expect(await repo.removeIncompleteWrites('crash/never-written.dump')).toBe(0);
  });

  it('leaves incomplete writes of a key that merely starts with the same name alone', async () => {
    await h.simulateCrashedWriter('prefixed/db_full.sql.gz');
    // Regression: LocalRepository.removeIncompleteWrites once matched ".db_full.sql." as a name
    // prefix and so also deleted the temp file of an in-progress write of "db_full.sql.gz".
    expect(await repo.removeIncompleteWrites('prefixed/db_full.sql')).toBe(0);
    expect(await h.incompleteWrites('prefixed/db_full.sql.gz')).toBe(1);
    await repo.removeIncompleteWrites('prefixed/db_full.sql.gz');
  });

  it('rejects reading a missing key', async () => {
    await expect(repo.read('missing/none.bin')).rejects.toThrow();
    expect(await repo.stat('missing/none.bin')).toBeUndefined();
  });

  it('round-trips keys with non-ASCII characters and spaces', async () => {
    const key = 'db/20261121T020000Z_pré up/x.txt';
    const content = 'ünïcødé content';
    expect(await writeAll(repo, key, content)).toEqual({ size: Buffer.byteLength(content) });
    expect((await readAll(repo, key)).toString()).toBe(content);
    expect(await repo.stat(key)).toMatchObject({ key, size: Buffer.byteLength(content) });
    expect((await repo.list('db/20261121T020000Z_pré up/')).map((o) => o.key)).toEqual([key]);
    expect((await repo.list('db/')).map((o) => o.key)).toEqual([key]);
    await repo.delete(key);
    expect(await repo.stat(key)).toBeUndefined();
  });

  if (driver === 'local') {
    it('refuses keys that escape the repository root', async () => {
      const name = `pgrunbook-escape-${randomBytes(4).toString('hex')}`;
      const outside = join(repo.location, '..', name);
      await expect(writeAll(repo, `../${name}`, 'x')).rejects.toThrow(/escapes the repository/);
      await expect(repo.read(`../${name}`)).rejects.toThrow(/escapes the repository/);
      await expect(repo.stat(`../${name}`)).rejects.toThrow(/escapes the repository/);
      await expect(repo.delete(`../${name}`)).rejects.toThrow(/escapes the repository/);
      await expect(writeAll(repo, `a/../../${name}`, 'x')).rejects.toThrow(/escapes the repository/);
      expect(existsSync(outside)).toBe(false);
    });
  }

  if (driver === 's3') {
    it('refuses writes signed with wrong credentials', async () => {
      const server = s3Server!;
      const wrong = new S3Repository('wrong', s3Config(server), { K: server.accessKeyId, S: `${server.secretAccessKey}x` });
      await expect(writeAll(wrong, 'creds/x.txt', 'nope')).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
      expect(await repo.stat('creds/x.txt')).toBeUndefined();
    });

    it('refuses to be built without its credential variables, naming them', () => {
      const config = { ...s3Config(s3Server!), accessKeyIdEnv: 'PGRB_TEST_KEY_ID', secretAccessKeyEnv: 'PGRB_TEST_SECRET' };
      expect(() => new S3Repository('offsite', config, { PGRB_TEST_KEY_ID: 'id' })).toThrow(ConfigError);
      expect(() => new S3Repository('offsite', config, { PGRB_TEST_KEY_ID: 'id' })).toThrow(/repositories\.offsite: credentials missing: PGRB_TEST_SECRET not set/);
      expect(() => new S3Repository('offsite', config, {})).toThrow(/PGRB_TEST_KEY_ID and PGRB_TEST_SECRET/);
      expect(() => new S3Repository('offsite', config, { PGRB_TEST_KEY_ID: 'id', PGRB_TEST_SECRET: 'secret' })).not.toThrow();
    });
  }
});
