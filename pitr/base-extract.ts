import { chown, mkdir, rm } from 'node:fs/promises';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { ageDecrypter, DecryptionError } from '../encryption/age.js';
import type { RepositoryKeys } from '../encryption/keys.js';
import { failure } from '../postgres/errors.js';
import { asServerUser as serverUserCommand, postgresUid } from '../postgres/server-user.js';
import { finished, spawnTool, ToolError } from '../process/run.js';
import { ChecksumStream, digestStream } from '../repository/checksum-stream.js';
import type { Repository } from '../repository/types.js';
import { storedTarName } from './base-catalog.js';
import { baseBackupFolder } from './layout.js';
import type { BaseBackupManifest } from './manifest.js';

// A stored base backup back into a data directory: read, checksummed, decrypted, decompressed
// and untarred in one stream, no copy on disk. Used by verification (a scratch directory) and
// by point-in-time restores (the recovered cluster's data directory).

export interface ExtractRequest {
  repository: Repository;
  /** A full manifest does; verification passes the draft it is about to write. */
  manifest: Pick<BaseBackupManifest, 'id' | 'files' | 'compression' | 'encryption'>;
  keys: RepositoryKeys;
  dataDir: string;
  /** Extract as the server user (root workers): the files must belong to whoever runs postgres. */
  asServerUser: boolean;
  signal?: AbortSignal;
  /** Stored bytes read so far. */
  onBytes?: (bytes: number) => void;
}

/**
 * Streams the stored tar (sha256 of the stored bytes checked, decrypted, decompressed) into
 * `dataDir`, created 0700 (owned by the server user when `asServerUser`). Idempotent: whatever
 * a previous attempt left in `dataDir` is wiped first. A checksum mismatch or a corrupt stream
 * wipes `dataDir` again and throws a VerificationFailed failure.
 */
export async function extractBaseBackup(request: ExtractRequest): Promise<{ bytes: number }> {
  const { repository, manifest, dataDir } = request;
  const file = storedTarName(manifest);
  const expected = manifest.files[file]!;
  const key = `${baseBackupFolder(manifest.id)}${file}`;

  const identities = manifest.encryption ? request.keys.identities : null;
  if (manifest.encryption && !identities) {
    throw failure('DecryptionFailed', `base backup ${manifest.id} is encrypted (age) to ${manifest.encryption.recipients.join(', ')}; this worker holds no identity for repository ${repository.id}`, `set ${request.keys.identityField} (or identityEnv) on this worker to the age key of one of these recipients`);
  }

  await rm(dataDir, { recursive: true, force: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (request.asServerUser) {
    const { uid, gid } = postgresUid();
    await chown(dataDir, uid, gid);
  }

  let digest = '';
  const checksum = new ChecksumStream({
    onBytes: request.onBytes,
    // Compared before the stream ends, so tar never sees a clean end of a modified artifact.
    beforeEnd: async () => {
      digest = checksum.digest();
      if (digest !== expected.sha256) throw new ChecksumMismatch(key, expected.sha256, digest);
    },
  });
  const stages: Transform[] = [checksum];
  if (identities) stages.push(ageDecrypter(identities));
  if (manifest.compression === 'gzip') stages.push(createGunzip());
  if (manifest.compression === 'zstd') stages.push(createZstdDecompress());

  // --no-same-owner: the extracting user owns the files (root extracts as the server user).
  const [command, args] = serverUserCommand(request.asServerUser, 'tar', ['-x', '-f', '-', '-C', dataDir, '--no-same-owner']);
  const tar = spawnTool(command, args, { stdin: 'pipe', ...(request.signal ? { cancelSignal: request.signal } : {}) });
  const source: Readable = await repository.read(key, request.signal ? { signal: request.signal } : {});
  try {
    const [streamed, exited] = await Promise.allSettled([pipeline([source, ...stages, tar.stdin!], request.signal ? { signal: request.signal } : {}), finished('tar', tar)]);
    // tar's own failure (cannot write there) explains a broken pipe; otherwise the stream's
    // failure (checksum, decryption, repository) says more than tar's.
    const brokenPipe = streamed.status === 'rejected' && /EPIPE|ERR_STREAM_PREMATURE_CLOSE|ERR_STREAM_DESTROYED/.test(String((streamed.reason as NodeJS.ErrnoException).code));
    if (exited.status === 'rejected' && (brokenPipe || streamed.status === 'fulfilled')) throw exited.reason;
    if (streamed.status === 'rejected') throw streamed.reason;
  } catch (caught) {
    let error = caught;
    source.destroy();
    tar.kill('SIGTERM');
    await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    if (request.signal?.aborted) throw error;
    // Decryption, decompression or tar failed part-way: when the stored bytes differ from the
    // manifest's, that is the cause to report (a second read, on the failure path only).
    if (!(error instanceof ChecksumMismatch) && !(error instanceof DecryptionError && error.problem === 'no-matching-identity')) {
      const stored = await digestStream(await repository.read(key, request.signal ? { signal: request.signal } : {})).catch(() => undefined);
      if (stored && stored.sha256 !== expected.sha256) error = new ChecksumMismatch(key, expected.sha256, stored.sha256);
    }
    if (error instanceof ChecksumMismatch) {
      throw failure('VerificationFailed', `base backup ${manifest.id}: ${error.message}: the stored tar was modified or damaged`, 'use another base backup (`pgrunbook basebackups list`), and take a new one with `pgrunbook basebackup`');
    }
    if (error instanceof DecryptionError) {
      const hint = error.problem === 'no-matching-identity' ? `point ${request.keys.identityField} at the key of one of ${manifest.encryption!.recipients.join(', ')}` : 'use another base backup (`pgrunbook basebackups list`)';
      throw failure(error.problem === 'no-matching-identity' ? 'DecryptionFailed' : 'VerificationFailed', `base backup ${manifest.id} cannot be decrypted: ${error.message}`, hint);
    }
    if (error instanceof ToolError) throw failure('ToolFailed', `extracting base backup ${manifest.id} into ${dataDir}: ${error.message}`);
    if ((error as NodeJS.ErrnoException).code?.startsWith('Z_') || /zstd|incorrect header|unexpected end/i.test((error as Error).message)) {
      throw failure('VerificationFailed', `base backup ${manifest.id} does not decompress (${manifest.compression}): ${(error as Error).message}`, 'use another base backup (`pgrunbook basebackups list`)');
    }
    throw error;
  }
  return { bytes: checksum.bytes };
}

class ChecksumMismatch extends Error {
  constructor(key: string, expected: string, actual: string) {
    super(`sha256 of ${key} is ${actual}, its manifest says ${expected}`);
  }
}
