import type { Readable } from 'node:stream';

/**
 * A file a tool writes directly (pg_dump --file), invisible until published. Only drivers backed
 * by a filesystem offer it; tools then write at disk speed with no pipe in between, and archives
 * get their seek offsets (pg_restore -j needs them).
 */
export interface FileWrite {
  /** Where the tool writes; not listed, not visible under the key. */
  readonly path: string;
  /** fsync, atomically rename into place, fsync the directory. */
  publish(): Promise<{ size: number }>;
  /** Removes the unpublished file; idempotent. */
  discard(): Promise<void>;
}

export interface ObjectInfo {
  key: string;
  size: number;
  modified: Date;
}

/**
 * A place backups live: a local directory or an S3 bucket/prefix. Keys are slash-separated,
 * relative to the repository root.
 *
 * Invariant: a key becomes visible only once its content is complete. A write that fails or is
 * aborted leaves nothing visible under the key.
 */
export interface Repository {
  readonly id: string;
  /** Human-readable location: an absolute path or s3://bucket/prefix. */
  readonly location: string;
  /**
   * How coarse ObjectInfo.modified is, in milliseconds (S3 keeps LastModified in whole
   * seconds, truncated); absent: exact enough to order events a millisecond apart.
   */
  readonly modifiedResolutionMs?: number;
  /** Streams `body` to `key`, publishing it atomically when `body` ends without error. */
  write(key: string, body: Readable, options?: { signal?: AbortSignal }): Promise<{ size: number }>;
  read(key: string, options?: { signal?: AbortSignal }): Promise<Readable>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Complete objects whose key starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Idempotent: deleting a missing key succeeds. A folder left empty goes too (S3 has none). */
  delete(key: string): Promise<void>;
  /** Removes incomplete writes to `key` left by a crashed or killed writer; returns how many. */
  removeIncompleteWrites(key: string): Promise<number>;
  /**
   * Incomplete writes under `prefix` (temp files, multipart uploads): the key each would publish,
   * and when it was started. In progress or orphaned by a writer that died; never listed by list().
   */
  listIncompleteWrites(prefix: string): Promise<ObjectInfo[]>;
  /** Present where a tool can write the object as a local file (see FileWrite). */
  openFileWrite?(key: string): Promise<FileWrite>;
  /**
   * Present where a stored object already is a local, seekable file (pg_restore -j reads it in
   * place); others are downloaded first.
   */
  localFile?(key: string): Promise<string | undefined>;
}

export async function readAll(repository: Repository, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await repository.read(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function writeAll(repository: Repository, key: string, content: string | Buffer): Promise<{ size: number }> {
  const { Readable } = await import('node:stream');
  return repository.write(key, Readable.from([typeof content === 'string' ? Buffer.from(content) : content]));
}
