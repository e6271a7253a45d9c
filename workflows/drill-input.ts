import { z } from 'zod';
import { BackupRef, ConfigId } from './input-fields.js';

// runRestoreDrill input: names only, so a schedule, the CLI and `temporal workflow start --input
// '{"database":"app"}'` can all start it. Connection details and secrets stay in the worker.

export const DrillInput = z
  .object({
    database: ConfigId,
    /** A backup id, or `latest`: the newest verified backup. With the canary on, `latest` means a fresh backup. */
    backup: BackupRef,
    repository: ConfigId.optional(),
    /** Overrides drill.canary.enabled from the config. */
    canary: z.boolean().optional(),
    /** Who or what started it (user@host, or the schedule); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type DrillInput = z.input<typeof DrillInput>;
export type ParsedDrillInput = z.output<typeof DrillInput>;
