import { z } from 'zod';
import { ConfigId } from './input-fields.js';

// pruneBackups input: names only, so a schedule, the backup workflow, the CLI and
// `temporal workflow start --input '{"database":"app","dryRun":true}'` can all start it.

export const PruneInput = z
  .object({
    database: ConfigId,
    repository: ConfigId.optional(),
    /** Plan only: say what would go and which rule decided it, delete nothing. */
    dryRun: z.boolean().default(false),
    /** Who or what started it (user@host, the schedule, a backup); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type PruneInput = z.input<typeof PruneInput>;
export type ParsedPruneInput = z.output<typeof PruneInput>;
