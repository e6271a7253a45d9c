import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Transform, type Readable } from 'node:stream';
import type { S3RepositoryConfig } from '../../config/schema.js';
import { ConfigError } from '../../config/errors.js';
import { registerSecret } from '../../process/secrets.js';
import type { ObjectInfo, Repository } from '../types.js';

/**
 * S3 (or S3-compatible) repository. Objects are written with multipart uploads that become
 * visible only on CompleteMultipartUpload (small ones with a single PUT); a failed or aborted
 * write aborts its upload. Memory per write is about partSize x queueSize.
 */
export class S3Repository implements Repository {
  /** S3's LastModified has whole seconds. */
  readonly modifiedResolutionMs = 1000;
  readonly location: string;
  private readonly client: S3Client;
  private readonly prefix: string;

  constructor(
    readonly id: string,
    private readonly config: S3RepositoryConfig,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const accessKeyId = env[config.accessKeyIdEnv];
    const secretAccessKey = env[config.secretAccessKeyEnv];
    if (!accessKeyId || !secretAccessKey) {
      const missing = [!accessKeyId && config.accessKeyIdEnv, !secretAccessKey && config.secretAccessKeyEnv].filter(Boolean).join(' and ');
      throw new ConfigError([{ path: `repositories.${id}`, message: `credentials missing: ${missing} not set`, hint: `export ${missing} in the worker's environment` }], 'configuration');
    }
    registerSecret(secretAccessKey);
    const sessionToken = config.sessionTokenEnv ? env[config.sessionTokenEnv] : undefined;
    registerSecret(sessionToken);
    this.client = new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: { accessKeyId, secretAccessKey, sessionToken },
      // Checksums are ours (sha256 in the manifest); S3-compatible servers vary in support for
      // the SDK's default flexible checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    this.prefix = config.prefix ? config.prefix.replace(/\/+$/, '') + '/' : '';
    this.location = `s3://${config.bucket}/${this.prefix}`;
  }

  private objectKey(key: string): string {
    return this.prefix + key;
  }

  async write(key: string, body: Readable, options: { signal?: AbortSignal } = {}): Promise<{ size: number }> {
    // Count bytes on the way through; a 'data' listener on `body` itself would start it flowing
    // before the uploader reads, and chunks could be lost.
    let size = 0;
    const counted = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        callback(null, chunk);
      },
    });
    body.once('error', (error) => counted.destroy(error));
    body.pipe(counted);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.config.bucket, Key: this.objectKey(key), Body: counted },
      partSize: this.config.partSizeMiB * 1024 * 1024,
      queueSize: this.config.queueSize,
      // On any error the multipart upload is aborted: nothing partial stays behind.
      leavePartsOnError: false,
    });
    const onAbort = (): void => void upload.abort().catch(() => undefined);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    // Errors of the body (e.g. pg_dump failed) must fail the upload, not complete it short.
    const bodyFailed = new Promise<never>((_, reject) => counted.once('error', reject));
    bodyFailed.catch(() => undefined);
    try {
      if (options.signal?.aborted) throw options.signal.reason;
      await Promise.race([upload.done(), bodyFailed]);
      return { size };
    } catch (error) {
      counted.destroy();
      await upload.abort().catch(() => undefined);
      await this.removeIncompleteWrites(key).catch(() => undefined);
      throw error;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async read(key: string, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    const response = await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: this.objectKey(key) }), { abortSignal: options.signal });
    if (!response.Body) throw new Error(`empty response for s3://${this.config.bucket}/${this.objectKey(key)}`);
    return response.Body as Readable;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: this.objectKey(key) }));
      return { key, size: head.ContentLength ?? 0, modified: head.LastModified ?? new Date(0) };
    } catch (error) {
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || (error as Error).name === 'NotFound' || (error as Error).name === 'NoSuchKey') return undefined;
      throw error;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: this.objectKey(prefix), ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        if (!object.Key || object.Key.endsWith('/')) continue;
        out.push({ key: object.Key.slice(this.prefix.length), size: object.Size ?? 0, modified: object.LastModified ?? new Date(0) });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.objectKey(key) }));
  }

  async listIncompleteWrites(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.config.bucket, Prefix: this.objectKey(prefix), KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key) continue;
        out.push({ key: upload.Key.slice(this.prefix.length), size: 0, modified: upload.Initiated ?? new Date(0) });
      }
      [keyMarker, uploadIdMarker] = page.IsTruncated ? [page.NextKeyMarker, page.NextUploadIdMarker] : [undefined, undefined];
    } while (keyMarker);
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async removeIncompleteWrites(key: string): Promise<number> {
    const objectKey = this.objectKey(key);
    const page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.config.bucket, Prefix: objectKey }));
    const mine = (page.Uploads ?? []).filter((u) => u.Key === objectKey && u.UploadId);
    for (const upload of mine) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.config.bucket, Key: objectKey, UploadId: upload.UploadId }));
    }
    return mine.length;
  }
}

