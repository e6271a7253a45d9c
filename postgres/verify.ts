import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { decryptStream, DecryptionError } from '../encryption/age.js';
import type { DumpFormat } from '../repository/layout.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { Verification } from '../repository/manifest.js';
import type { Repository } from '../repository/types.js';
import { scrubSecrets } from '../process/secrets.js';

export interface VerifyRequest {
  repository: Repository;
  key: string;
  format: DumpFormat;
  expected: { size: number; sha256: string };
  pgRestore: string;
  /**
   * An encrypted (age) artifact: decrypted in-stream with these identities before the tools read
   * it; with none (null), only the stored bytes' sha256 and size are checked, and `note` says why.
   */
  encryption?: { identities: string[] | null; note?: string };
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

const DUMP_COMPLETE = '-- PostgreSQL database dump complete';

/**
 * Re-reads the stored artifact once, end to end: its sha256 and size must match what was
 * written, and it must be readable by the stock tools: `pg_restore -l` lists a custom archive's
 * table of contents; a plain dump must gunzip cleanly and end with pg_dump's completion marker.
 */
export async function verifyArtifact(request: VerifyRequest): Promise<Verification> {
  const checkedAt = new Date().toISOString();
  const checksum = new ChecksumStream({ onBytes: request.onBytes });
  let tocEntries: number | null = null;
  let completeMarker: boolean | null = null;
  let readerError: string | undefined;
  let decrypted: boolean | undefined;
  try {
    const source = await request.repository.read(request.key, { signal: request.signal });
    // pipe() does not forward errors: a failing read must fail the verification, not stall it.
    source.once('error', (error) => checksum.destroy(error));
    source.pipe(checksum);
    // The sha256 is over the stored bytes (ciphertext when encrypted): checkable without the key.
    let archive: Readable = checksum;
    if (request.encryption && !request.encryption.identities) {
      decrypted = false;
      await drain(checksum);
    } else {
      if (request.encryption?.identities) {
        decrypted = true;
        archive = await decryptStream(checksum, request.encryption.identities);
      }
      if (request.format === 'custom') {
        const listing = await listArchive(archive, request.pgRestore, request.signal);
        tocEntries = listing.entries;
        readerError = listing.error;
      } else {
        completeMarker = await endsWithCompleteMarker(archive);
        if (!completeMarker) readerError = 'the SQL dump does not end with pg_dump\'s completion marker (truncated?)';
      }
    }
  } catch (error) {
    readerError = scrubSecrets((error as Error).message);
    if (error instanceof DecryptionError) readerError = `decryption failed: ${readerError}`;
    // The sha256 still covers every stored byte: what changed shows in it too.
    if (!checksum.destroyed) await drain(checksum).catch(() => undefined);
  }
  const sha256 = checksum.digest();
  const sha256Matches = sha256 === request.expected.sha256;
  const sizeMatches = checksum.bytes === request.expected.size;
  const problems = [
    !sizeMatches && `size ${checksum.bytes} differs from the ${request.expected.size} bytes written`,
    !sha256Matches && `sha256 ${sha256} differs from ${request.expected.sha256} computed while writing`,
    readerError,
  ].filter(Boolean);
  return {
    ok: problems.length === 0,
    checkedAt,
    sha256Matches,
    sizeMatches,
    sha256,
    size: checksum.bytes,
    tocEntries,
    completeMarker,
    ...(decrypted !== undefined ? { decrypted } : {}),
    ...(decrypted === false && request.encryption?.note ? { note: request.encryption.note } : {}),
    ...(problems.length > 0 ? { error: problems.join('; ') } : {}),
  };
}

/** Reads a stream to its end (the checksum sees every byte), discarding what it yields. */
async function drain(stream: Readable): Promise<void> {
  stream.resume();
  if (stream.readableEnded) return;
  await new Promise<void>((resolve, reject) => {
    stream.once('end', resolve).once('error', reject).once('close', resolve);
  });
}

/**
 * Feeds the stream to `pg_restore -l` on stdin while draining it all for the checksum:
 * pg_restore stops reading after the table of contents (its stdin then closes, EPIPE), but the
 * hash must see every byte.
 */
async function listArchive(stream: Readable, pgRestore: string, signal?: AbortSignal): Promise<{ entries: number | null; error?: string }> {
  const child = spawn(pgRestore, ['-l'], { stdio: ['pipe', 'pipe', 'pipe'], signal });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => stdout.push(c));
  child.stderr.on('data', (c: Buffer) => stderr.push(c));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  // Cancelled (signal aborted) while the archive is still being fed: the rejection is awaited
  // below, but it arrives before that; unhandled meanwhile, it would bring the worker down.
  exited.catch(() => undefined);
  let stdinOpen = true;
  const closed = (): void => {
    stdinOpen = false;
  };
  child.stdin.on('error', closed);
  child.stdin.on('close', closed);
  for await (const chunk of stream) {
    if (stdinOpen && !child.stdin.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          child.stdin.off('drain', done).off('close', done).off('error', done);
          resolve();
        };
        child.stdin.on('drain', done).on('close', done).on('error', done);
      });
    }
  }
  if (stdinOpen) child.stdin.end();
  const code = await exited;
  if (code !== 0) {
    const message = Buffer.concat(stderr).toString('utf8').trim().split('\n').slice(-3).join(' ');
    return { entries: null, error: `pg_restore -l failed: ${scrubSecrets(message || `exit code ${code}`)}` };
  }
  const entries = Buffer.concat(stdout).toString('utf8').split('\n').filter((line) => line.trim() && !line.startsWith(';')).length;
  return { entries };
}

async function endsWithCompleteMarker(stream: Readable): Promise<boolean> {
  const gunzip = createGunzip();
  stream.once('error', (error) => gunzip.destroy(error));
  stream.pipe(gunzip);
  let tail = '';
  for await (const chunk of gunzip) tail = (tail + (chunk as Buffer).toString('utf8')).slice(-512);
  return tail.includes(DUMP_COMPLETE);
}
