import { z } from 'zod';
import { BackupRef, ConfigId } from './input-fields.js';

// restoreDatabase input: names only (a database id from the worker's config, a backup id), so it
// can be typed into `temporal workflow start --input '{"database":"app","backup":"latest"}'`.
// Connection details and secrets stay in the worker.


export const RestoreInput = z
  .object({
    database: ConfigId,
    /** A backup id (`app/20261121T020000Z`) or `latest`: the newest verified backup. */
    backup: BackupRef,
    repository: ConfigId.optional(),
    /** Restore under another name (seed 000's non-destructive test restore): no approval, no app. */
    targetDatabase: z
      .string()
      .min(1)
      .max(63, 'expected at most 63 bytes (PostgreSQL\'s identifier limit)')
      .regex(/^[^\0"]+$/, 'expected a database name without NUL or double quotes')
      .optional(),
    strategy: z.enum(['swap', 'in-place']).optional(),
    jobs: z.number().int().min(1).max(64).optional(),
    noOwner: z.boolean().optional(),
    noPrivileges: z.boolean().optional(),
    role: z.string().min(1).max(63).optional(),
    /** Overrides the config: false starts without waiting for approval (the operator approves by starting). */
    requireApproval: z.boolean().optional(),
    /** Overrides the config's safetyBackup. In-place over an existing database always takes one. */
    safetyBackup: z.boolean().optional(),
    onStepFailure: z.enum(['ask', 'abort']).optional(),
    /** Who started it, for the report (user@host); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type RestoreInput = z.input<typeof RestoreInput>;
export type ParsedRestoreInput = z.output<typeof RestoreInput>;
