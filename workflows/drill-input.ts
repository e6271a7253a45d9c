import { z } from 'zod';

// runRestoreDrill input: names only, so a schedule, the CLI and `temporal workflow start --input
// '{"database":"app"}'` can all start it. Connection details and secrets stay in the worker.

const Id = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected an id from the worker\'s config (lowercase letters, digits, "-", "_")');

export const DrillInput = z
  .object({
    database: Id,
    /** A backup id, or `latest`: the newest verified backup. With the canary on, `latest` means a fresh backup. */
    backup: z
      .string()
      .regex(/^(latest|[a-z0-9][a-z0-9_-]{0,62}\/\d{8}T\d{6}Z(_[A-Za-z0-9][A-Za-z0-9._-]{0,62})?)$/, 'expected "latest" or a backup id like app/20261121T020000Z (see `pgrunbook backups list`)')
      .default('latest'),
    repository: Id.optional(),
    /** Overrides drill.canary.enabled from the config. */
    canary: z.boolean().optional(),
    /** Who or what started it (user@host, or the schedule); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type DrillInput = z.input<typeof DrillInput>;
export type ParsedDrillInput = z.output<typeof DrillInput>;
