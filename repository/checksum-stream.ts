import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Pass-through that computes sha256 and size of what flows through it.
 *
 * `beforeEnd` gates the end of the stream: the stream ends only if it resolves, and errors if it
 * rejects. The dump uses it to wait for pg_dump's exit status, so a pg_dump that dies mid-way
 * makes the repository write fail (and abort) instead of publishing a truncated artifact.
 */
export class ChecksumStream extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly options: { beforeEnd?: () => Promise<void>; onBytes?: (bytes: number) => void } = {}) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.options.onBytes?.(this.bytes);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (!this.options.beforeEnd) return callback();
    this.options.beforeEnd().then(() => callback(), (error: Error) => callback(error));
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** sha256 and size of everything a stream yields. */
export async function digestStream(stream: AsyncIterable<unknown>): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** sha256 of a file, read in 1 MiB chunks. */
export async function sha256OfFile(path: string, signal?: AbortSignal): Promise<string> {
  return (await digestStream(createReadStream(path, { highWaterMark: 1 << 20, signal }))).sha256;
}
