import { z } from 'zod';
import { ArchiveEncryption, FileEntry } from '../repository/manifest.js';

// A base backup's manifest.json: written last, so a folder without it is incomplete and never
// chosen for a recovery. LSNs are PostgreSQL's "X/Y" text; the system identifier is a decimal
// string (a uint64 does not fit a JSON number).

const LsnText = z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/, 'expected an LSN like 0/2000028');
const SegmentName = z.string().regex(/^[0-9A-F]{24}$/);

export const BaseBackupManifest = z.object({
  formatVersion: z.literal(1),
  kind: z.literal('basebackup'),
  id: z.string(),
  cluster: z.string(),
  status: z.enum(['verified', 'failed']),
  startedAt: z.string(),
  finishedAt: z.string(),
  /** pg_basebackup's "write-ahead log start point": recovery replays from here. */
  startLsn: LsnText,
  /** Its "end point": the backup is consistent once replay passes it. */
  stopLsn: LsnText,
  timeline: z.number().int().positive(),
  /** The segments from startLsn to stopLsn: the least WAL a recovery from this backup needs. */
  walRange: z.object({ start: SegmentName, stop: SegmentName }),
  /** SHOW server_version and server_version_num at backup time. */
  serverVersion: z.string(),
  serverVersionNum: z.number().int(),
  /** pg_control_system().system_identifier: which cluster this is (compared with the WAL archive). */
  systemIdentifier: z.string().regex(/^\d+$/),
  segmentSize: z.number().int().positive(),
  /** The stored tar (compressed and encrypted as it sits in the repository) by file name. */
  files: z.record(z.string(), FileEntry),
  /** Bytes of the uncompressed tar pg_basebackup wrote. */
  tarSize: z.number().int().nonnegative(),
  compression: z.enum(['none', 'gzip', 'zstd']),
  encryption: ArchiveEncryption.optional(),
  verification: z.object({
    /** pg_verifybackup over the extracted tar (PostgreSQL 15 verifies plain directories only). */
    tool: z.string(),
    ok: z.boolean(),
    at: z.string(),
    detail: z.string().nullable(),
  }),
  error: z.string().nullable().default(null),
  workflowId: z.string().nullable().default(null),
  pgrunbookVersion: z.string(),
});
export type BaseBackupManifest = z.infer<typeof BaseBackupManifest>;

/** pitr/<cluster>/archive.json: the cluster whose WAL this archive holds. */
export const ArchiveInfo = z.object({
  formatVersion: z.literal(1),
  cluster: z.string(),
  systemIdentifier: z.string().regex(/^\d+$/),
  /** PostgreSQL major version (15), from the WAL page magic or the server. */
  pgMajor: z.number().int().nullable(),
  segmentSize: z.number().int().positive(),
  createdAt: z.string(),
});
export type ArchiveInfo = z.infer<typeof ArchiveInfo>;

/** pitr/<cluster>/restore-points/<name>.json: made by `pgrunbook wal restore-point NAME`. */
export const RestorePointRecord = z.object({
  name: z.string(),
  lsn: LsnText,
  timeline: z.number().int().positive(),
  createdAt: z.string(),
});
export type RestorePointRecord = z.infer<typeof RestorePointRecord>;
