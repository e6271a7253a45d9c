import { stat } from 'node:fs/promises';
import type { Readable, Transform } from 'node:stream';
import { createGzip } from 'node:zlib';
import pg from 'pg';
import { ageEncrypter } from '../encryption/age.js';
import type { DumpFormat } from '../repository/layout.js';
import { ChecksumStream, sha256OfFile } from '../repository/checksum-stream.js';
import type { FileWrite, Repository } from '../repository/types.js';
import { finished, spawnTool } from '../process/run.js';
import { findOnPath } from '../stack/binaries.js';
import { countRows, excludeTables, listTables, probeSchemaVersion, type SchemaVersion } from './catalog.js';
import { libpqEnv, pgClientConfig, type ConnectionParams } from './connection.js';
import { failure } from './errors.js';
import type { ClientTools } from './tools.js';

export interface DumpRequest {
  params: ConnectionParams;
  tools: ClientTools;
  repository: Repository;
  key: string;
  format: DumpFormat;
  /** none | gzip[:N] | zstd[:N] | lz4[:N] */
  compression: string;
  excludeSchemas: string[];
  excludeTables: string[];
  rowCounts: boolean;
  schemaVersionQuery?: string;
  /** age recipients: the stored artifact is encrypted to them as it streams. */
  encryptTo?: string[];
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

export interface DumpOutcome {
  size: number;
  sha256: string;
  rowCounts: Record<string, number> | null;
  schemaVersion: SchemaVersion;
}

/** pg_dump's compression arguments; zstd and lz4 exist from pg_dump 16 on. */
export function compressionArgs(format: DumpFormat, compression: string, pgDumpMajor: number): string[] {
  // Plain dumps are gzipped by pgrunbook itself (seed 001/004's `| gzip`), so pg_dump writes SQL.
  if (format === 'plain') return [];
  const [method, level] = compression.split(':') as [string, string | undefined];
  if (method === 'none') return ['-Z0'];
  if (method === 'gzip') return pgDumpMajor >= 16 ? [`--compress=gzip:${level ?? 6}`] : [`-Z${level ?? 6}`];
  if (pgDumpMajor < 16) {
    throw failure('VersionIncompatible', `compression ${compression} needs pg_dump 16 or newer; this worker's pg_dump is ${pgDumpMajor}`, 'use compression: gzip:6, or install PostgreSQL 16+ client tools on the worker');
  }
  return [`--compress=${method}${level ? `:${level}` : ''}`];
}

export function gzipLevel(compression: string): number {
  const [method, level] = compression.split(':');
  return method === 'none' ? 0 : Number(level ?? 6);
}

/**
 * Streams pg_dump straight into the repository, computing sha256 and size on the way; no local
 * copy. Row counts and the schema version are read in the very snapshot pg_dump dumps (exported
 * by a REPEATABLE READ transaction and handed over with --snapshot), so they describe exactly
 * the dumped data even while the application keeps writing.
 */
export async function dumpToRepository(request: DumpRequest): Promise<DumpOutcome> {
  const { params, tools, repository, key, format } = request;
  const client = new pg.Client(pgClientConfig(params));
  await client.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const { rows } = await client.query<{ snapshot: string }>('SELECT pg_export_snapshot() AS snapshot');
    const snapshot = rows[0]!.snapshot;

    const args = [
      `--format=${format === 'custom' ? 'custom' : 'plain'}`,
      ...compressionArgs(format, request.compression, tools.major),
      `--snapshot=${snapshot}`,
      '--no-password',
      ...(format === 'plain' ? ['--clean', '--if-exists'] : []),
      ...request.excludeSchemas.map((s) => `--exclude-schema=${s}`),
      ...request.excludeTables.map((t) => `--exclude-table=${t}`),
    ];
    // A filesystem repository lets pg_dump write the artifact itself: no pipe between pg_dump
    // and the worker (on 2 cores that pipe alone slowed pg_dump by 15-25%), and the archive keeps
    // its data offsets, which parallel pg_restore -j needs. Otherwise stream through the worker;
    // always when encrypting: no plaintext file ever lands in the repository.
    const artifact = format === 'custom' && repository.openFileWrite && !request.encryptTo
      ? dumpIntoFile(request, args, await repository.openFileWrite(key))
      : dumpIntoStream(request, args);
    artifact.catch(() => undefined);

    const facts = (async () => {
      const rowCounts = request.rowCounts ? await countRows(client, excludeTables(await listTables(client), request)) : null;
      const schemaVersion = await probeSchemaVersion(client, request.schemaVersionQuery);
      return { rowCounts, schemaVersion };
    })();

    const [{ size, sha256 }, { rowCounts, schemaVersion }] = await Promise.all([artifact, facts]);
    await client.query('COMMIT');
    return { size, sha256, rowCounts, schemaVersion };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * pg_dump's output piped through the worker (gzip for plain SQL, age encryption when configured,
 * sha256 of what is stored) into the repository.
 */
async function dumpIntoStream(request: DumpRequest, args: string[]): Promise<{ size: number; sha256: string }> {
  const encrypter = request.encryptTo ? await ageEncrypter(request.encryptTo) : undefined;
  // Into a pipe, pg_dump's stdio writes 4-12 KiB at a time and every chunk costs the worker a
  // wake-up, a hash update and a write; a 1 MiB stdio buffer (stdbuf, where present) cuts the
  // worker's CPU per byte about threefold. stdbuf execs pg_dump, so signals reach pg_dump itself.
  const stdbuf = findOnPath('stdbuf');
  const [file, argv] = stdbuf ? [stdbuf, ['-o1M', request.tools.pgDump, ...args]] : [request.tools.pgDump, args];
  const child = spawnTool(file, argv, { env: libpqEnv(request.params), cancelSignal: request.signal });
  const checksum = new ChecksumStream({ beforeEnd: () => finished('pg_dump', child), onBytes: request.onBytes });
  const output: Readable = request.format === 'plain' ? child.stdout.pipe(createGzip({ level: gzipLevel(request.compression) })) : child.stdout;
  const size = await storeToolOutput(child, output, encrypter, checksum, request);
  return { size, sha256: checksum.digest() };
}

/**
 * Pipes a tool's output (through `encrypter`, when given) into `checksum` and writes that to the
 * repository; returns the stored size. A failing stage fails the write; a failed write (e.g. S3
 * down) kills the tool, so it does not linger.
 */
export async function storeToolOutput(
  child: { kill(signal: NodeJS.Signals): boolean },
  output: Readable,
  encrypter: Transform | undefined,
  checksum: ChecksumStream,
  target: { repository: Repository; key: string; signal?: AbortSignal },
): Promise<number> {
  if (encrypter) {
    // pipe() does not forward errors: an encryption failure must fail the write, not stall it.
    encrypter.once('error', (error) => checksum.destroy(error));
    output = output.pipe(encrypter);
  }
  output.pipe(checksum);
  try {
    const { size } = await target.repository.write(target.key, checksum, { signal: target.signal });
    return size;
  } catch (error) {
    child.kill('SIGTERM');
    throw error;
  }
}

/** pg_dump --file straight into the repository's unpublished file; hashed, then published. */
async function dumpIntoFile(request: DumpRequest, args: string[], file: FileWrite): Promise<{ size: number; sha256: string }> {
  try {
    const child = spawnTool(request.tools.pgDump, [...args, `--file=${file.path}`], { env: libpqEnv(request.params), cancelSignal: request.signal });
    const progress = setInterval(() => {
      stat(file.path).then((s) => request.onBytes?.(s.size), () => undefined);
    }, 1_000);
    try {
      await finished('pg_dump', child);
    } finally {
      clearInterval(progress);
    }
    // Read back while it is still in the page cache: the sha256 recorded is that of the bytes on disk.
    const sha256 = await sha256OfFile(file.path, request.signal);
    const { size } = await file.publish();
    return { size, sha256 };
  } catch (error) {
    await file.discard();
    throw error;
  }
}

/** Streams `pg_dump --schema-only` (seed 003's schema.sql) into the repository, encrypted when configured. */
export async function dumpSchemaToRepository(request: Pick<DumpRequest, 'params' | 'tools' | 'repository' | 'key' | 'signal' | 'encryptTo'>): Promise<{ size: number; sha256: string }> {
  const encrypter = request.encryptTo ? await ageEncrypter(request.encryptTo) : undefined;
  const child = spawnTool(request.tools.pgDump, ['--schema-only', '--no-password'], { env: libpqEnv(request.params), cancelSignal: request.signal });
  const checksum = new ChecksumStream({ beforeEnd: () => finished('pg_dump --schema-only', child) });
  if (encrypter) {
    encrypter.once('error', (error) => checksum.destroy(error));
    child.stdout.pipe(encrypter).pipe(checksum);
  } else {
    child.stdout.pipe(checksum);
  }
  const { size } = await request.repository.write(request.key, checksum, { signal: request.signal });
  return { size, sha256: checksum.digest() };
}
