import { readAll, type Repository } from '../repository/types.js';
import { BASE_ARTIFACT, baseBackupFolder, baseBackupsPrefix } from './layout.js';
import { BaseBackupManifest } from './manifest.js';

// The base backups of a cluster, read from their folders: a folder with manifest.json is
// `verified` or `failed` as its manifest says; a folder without one (being written, its writer
// died, or a prune died half-way) is `incomplete` and never chosen for a recovery.

export interface BaseBackupEntry {
  id: string;
  cluster: string;
  timestamp: string;
  state: 'verified' | 'failed' | 'incomplete';
  manifest?: BaseBackupManifest;
}

const TIMESTAMP = /^\d{8}T\d{6}Z$/;

/** The base backups of `cluster`, newest first. */
export async function listBaseBackups(repository: Repository, cluster: string): Promise<BaseBackupEntry[]> {
  const prefix = baseBackupsPrefix(cluster);
  const folders = new Map<string, boolean>();
  for (const object of await repository.list(prefix)) {
    const [timestamp, file] = object.key.slice(prefix.length).split('/');
    if (!timestamp || !TIMESTAMP.test(timestamp) || !file) continue;
    folders.set(timestamp, folders.get(timestamp) === true || file === BASE_ARTIFACT.manifest);
  }
  const entries = await Promise.all(
    [...folders].map(async ([timestamp, hasManifest]): Promise<BaseBackupEntry> => {
      const id = `${cluster}/${timestamp}`;
      if (!hasManifest) return { id, cluster, timestamp, state: 'incomplete' };
      const manifest = await readBaseManifest(repository, id);
      return { id, cluster, timestamp, state: manifest.status, manifest };
    }),
  );
  return entries.sort((a, b) => b.timestamp.localeCompare(a.timestamp));
}

/** A base backup's manifest; throws if it is missing or malformed. */
export async function readBaseManifest(repository: Repository, id: string): Promise<BaseBackupManifest> {
  const text = (await readAll(repository, `${baseBackupFolder(id)}${BASE_ARTIFACT.manifest}`)).toString('utf8');
  return BaseBackupManifest.parse(JSON.parse(text));
}

/** The stored tar's file name in a manifest (base.tar, base.tar.zst.age, ...). */
export function storedTarName(manifest: Pick<BaseBackupManifest, 'id' | 'files'>): string {
  const name = Object.keys(manifest.files).find((file) => file.startsWith(BASE_ARTIFACT.tar));
  if (!name) throw new Error(`base backup ${manifest.id}: its manifest lists no ${BASE_ARTIFACT.tar}`);
  return name;
}
