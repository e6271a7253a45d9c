import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { runTool } from '../process/run.js';
import { postgresClientBinDirs } from '../stack/binaries.js';
import { failure } from './errors.js';

export interface ClientTools {
  dir: string;
  /** Major version of pg_dump in `dir`. */
  major: number;
  /** `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` */
  version: string;
  pgDump: string;
  pgRestore: string;
  psql: string;
}

const versionCache = new Map<string, { major: number; version: string }>();

async function toolVersion(dir: string): Promise<{ major: number; version: string }> {
  const cached = versionCache.get(dir);
  if (cached) return cached;
  const version = (await runTool(join(dir, 'pg_dump'), ['--version'])).trim();
  const match = /\(PostgreSQL\)\s+(\d+)/.exec(version);
  const result = { major: Number(match?.[1] ?? 0), version };
  versionCache.set(dir, result);
  return result;
}

function toolsIn(dir: string, v: { major: number; version: string }): ClientTools {
  return { dir, ...v, pgDump: join(dir, 'pg_dump'), pgRestore: join(dir, 'pg_restore'), psql: join(dir, 'psql') };
}

/**
 * Client tools able to talk to a server of `serverMajor`: pg_dump refuses servers newer than
 * itself, so pick the oldest installed major that is >= the server's (closest behaviour), or the
 * configured directory.
 */
export async function clientToolsFor(serverMajor: number, configuredDir?: string): Promise<ClientTools> {
  if (configuredDir) {
    if (!existsSync(join(configuredDir, 'pg_dump'))) {
      throw failure('ConfigError', `pgBinDir ${configuredDir} has no pg_dump`, 'point pgBinDir at the bin directory of a PostgreSQL client installation');
    }
    const v = await toolVersion(configuredDir);
    if (v.major < serverMajor) {
      throw failure('VersionIncompatible', `pg_dump ${v.major} in ${configuredDir} cannot dump a PostgreSQL ${serverMajor} server`, `install PostgreSQL ${serverMajor}+ client tools and point pgBinDir at them`);
    }
    return toolsIn(configuredDir, v);
  }
  const found: ClientTools[] = [];
  for (const { dir } of postgresClientBinDirs()) found.push(toolsIn(dir, await toolVersion(dir)));
  if (found.length === 0) {
    throw failure('VersionIncompatible', 'no pg_dump found on the worker', 'install the PostgreSQL client tools (Debian: apt-get install postgresql-client)');
  }
  const usable = found.filter((t) => t.major >= serverMajor).sort((a, b) => a.major - b.major);
  if (usable[0]) return usable[0];
  const newest = found.sort((a, b) => b.major - a.major)[0]!;
  throw failure(
    'VersionIncompatible',
    `pg_dump ${newest.major} cannot dump a PostgreSQL ${serverMajor} server (pg_dump only dumps servers of its own major version or older)`,
    `install postgresql-client-${serverMajor} (or newer) on the worker, or set pgBinDir`,
  );
}

/** The newest client tools on the worker, for reading archives when no server is involved. */
export async function newestClientTools(configuredDir?: string): Promise<ClientTools> {
  return clientToolsFor(0, configuredDir);
}
