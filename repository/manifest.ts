import { z } from 'zod';

// manifest.json: the last file written into a backup folder, the only one that says whether a
// backup is good. Restores and drills (later issues) trust nothing that is not listed here.

export const FileEntry = z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
export type FileEntry = z.infer<typeof FileEntry>;

export const Verification = z.object({
  ok: z.boolean(),
  checkedAt: z.string(),
  sha256Matches: z.boolean(),
  sizeMatches: z.boolean(),
  /** What was read back (absent in manifests written before pgrunbook recorded it). */
  sha256: z.string().optional(),
  size: z.number().int().nonnegative().optional(),
  /** pg_restore -l: number of TOC entries (custom format). */
  tocEntries: z.number().int().nullable(),
  /** Plain format: the gzip stream decompresses and ends with pg_dump's completion marker. */
  completeMarker: z.boolean().nullable(),
  /**
   * Encrypted backups only. true: decrypted in-stream and read by the tools; false: the verifier
   * held no identity for it, so only the stored (encrypted) bytes' sha256 and size were checked.
   */
  decrypted: z.boolean().optional(),
  /** What was not checked, and why (e.g. checksum only). */
  note: z.string().optional(),
  error: z.string().optional(),
});
export type Verification = z.infer<typeof Verification>;

/** Client-side encryption (age) of the dump and schema.sql: to these recipients, public keys. Never a key. */
export const ArchiveEncryption = z.object({ format: z.literal('age'), recipients: z.array(z.string()).min(1) });
export type ArchiveEncryption = z.infer<typeof ArchiveEncryption>;

export const Manifest = z.object({
  manifestVersion: z.literal(1),
  id: z.string(),
  database: z.string(),
  label: z.string().nullable(),
  repository: z.string(),
  /** verified: restorable; failed: dump or verification failed; cancelled: stopped by an operator. */
  status: z.enum(['verified', 'failed', 'cancelled']),
  workflowId: z.string(),
  runId: z.string(),
  format: z.enum(['custom', 'plain']).nullable(),
  compression: z.string().nullable(),
  dump: z
    .object({
      file: z.string(),
      size: z.number().int().nonnegative(),
      sha256: z.string(),
      /** Size of the database (pg_database_size) when the dump started. */
      databaseSizeBytes: z.number().int().nonnegative(),
    })
    .nullable(),
  files: z.record(z.string(), FileEntry),
  /** Absent or null: stored in the clear. */
  encryption: ArchiveEncryption.nullable().optional(),
  serverVersion: z.string().nullable(),
  pgDumpVersion: z.string().nullable(),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationSeconds: z.number().nonnegative(),
  rowCounts: z.record(z.string(), z.number().int().nonnegative()).nullable(),
  schemaVersion: z.object({ query: z.string().nullable(), value: z.string().nullable(), error: z.string().optional() }).nullable(),
  verification: Verification.nullable(),
  error: z.object({ step: z.string(), type: z.string(), message: z.string() }).nullable(),
  pgrunbookVersion: z.string(),
});
export type Manifest = z.infer<typeof Manifest>;
