import { z } from 'zod';

// Workflow input: plain JSON that names things, never connection details or secrets, so it can
// be typed into `temporal workflow start --input '{"database":"app"}'`.
export const BackupInput = z
  .object({
    database: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected a database id from the worker\'s config (lowercase letters, digits, "-", "_")'),
    label: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected a short label of letters, digits, ".", "-", "_" (e.g. pre-upgrade)')
      .optional(),
    repository: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected a repository id from the worker\'s config').optional(),
  })
  .strict();
export type BackupInput = z.infer<typeof BackupInput>;

/** Turns zod issues into one line per field: `field: expectation`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.join('.') || '(input)';
      if (issue.code === 'unrecognized_keys') return `${field}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
      return `${field}: ${issue.message.replace(/^Invalid input: /, '')}`;
    })
    .join('; ');
}
