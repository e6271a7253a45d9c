import { compactTimestamp } from '../repository/layout.js';

// Where point-in-time recovery lives in a repository, beside the logical backups' `<database>/`
// folders and `reports/`. Everything of one cluster is under `pitr/<cluster>/`:
//
//   pitr/<cluster>/archive.json                     the cluster the archive belongs to (system
//                                                   identifier, version, segment size); written by
//                                                   the first wal-push, checked by every later one
//   pitr/<cluster>/wal/<TTTTTTTTXXXXXXXX>/<segment>-<sha256>.<ext>
//                                                   a WAL segment, grouped by timeline and "log"
//                                                   (256 segments per folder, pgBackRest's layout);
//                                                   sha256 of the original 16 MiB segment, so an
//                                                   idempotent re-push and wal-fetch's check need no
//                                                   extra metadata; ext: zst | gz | raw, then .age
//   pitr/<cluster>/wal/timelines/<name>-<sha256>.<ext>
//                                                   history files, backup labels, .partial segments;
//                                                   history files are compressed but never encrypted:
//                                                   following timelines (walReachability, wal verify)
//                                                   needs no identity, and they hold only LSNs
//   pitr/<cluster>/base/<YYYYMMDDTHHMMSSZ>/base.tar[.zst|.gz][.age]
//   pitr/<cluster>/base/<YYYYMMDDTHHMMSSZ>/manifest.json   written last (BaseBackupManifest)
//   pitr/<cluster>/restore-points/<name>.json       named restore points made by pgrunbook
//   pitr/<cluster>/reports/pitr-<YYYYMMDDTHHMMSSZ>.json   point-in-time restore reports

export const PITR_FOLDER = 'pitr';

export type WalCompression = 'none' | 'gzip' | 'zstd';

export const pitrPrefix = (cluster: string): string => `${PITR_FOLDER}/${cluster}/`;
export const archiveInfoKey = (cluster: string): string => `${pitrPrefix(cluster)}archive.json`;
export const walPrefix = (cluster: string): string => `${pitrPrefix(cluster)}wal/`;
export const baseBackupsPrefix = (cluster: string): string => `${pitrPrefix(cluster)}base/`;
export const restorePointKey = (cluster: string, name: string): string => `${pitrPrefix(cluster)}restore-points/${name}.json`;
export const restorePointsPrefix = (cluster: string): string => `${pitrPrefix(cluster)}restore-points/`;
export const pitrReportKey = (cluster: string, startedAt: Date): string => `${pitrPrefix(cluster)}reports/pitr-${compactTimestamp(startedAt)}.json`;

/** File name suffix of a stored WAL file or base tar for a compression and encryption. */
export function storedSuffix(compression: WalCompression, encrypted: boolean): string {
  const ext = compression === 'zstd' ? '.zst' : compression === 'gzip' ? '.gz' : '';
  return `${ext}${encrypted ? '.age' : ''}`;
}

/** A base backup's id: `<cluster>/<YYYYMMDDTHHMMSSZ>`. */
export function baseBackupId(cluster: string, startedAt: Date): string {
  return `${cluster}/${compactTimestamp(startedAt)}`;
}

const BASE_BACKUP_ID = /^([a-z0-9][a-z0-9_-]{0,62})\/(\d{8}T\d{6}Z)$/;

export function parseBaseBackupId(id: string): { cluster: string; timestamp: string } | undefined {
  const m = BASE_BACKUP_ID.exec(id);
  return m ? { cluster: m[1]!, timestamp: m[2]! } : undefined;
}

/** The folder of a base backup: pitr/<cluster>/base/<ts>/. */
export function baseBackupFolder(id: string): string {
  const parsed = parseBaseBackupId(id);
  if (!parsed) throw new Error(`not a base backup id: "${id}" (expected <cluster>/<YYYYMMDDTHHMMSSZ>)`);
  return `${baseBackupsPrefix(parsed.cluster)}${parsed.timestamp}/`;
}

export const BASE_ARTIFACT = {
  /** pg_basebackup -Ft -D - : the data directory and the WAL it needs, one tar, backup_manifest inside. */
  tar: 'base.tar',
  manifest: 'manifest.json',
} as const;

const RESTORE_POINT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export function isRestorePointName(name: string): boolean {
  return RESTORE_POINT.test(name);
}
