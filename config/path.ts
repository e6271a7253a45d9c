import { resolve } from 'node:path';

/**
 * The config file a command reads: --config, then $PGRUNBOOK_CONFIG, then ./pgrunbook.yaml.
 * Dependency-free, so wal-push's fast path can identify the config without loading yaml or zod.
 */
export function configPath(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(explicit ?? env.PGRUNBOOK_CONFIG ?? 'pgrunbook.yaml');
}
