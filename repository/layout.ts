// Where things live in a repository. A backup is a folder `<database>/<YYYYMMDDTHHMMSSZ>[_<label>]/`
// (seed 003's layout with a UTC stamp, seed 002's timestamp format); its id is that folder path.

export const ARTIFACT = {
  /** pg_dump -Fc (seed 003's name). */
  customDump: 'db_full.dump',
  /** pg_dump plain SQL, gzipped (seeds 001, 004). */
  plainDump: 'db_full.sql.gz',
  schema: 'schema.sql',
  version: 'version.txt',
  extensions: 'extensions.tsv',
  viewsReloptions: 'views_reloptions.tsv',
  rowCounts: 'row_counts.tsv',
  schemaVersion: 'schema_version.txt',
  /** Written last: a folder without it is incomplete and never listed as good. */
  manifest: 'manifest.json',
} as const;

export type DumpFormat = 'custom' | 'plain';

export function dumpFileName(format: DumpFormat): string {
  return format === 'custom' ? ARTIFACT.customDump : ARTIFACT.plainDump;
}

/** 2026-11-21T23:06:43.123Z -> 20261121T230643Z */
export function compactTimestamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

export function backupId(database: string, startedAt: Date, label?: string): string {
  return `${database}/${compactTimestamp(startedAt)}${label ? `_${label}` : ''}`;
}

const BACKUP_ID = /^([a-z0-9][a-z0-9_-]{0,62})\/(\d{8}T\d{6}Z)(?:_([A-Za-z0-9][A-Za-z0-9._-]{0,62}))?$/;

export function parseBackupId(id: string): { database: string; timestamp: string; label?: string } | undefined {
  const m = BACKUP_ID.exec(id);
  if (!m) return undefined;
  return { database: m[1]!, timestamp: m[2]!, label: m[3] };
}

export const artifactKey = (id: string, name: string): string => `${id}/${name}`;
