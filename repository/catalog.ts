import { ARTIFACT, parseBackupId } from './layout.js';
import { Manifest } from './manifest.js';
import type { Repository } from './types.js';
import { readAll } from './types.js';

export type BackupState = Manifest['status'] | 'incomplete';

export interface BackupEntry {
  id: string;
  database: string;
  label: string | null;
  timestamp: string;
  state: BackupState;
  /** Present unless the backup is incomplete (no manifest yet: running, or its writer died). */
  manifest?: Manifest;
}

/** Backups of a database in a repository, newest first, read from their folders and manifests. */
export async function listBackups(repository: Repository, database: string): Promise<BackupEntry[]> {
  const objects = await repository.list(`${database}/`);
  const folders = new Map<string, boolean>();
  for (const object of objects) {
    const id = object.key.slice(0, object.key.lastIndexOf('/'));
    if (!parseBackupId(id)) continue;
    folders.set(id, folders.get(id) === true || object.key.endsWith(`/${ARTIFACT.manifest}`));
  }
  const entries = await Promise.all(
    [...folders].map(async ([id, hasManifest]): Promise<BackupEntry> => {
      const parsed = parseBackupId(id)!;
      const base = { id, database: parsed.database, label: parsed.label ?? null, timestamp: parsed.timestamp };
      if (!hasManifest) return { ...base, state: 'incomplete' };
      const manifest = await readManifest(repository, id);
      return { ...base, state: manifest.status, manifest };
    }),
  );
  return entries.sort((a, b) => b.timestamp.localeCompare(a.timestamp) || b.id.localeCompare(a.id));
}

export async function readManifest(repository: Repository, id: string): Promise<Manifest> {
  const text = (await readAll(repository, `${id}/${ARTIFACT.manifest}`)).toString('utf8');
  return Manifest.parse(JSON.parse(text));
}

/** The newest backup that passed verification: the only kind a restore may pick as "latest". */
export async function latestGoodBackup(repository: Repository, database: string): Promise<BackupEntry | undefined> {
  return (await listBackups(repository, database)).find((b) => b.state === 'verified');
}
