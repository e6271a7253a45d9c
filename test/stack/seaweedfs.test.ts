import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scrubSecrets } from '../../process/secrets.js';
import { startS3Server, type S3Server } from '../../stack/seaweedfs.js';

function clientFor(server: S3Server, secretAccessKey = server.secretAccessKey): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey },
    maxAttempts: 1,
  });
}

async function getBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await response.Body!.transformToByteArray());
}

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

describe('startS3Server', { timeout: 120_000 }, () => {
  let server: S3Server;
  let s3: S3Client;

  beforeAll(async () => {
    server = await startS3Server();
    s3 = clientFor(server);
  }, 90_000);

  afterAll(async () => {
    s3?.destroy();
    await server?.stop();
  });

  it('serves S3 on loopback with per-start credentials and the default bucket', () => {
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.region).toBe('us-east-1');
    expect(server.bucket).toBe('pgrunbook-test');
    expect(existsSync(server.dataDir)).toBe(true);
    // The secret is registered, so it can never reach a log or an error message.
    expect(scrubSecrets(`key ${server.secretAccessKey}`)).toBe('key ***');
  });

  it('round-trips an object', async () => {
    const body = randomBytes(64 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'dir/small.bin', Body: body }));
    expect((await getBytes(s3, server.bucket, 'dir/small.bin')).equals(body)).toBe(true);
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: 'dir/' }));
    expect(listed.Contents?.map((o) => [o.Key, o.Size])).toEqual([['dir/small.bin', body.length]]);
  });

  it('stores a multipart upload (lib-storage Upload) byte for byte', async () => {
    const body = randomBytes(12 * 1024 * 1024 + 12_345);
    const upload = new Upload({ client: s3, params: { Bucket: server.bucket, Key: 'big.bin', Body: body }, partSize: 5 * 1024 * 1024, queueSize: 2 });
    const result = await upload.done();
    // A multipart ETag is md5-of-part-md5s followed by "-<part count>".
    expect(result.ETag).toMatch(/-3"?$/);
    const back = await getBytes(s3, server.bucket, 'big.bin');
    expect(back.length).toBe(body.length);
    expect(sha256(back)).toBe(sha256(body));
  });

  it('aborts a multipart upload without leaving an object or an upload behind', async () => {
    const Bucket = server.bucket;
    const Key = 'aborted.bin';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }));
    expect(UploadId).toBeTruthy();
    await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(5 * 1024 * 1024) }));

    const during = await s3.send(new ListMultipartUploadsCommand({ Bucket }));
    expect(during.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([[Key, UploadId]]);

    await s3.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
    const after = await s3.send(new ListMultipartUploadsCommand({ Bucket }));
    expect(after.Uploads ?? []).toEqual([]);
    await expect(s3.send(new HeadObjectCommand({ Bucket, Key }))).rejects.toMatchObject({ name: 'NotFound' });
  });

  it('rejects a request signed with the wrong secret, and an unsigned one', async () => {
    const wrong = clientFor(server, `${server.secretAccessKey.slice(0, -1)}${server.secretAccessKey.endsWith('x') ? 'y' : 'x'}`);
    try {
      await expect(wrong.send(new ListObjectsV2Command({ Bucket: server.bucket }))).rejects.toMatchObject({
        name: 'SignatureDoesNotMatch',
        $metadata: { httpStatusCode: 403 },
      });
    } finally {
      wrong.destroy();
    }
    const anonymous = await fetch(`${server.endpoint}/${server.bucket}/dir/small.bin`);
    expect(anonymous.status).toBe(403);
  });

  it('creates further buckets on request', async () => {
    await server.createBucket('second-bucket');
    await s3.send(new PutObjectCommand({ Bucket: 'second-bucket', Key: 'k', Body: 'v' }));
    expect((await getBytes(s3, 'second-bucket', 'k')).toString()).toBe('v');
  });
});

describe('several servers', { timeout: 120_000 }, () => {
  it('run side by side, isolated from each other', async () => {
    const [a, b] = await Promise.all([startS3Server({ bucket: 'bucket-a' }), startS3Server({ bucket: 'bucket-b' })]);
    const clientA = clientFor(a);
    const clientB = clientFor(b);
    try {
      expect(a.endpoint).not.toBe(b.endpoint);
      expect(a.dataDir).not.toBe(b.dataDir);
      expect(a.secretAccessKey).not.toBe(b.secretAccessKey);
      await clientA.send(new PutObjectCommand({ Bucket: 'bucket-a', Key: 'k', Body: 'from a' }));
      await clientB.send(new PutObjectCommand({ Bucket: 'bucket-b', Key: 'k', Body: 'from b' }));
      expect((await getBytes(clientA, 'bucket-a', 'k')).toString()).toBe('from a');
      expect((await getBytes(clientB, 'bucket-b', 'k')).toString()).toBe('from b');
      // B does not know A's credentials.
      const aOnB = new S3Client({ endpoint: b.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey }, maxAttempts: 1 });
      await expect(aOnB.send(new ListObjectsV2Command({ Bucket: 'bucket-b' }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
      aOnB.destroy();
    } finally {
      clientA.destroy();
      clientB.destroy();
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('stop() removes the data directory, frees the port and is idempotent', async () => {
    const server = await startS3Server();
    const port = Number(new URL(server.endpoint).port);
    expect(await portIsFree(port)).toBe(false);
    await Promise.all([server.stop(), server.stop()]);
    await server.stop();
    expect(existsSync(server.dataDir)).toBe(false);
    expect(await portIsFree(port)).toBe(true);
  });
});
