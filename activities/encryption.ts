import { ConfigError } from '../config/errors.js';
import { AGE_SUFFIX, decryptStream, DecryptionError } from '../encryption/age.js';
import { resolveRepositoryKeys, type RepositoryKeys } from '../encryption/keys.js';
import { failure } from '../postgres/errors.js';
import type { VerifyRequest } from '../postgres/verify.js';
import { artifactKey } from '../repository/layout.js';
import type { ArchiveEncryption } from '../repository/manifest.js';
import type { Repository } from '../repository/types.js';
import type { ActivityDeps } from './support.js';

/** A stored archive as plans carry it: which backup, where, and whether (to whom) it is encrypted. */
export interface ArchiveRef {
  backupId: string;
  repository: string;
  dumpFile: string;
  /** Absent or null: stored in the clear (also every plan made before encryption existed). */
  encryption?: ArchiveEncryption | null;
}

/** The name an artifact is stored under: `.age` appended when encrypted (db_full.dump.age). */
export const storedName = (name: string, encryption: ArchiveEncryption | null | undefined): string => (encryption ? `${name}${AGE_SUFFIX}` : name);

const list = (recipients: string[]): string => recipients.join(', ');

/**
 * The worker's side of backup encryption: recipients for new backups, identities for restores,
 * drills and verification, all from its config, files and environment. Keys never leave here;
 * plans and manifests carry recipients (public keys) only.
 */
export function createEncryptionSupport(deps: ActivityDeps) {
  const env = deps.env ?? process.env;

  async function keysOf(repositoryId: string): Promise<RepositoryKeys> {
    const spec = deps.config.repositories[repositoryId];
    if (!spec) throw failure('ConfigError', `unknown repository "${repositoryId}"`, `repositories in the worker's config: ${Object.keys(deps.config.repositories).join(', ')}`);
    try {
      return await resolveRepositoryKeys(repositoryId, spec, env);
    } catch (error) {
      if (error instanceof ConfigError) throw failure('ConfigError', error.message);
      throw error;
    }
  }

  /** How a new backup into this repository is encrypted; null: it is not. */
  async function encryptionFor(repositoryId: string): Promise<ArchiveEncryption | null> {
    const keys = await keysOf(repositoryId);
    return keys.encryptTo ? { format: 'age', recipients: keys.encryptTo } : null;
  }

  /**
   * The identities that decrypt an archive, or undefined when it is stored in the clear. A worker
   * without one that matches the archive's recipients gets a DecryptionFailed failure (not
   * retryable: a person must give it the key) that names the recipients and the config field.
   */
  async function identitiesFor(archive: ArchiveRef): Promise<string[] | undefined> {
    if (!archive.encryption) return undefined;
    const keys = await keysOf(archive.repository);
    const needed = archive.encryption.recipients;
    if (!keys.identities) {
      throw failure(
        'DecryptionFailed',
        `backup ${archive.backupId} is encrypted (age) to ${list(needed)}; this worker holds no identity for repository ${archive.repository}, so it cannot decrypt it; nothing was changed`,
        `set ${keys.identityField} (or identityEnv) on this worker to the age key of one of these recipients`,
      );
    }
    if (!keys.identityRecipients.some((recipient) => needed.includes(recipient))) {
      throw failure(
        'DecryptionFailed',
        `backup ${archive.backupId} is encrypted (age) to ${list(needed)}; the identity in ${keys.identityField} is for ${list(keys.identityRecipients)}, which is not one of them; nothing was changed`,
        `point ${keys.identityField} at the key of one of the backup's recipients (\`age-keygen -y key.txt\` prints a key's recipient)`,
      );
    }
    return keys.identities;
  }

  /**
   * Preflight: the archive's age header opens with this worker's identities. Reads the header
   * only, so a wrong key is reported in a second, before gigabytes are read.
   */
  async function assertDecryptable(archive: ArchiveRef, repository: Repository): Promise<void> {
    const identities = await identitiesFor(archive);
    if (!identities) return;
    const source = await repository.read(artifactKey(archive.backupId, archive.dumpFile));
    try {
      const plaintext = await decryptStream(source, identities);
      plaintext.destroy();
    } catch (error) {
      if (!(error instanceof DecryptionError)) throw error;
      if (error.problem === 'no-matching-identity') {
        throw failure(
          'DecryptionFailed',
          `backup ${archive.backupId}'s age header does not open with this worker's identity, though its manifest lists that recipient (${list(archive.encryption!.recipients)}): the artifact was replaced or modified; nothing was changed`,
          `run \`pgrunbook backups verify ${archive.backupId}\`; restore another backup with --backup`,
        );
      }
      throw failure('VerificationFailed', `backup ${archive.backupId} cannot be decrypted: ${error.message}; nothing was changed`, `run \`pgrunbook backups verify ${archive.backupId}\`; restore another backup with --backup`);
    } finally {
      source.destroy();
    }
  }

  /**
   * Verification right after a backup: decrypted in-stream when this worker holds a matching
   * identity; otherwise the stored bytes' checksum only, and the manifest says so.
   */
  async function verificationKeys(repositoryId: string, encryption: ArchiveEncryption | null | undefined): Promise<VerifyRequest['encryption']> {
    if (!encryption) return undefined;
    const keys = await keysOf(repositoryId);
    if (keys.identities && keys.identityRecipients.some((recipient) => encryption.recipients.includes(recipient))) return { identities: keys.identities };
    const why = keys.identities ? `its identity (${list(keys.identityRecipients)}) is not among the recipients` : 'it holds no identity (a backup-only worker)';
    return { identities: null, note: `encrypted to ${list(encryption.recipients)}; not decrypted by the worker that verified it, as ${why}: sha256 and size of the stored bytes checked only. Restores, drills and \`pgrunbook backups verify\` with the key decrypt it and read it with pg_restore.` };
  }

  return { keysOf, encryptionFor, identitiesFor, assertDecryptable, verificationKeys };
}

export type EncryptionSupport = ReturnType<typeof createEncryptionSupport>;
