import { z } from 'zod';
import { ConfigId } from './input-fields.js';

// basebackupCluster and pruneBaseBackups inputs: a cluster id from the worker's config, never
// connection details, so `temporal workflow start --input '{"cluster":"main"}'` works.

export const BasebackupInput = z
  .object({
    cluster: ConfigId,
    /** Who or what started it (user@host, the schedule); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type BasebackupInput = z.infer<typeof BasebackupInput>;

export const PruneBaseBackupsInput = z
  .object({
    cluster: ConfigId,
    /** Plan only: say what would go and which rule decided it, delete nothing. */
    dryRun: z.boolean().default(false),
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type PruneBaseBackupsInput = z.input<typeof PruneBaseBackupsInput>;
