import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createGzip, createZstdCompress, constants as zlib } from 'node:zlib';
import pg from 'pg';
import { ageEncrypter } from '../encryption/age.js';
import type { WalCompression } from '../pitr/layout.js';
import { finished, spawnTool } from '../process/run.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { Repository } from '../repository/types.js';
import { libpqEnv, pgClientConfig, type ConnectionParams } from './connection.js';
import { failure } from './errors.js';
import { serverVersionFacts } from './probe.js';
import { clientToolsFor } from './tools.js';

// pg_basebackup streamed into the repository: `-D - -Ft -X fetch` writes one tar holding the
// data directory, the WAL from the backup's start to its end (pg_wal/) and, from PostgreSQL 13
// on, backup_manifest (appended to the tar when writing to stdout). The tar is compressed and
// encrypted in the worker as it flows, and the sha256 recorded is that of the stored bytes.

/** pg_basebackup and pg_verifybackup of one installation (pg_verifybackup runs pg_waldump beside it). */
export interface BasebackupTools {
  dir: string;
  major: number;
  pgBasebackup: string;
  pgVerifybackup: string;
}

/**
 * The tools for a server of `serverMajor`: as for pg_dump, the oldest installed major that is
 * not older than the server (pg_basebackup refuses newer servers), or the configured directory.
 */
export async function basebackupToolsFor(serverMajor: number, configuredDir?: string): Promise<BasebackupTools> {
  const tools = await clientToolsFor(serverMajor, configuredDir);
  const pgBasebackup = join(tools.dir, 'pg_basebackup');
  const pgVerifybackup = join(tools.dir, 'pg_verifybackup');
  if (!existsSync(pgBasebackup) || !existsSync(pgVerifybackup)) {
    throw failure('VersionIncompatible', `${tools.dir} has no pg_basebackup or pg_verifybackup`, `install the PostgreSQL ${serverMajor} client tools (Debian: postgresql-client-${serverMajor}) or set pgBinDir`);
  }
  return { dir: tools.dir, major: tools.major, pgBasebackup, pgVerifybackup };
}

/** What the server says about itself: what the manifest records and what the backup needs. */
export interface ClusterFacts {
  serverVersion: string;
  serverVersionNum: number;
  serverMajor: number;
  systemIdentifier: string;
  segmentSize: number;
  /** Tablespaces besides pg_default and pg_global (pg_basebackup -D - holds one only). */
  extraTablespaces: string[];
  /** The role may take base backups (superuser or REPLICATION). */
  canReplicate: boolean;
}

export async function probeCluster(params: ConnectionParams): Promise<ClusterFacts> {
  const client = new pg.Client(pgClientConfig(params));
  await client.connect();
  try {
    const { rows } = await client.query<{ version: string; num: string; sysid: string; segment: string; replicate: boolean }>(
      `SELECT current_setting('server_version') AS version, current_setting('server_version_num') AS num,
              (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
              pg_size_bytes(current_setting('wal_segment_size'))::text AS segment,
              (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) AS replicate`,
    );
    const spaces = await client.query<{ spcname: string }>("SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname");
    const row = rows[0]!;
    return {
      ...serverVersionFacts(row.version, row.num),
      systemIdentifier: row.sysid,
      segmentSize: Number(row.segment),
      extraTablespaces: spaces.rows.map((r) => r.spcname),
      canReplicate: row.replicate === true,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** What pg_basebackup -v reports on stderr: where recovery starts, where the backup is consistent. */
export interface BasebackupLog {
  startLsn: string;
  stopLsn: string;
  timeline: number;
}

/**
 * Parses pg_basebackup -v's "write-ahead log start point: 0/2000028 on timeline 1" and
 * "write-ahead log end point: 0/2000100". The end point has no timeline of its own: -X fetch
 * backs up one timeline (a promotion during the backup fails it).
 */
export function parseBasebackupLog(stderr: string): BasebackupLog {
  const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/.exec(stderr);
  const stop = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(stderr);
  if (!start || !stop) throw new Error(`pg_basebackup did not report its write-ahead log start and end points (is -v missing?): ${stderr.trim().split('\n').slice(-4).join(' | ')}`);
  return { startLsn: start[1]!, stopLsn: stop[1]!, timeline: Number(start[2]) };
}

/** `none` | `gzip[:n]` | `zstd[:n]` from clusters.<id>.basebackup.compression. */
export function parseCompression(text: string): { method: WalCompression; level: number | null } {
  const [method, level] = text.split(':') as [WalCompression, string | undefined];
  return { method, level: level === undefined ? null : Number(level) };
}

/** A node:zlib compressor whose output the stock gzip/zstd CLIs decompress, or null for none. */
export function compressorFor(compression: string): Transform | null {
  const { method, level } = parseCompression(compression);
  if (method === 'gzip') return createGzip({ level: level ?? 6 });
  if (method === 'zstd') return createZstdCompress({ params: { [zlib.ZSTD_c_compressionLevel]: level ?? 3 } });
  return null;
}

export interface BasebackupRequest {
  params: ConnectionParams;
  tools: BasebackupTools;
  repository: Repository;
  key: string;
  compression: string;
  checkpoint: 'fast' | 'spread';
  maxRate?: string;
  /** age recipients: the stored tar is encrypted to them as it streams. */
  encryptTo?: string[];
  signal?: AbortSignal;
  /** Bytes of tar pg_basebackup has written so far. */
  onBytes?: (bytes: number) => void;
}

export interface BasebackupOutcome extends BasebackupLog {
  /** Stored bytes (compressed, encrypted) and their sha256. */
  size: number;
  sha256: string;
  /** Bytes of the tar as pg_basebackup wrote it. */
  tarSize: number;
}

/**
 * Runs pg_basebackup and streams its tar through compression, encryption and a checksum into
 * the repository. The write is published only once pg_basebackup exited 0 (ChecksumStream's
 * gate), so a failed or killed backup leaves no object, only an incomplete write to clean up.
 */
export async function basebackupToRepository(request: BasebackupRequest): Promise<BasebackupOutcome> {
  const args = [
    '-D', '-', '-Ft', '-X', 'fetch',
    `--checkpoint=${request.checkpoint}`,
    '--manifest-checksums=SHA256',
    '--no-password',
    '-v',
    ...(request.maxRate ? [`--max-rate=${request.maxRate}`] : []),
  ];
  const encrypter = request.encryptTo ? await ageEncrypter(request.encryptTo) : undefined;
  // The password travels in PGPASSWORD (libpqEnv), never in argv.
  const child = spawnTool(request.tools.pgBasebackup, args, { env: libpqEnv(request.params), cancelSignal: request.signal });
  const tar = new ByteCounter(request.onBytes);
  const checksum = new ChecksumStream({ beforeEnd: () => finished('pg_basebackup', child) });
  const stages: Transform[] = [tar];
  const compressor = compressorFor(request.compression);
  if (compressor) stages.push(compressor);
  if (encrypter) stages.push(encrypter);
  // pipe() does not forward errors: any stage failing must fail the write, not stall it.
  let stream: Readable = child.stdout;
  for (const stage of stages) {
    stage.once('error', (error) => checksum.destroy(error));
    stream = stream.pipe(stage);
  }
  stream.pipe(checksum);
  let size: number;
  try {
    ({ size } = await request.repository.write(request.key, checksum, { signal: request.signal }));
  } catch (error) {
    // If the repository write fails first (e.g. S3 down), pg_basebackup must not linger.
    child.kill('SIGTERM');
    throw error;
  }
  const result = await child;
  return { size, sha256: checksum.digest(), tarSize: tar.bytes, ...parseBasebackupLog(typeof result.stderr === 'string' ? result.stderr : '') };
}

/** Counts the bytes flowing through (the uncompressed tar) and reports them. */
class ByteCounter extends Transform {
  bytes = 0;

  constructor(private readonly onBytes?: (bytes: number) => void) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    callback(null, chunk);
  }
}
