import { createHash } from 'node:crypto';
import { verifyArtifact } from '../postgres/verify.js';
import { ARTIFACT, artifactKey } from './layout.js';
import { readManifest } from './catalog.js';
import type { Verification } from './manifest.js';
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
}

/**
 * `pgrunbook backups verify`: re-checks a stored backup against its manifest: the dump's sha256,
 * size and `pg_restore -l`, and every metadata file's sha256.
 */
export async function verifyStoredBackup(repository: Repository, backupId: string, pgRestore: string, onBytes?: (bytes: number) => void): Promise<StoredBackupCheck> {
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
    dump = await verifyArtifact({ repository, key: artifactKey(backupId, manifest.dump.file), format: manifest.format, expected: manifest.dump, pgRestore, onBytes });
    if (!dump.ok) problems.push(`${manifest.dump.file}: ${dump.error ?? 'verification failed'}`);
  }
  const badFiles: string[] = [];
  for (const [name, expected] of Object.entries(manifest.files)) {
    if (name === manifest.dump?.file) continue;
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of await repository.read(artifactKey(backupId, name))) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (error) {
      badFiles.push(name);
      problems.push(`${name}: ${(error as Error).message}`);
      continue;
    }
    if (size !== expected.size || hash.digest('hex') !== expected.sha256) {
      badFiles.push(name);
      problems.push(`${name}: content differs from the manifest`);
    }
  }
  return { ...base, ok: problems.length === 0, status: manifest.status, dump, badFiles, problems };
}
