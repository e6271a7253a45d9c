import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { finished, spawnTool } from '../process/run.js';
import { ageDecrypter, DecryptionError } from '../encryption/age.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { DumpFormat } from '../repository/layout.js';
import type { Repository } from '../repository/types.js';
import { libpqEnv, type ConnectionParams } from './connection.js';
import type { ClientTools } from './tools.js';

export interface RestoreArchiveRequest {
  params: ConnectionParams;
  /** The database restored into; it exists and is empty. */
  database: string;
  tools: ClientTools;
  repository: Repository;
  key: string;
  format: DumpFormat;
  /** What preflight verified; a stream that does not match fails the restore. */
  expected: { size: number; sha256: string };
  jobs: number;
  noOwner: boolean;
  noPrivileges: boolean;
  role?: string;
  tempDir: string;
  /** An encrypted (age) archive: decrypted in-stream with these identities. */
  identities?: string[];
  signal?: AbortSignal;
  onBytes?: (phase: RestorePhase, bytes: number) => void;
}

export type RestorePhase = 'download' | 'restore';

export interface RestoreArchiveResult {
  /** stream: repository -> pg_restore/psql stdin; file: pg_restore -j on the repository's own file; download: fetched first for -j. */
  method: 'stream' | 'file' | 'download';
  jobs: number;
  bytesRead: number;
}

/**
 * Restores one stored archive into an empty database with the stock tools:
 * - custom format, -j 1: streamed from the repository into `pg_restore` (no temp file);
 * - custom format, -j N: pg_restore needs a seekable file: the repository's own file when it has
 *   one (local), otherwise a download to `tempDir`, checked against the manifest's sha256 first
 *   (an encrypted archive is always downloaded, decrypted, into a file only the worker can read);
 * - plain SQL: gunzip into `psql -v ON_ERROR_STOP=1 --single-transaction`, so a failing statement
 *   stops the restore instead of leaving a half-restored database that looks fine.
 * The password reaches the tools through PGPASSWORD, never argv. The sha256 checked is always that
 * of the stored bytes (the ciphertext, when encrypted).
 */
export async function restoreArchive(request: RestoreArchiveRequest): Promise<RestoreArchiveResult> {
  if (request.format === 'plain') {
    return { method: 'stream', jobs: 1, bytesRead: await streamInto(request, request.tools.psql, psqlArgs(request), true) };
  }
  if (request.jobs <= 1) {
    return { method: 'stream', jobs: 1, bytesRead: await streamInto(request, request.tools.pgRestore, pgRestoreArgs(request, 1), false) };
  }
  const local = request.identities ? undefined : await request.repository.localFile?.(request.key);
  if (local) {
    await runToCompletion(request, request.tools.pgRestore, [...pgRestoreArgs(request, request.jobs), local]);
    return { method: 'file', jobs: request.jobs, bytesRead: request.expected.size };
  }
  await mkdir(request.tempDir, { recursive: true });
  const file = join(request.tempDir, `pgrunbook-restore-${randomBytes(6).toString('hex')}.dump`);
  try {
    const checksum = new ChecksumStream({ onBytes: (bytes) => request.onBytes?.('download', bytes) });
    const source = await request.repository.read(request.key, { signal: request.signal });
    const target = createWriteStream(file, { mode: 0o600 });
    if (request.identities) await pipeline(source, checksum, ageDecrypter(request.identities), target, { signal: request.signal });
    else await pipeline(source, checksum, target, { signal: request.signal });
    assertMatches(checksum, request.expected, request.key);
    request.onBytes?.('restore', 0); // the download is done; pg_restore starts
    await runToCompletion(request, request.tools.pgRestore, [...pgRestoreArgs(request, request.jobs), file]);
    return { method: 'download', jobs: request.jobs, bytesRead: checksum.bytes };
  } finally {
    await rm(file, { force: true });
  }
}

function pgRestoreArgs(request: RestoreArchiveRequest, jobs: number): string[] {
  const args = ['--dbname', request.database, '--no-password'];
  if (jobs > 1) args.push('--jobs', String(jobs));
  if (request.noOwner) args.push('--no-owner');
  if (request.noPrivileges) args.push('--no-privileges');
  if (request.role) args.push('--role', request.role);
  return args;
}

function psqlArgs(request: RestoreArchiveRequest): string[] {
  // -X: no ~/.psqlrc surprises. --single-transaction: all or nothing.
  const args = ['-X', '-q', '--no-password', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '--dbname', request.database, '-o', '/dev/null'];
  if (request.role) args.push('-c', `SET ROLE "${request.role.replace(/"/g, '""')}"`, '-f', '-');
  return args;
}

function toolEnv(request: RestoreArchiveRequest): Record<string, string> {
  return libpqEnv(request.params, request.database);
}

async function runToCompletion(request: RestoreArchiveRequest, tool: string, args: string[]): Promise<void> {
  const child = spawnTool(tool, args, { env: toolEnv(request), cancelSignal: request.signal });
  await finished(tool, child);
}

/** Streams the archive from the repository into the tool's stdin, hashing it on the way. */
async function streamInto(request: RestoreArchiveRequest, tool: string, args: string[], gunzip: boolean): Promise<number> {
  const child = spawnTool(tool, args, { env: toolEnv(request), cancelSignal: request.signal, stdin: 'pipe' });
  const checksum = new ChecksumStream({ onBytes: (bytes) => request.onBytes?.('restore', bytes) });
  const source = await request.repository.read(request.key, { signal: request.signal });
  const decrypter = request.identities ? ageDecrypter(request.identities) : undefined;
  let decryptionError: DecryptionError | undefined;
  // A chunk that fails authentication must not become an end of input the tool could take for a
  // complete archive (psql would commit what it had): the tool is killed before its stdin closes.
  decrypter?.once('error', (error) => {
    if (!(error instanceof DecryptionError)) return;
    decryptionError = error;
    child.kill('SIGKILL');
  });
  const stages: (Readable | Writable | NodeJS.ReadWriteStream)[] = [source, checksum, ...(decrypter ? [decrypter] : []), ...(gunzip ? [createGunzip()] : []), child.stdin!];
  // If the tool dies early its stdin closes (EPIPE): its own exit status is the error to report.
  const feeding = pipeline(stages as [Readable, ...Writable[]]).catch((error: NodeJS.ErrnoException) => error);
  try {
    await finished(tool, child);
  } catch (error) {
    throw decryptionError ?? error;
  }
  const feedError = await feeding;
  if (feedError) throw feedError;
  assertMatches(checksum, request.expected, request.key);
  return checksum.bytes;
}

function assertMatches(checksum: ChecksumStream, expected: { size: number; sha256: string }, key: string): void {
  const sha256 = checksum.digest();
  if (checksum.bytes !== expected.size || sha256 !== expected.sha256) {
    throw new ArchiveChangedError(`${key} changed since preflight: read ${checksum.bytes} bytes with sha256 ${sha256}, expected ${expected.size} bytes with sha256 ${expected.sha256}`);
  }
}

export class ArchiveChangedError extends Error {}
