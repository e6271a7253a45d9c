import type { z } from 'zod';

/**
 * A configuration or input problem, reported before anything runs: where (the field's path),
 * what was expected, and what to do next (HINT).
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly problems: { path: string; message: string; hint?: string }[],
    readonly source: string,
  ) {
    super(
      [`invalid ${source}:`, ...problems.map((p) => `  ${p.path || '(top level)'}: ${p.message}${p.hint ? `\n    HINT: ${p.hint}` : ''}`)].join('\n'),
    );
  }
}

// Hints keyed by the last meaningful path segment. Generic enough to stay true wherever it appears.
const HINTS: Record<string, string> = {
  type: 'a repository is `type: local` (with `path`) or `type: s3` (with `bucket`)',
  url: 'e.g. url: postgres://backup@db.internal:5432/app?sslmode=require with the password as ${APP_DB_PASSWORD}',
  compression: 'gzip:6 matches the runbooks\' pg_dump -Z6',
  repository: 'use the id of an entry under `repositories:`',
  endpoint: 'a full URL such as http://127.0.0.1:8333',
  database: 'use the id of an entry under `databases:` in the worker\'s config',
  port: 'a TCP port number, e.g. 5432 (unquoted)',
};

function pathOf(path: readonly PropertyKey[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
}

export function fromZodError(error: z.ZodError, source: string): ConfigError {
  const problems = error.issues.map((issue) => {
    const path = pathOf(issue.path);
    let message = issue.message;
    let hint: string | undefined;
    if (issue.code === 'unrecognized_keys') {
      message = `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
      hint = 'remove it or check its spelling against the config reference in README.md';
    } else if (issue.code === 'invalid_key') {
      // zod keeps the key's own complaint (what an id looks like) one level down.
      message = `invalid id "${String(issue.path.at(-1))}": ${issue.issues[0]?.message ?? issue.message}`;
      hint = 'ids are lowercase letters, digits, "-" and "_", e.g. main or app-db';
    } else if (issue.code === 'invalid_type' && issue.message.includes('received undefined')) {
      message = `required: ${issue.message.replace(/^Invalid input: /, '')}`;
    }
    const last = [...issue.path].reverse().find((p) => typeof p === 'string');
    hint ??= typeof last === 'string' ? HINTS[last] : undefined;
    return { path, message: message.replace(/^Invalid input: /, ''), hint };
  });
  return new ConfigError(problems, source);
}
