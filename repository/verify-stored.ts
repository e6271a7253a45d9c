import type { RepositoryKeys } from '../encryption/keys.js';
import { verifyArtifact, type VerifyRequest } from '../postgres/verify.js';
import { digestStream } from './checksum-stream.js';
import { ARTIFACT, artifactKey } from './layout.js';
import { readManifest } from './catalog.js';
import type { Manifest, Verification } from './manifest.js';
import type { Repository } from './types.js';

export interface StoredBackupCheck {
  backupId: string;
  repository: string;
  ok: boolean;
  status: string;
  dump: Verification | null;
  /** Metadata files whose sha256 or size no longer match the manifest. */
  badFiles: string[];
  problems: string[];
  /** The manifest checked against; absent when the backup is missing or incomplete. */
  manifest?: Manifest;
}

/**
 * `pgrunbook backups verify`: re-checks a stored backup against its manifest: the dump's sha256,
 * size and `pg_restore -l`, and every metadata file's sha256. An encrypted dump is decrypted
 * in-stream with the identities in `keys`; with none configured, its stored bytes' sha256 and
 * size are checked only (and the result says so); with ones that do not match, it fails.
 */
export async function verifyStoredBackup(repository: Repository, backupId: string, pgRestore: string, onBytes?: (bytes: number) => void, keys?: RepositoryKeys): Promise<StoredBackupCheck> {
  const base = { backupId, repository: repository.id };
  if (!(await repository.stat(artifactKey(backupId, ARTIFACT.manifest)))) {
    const anything = (await repository.list(`${backupId}/`)).length > 0;
    const problem = anything ? 'no manifest: the backup is incomplete (still running, or its writer died)' : `no backup ${backupId} in ${repository.location}`;
    return { ...base, ok: false, status: anything ? 'incomplete' : 'missing', dump: null, badFiles: [], problems: [problem] };
  }
  const manifest = await readManifest(repository, backupId);
  const problems: string[] = [];
  if (manifest.status !== 'verified') problems.push(`the backup is recorded as ${manifest.status}${manifest.error ? `: ${manifest.error.message}` : ''}`);
  let dump: Verification | null = null;
  if (manifest.dump && manifest.format) {
    const encryption = decryptionFor(manifest, keys);
    if (typeof encryption === 'string') {
      problems.push(`${manifest.dump.file}: ${encryption}`);
    } else {
      dump = await verifyArtifact({ repository, key: artifactKey(backupId, manifest.dump.file), format: manifest.format, expected: manifest.dump, pgRestore, onBytes, ...(encryption ? { encryption } : {}) });
      if (!dump.ok) problems.push(`${manifest.dump.file}: ${dump.error ?? 'verification failed'}`);
    }
  }
  const badFiles: string[] = [];
  for (const [name, expected] of Object.entries(manifest.files)) {
    if (name === manifest.dump?.file) continue;
    let actual: { sha256: string; size: number };
    try {
      actual = await digestStream(await repository.read(artifactKey(backupId, name)));
    } catch (error) {
      badFiles.push(name);
      problems.push(`${name}: ${(error as Error).message}`);
      continue;
    }
    if (actual.size !== expected.size || actual.sha256 !== expected.sha256) {
      badFiles.push(name);
      problems.push(`${name}: content differs from the manifest`);
    }
  }
  return { ...base, ok: problems.length === 0, status: manifest.status, dump, badFiles, problems, manifest };
}

/** How to read an encrypted dump with these keys: identities, checksum only, or why it cannot be read. */
function decryptionFor(manifest: Manifest, keys: RepositoryKeys | undefined): VerifyRequest['encryption'] | string {
  const recipients = manifest.encryption?.recipients;
  if (!recipients) return undefined;
  if (!keys?.identities) {
    return { identities: null, note: `encrypted (age) to ${recipients.join(', ')}; no identity configured here (${keys?.identityField ?? `repositories.${manifest.repository}.encryption.identityFile`}): sha256 and size of the stored bytes checked only, not pg_restore -l` };
  }
  if (!keys.identityRecipients.some((recipient) => recipients.includes(recipient))) {
    return `cannot decrypt: encrypted (age) to ${recipients.join(', ')}; the identity in ${keys.identityField} is for ${keys.identityRecipients.join(', ')}`;
  }
  return { identities: keys.identities };
}
