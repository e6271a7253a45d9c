import { z } from 'zod';

// Fields shared by the workflow inputs: ids that name things in the worker's config, and backup
// references. Names only, never connection details, so inputs can be typed into the temporal CLI.

export const ConfigId = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected an id from the worker\'s config (lowercase letters, digits, "-", "_")');

/** A backup id (`app/20261121T020000Z`) or `latest`: the newest verified backup. */
export const BackupRef = z
  .string()
  .regex(/^(latest|[a-z0-9][a-z0-9_-]{0,62}\/\d{8}T\d{6}Z(_[A-Za-z0-9][A-Za-z0-9._-]{0,62})?)$/, 'expected "latest" or a backup id like app/20261121T020000Z (see `pgrunbook backups list`)')
  .default('latest');
