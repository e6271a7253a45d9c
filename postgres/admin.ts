import pg from 'pg';
import { quoteIdent } from './catalog.js';
import { pgClientConfig, type ConnectionParams } from './connection.js';

// Database-level administration for restores: create, drop, rename, block and drain
// connections. Every statement runs on a connection to the maintenance database, never to the
// database being changed. Each function is idempotent so a retried activity converges.

export interface DatabaseInfo {
  name: string;
  owner: string;
  encoding: string;
  collate: string;
  ctype: string;
  allowConnections: boolean;
  sizeBytes: number;
  /** Backends connected to it, other than ours. */
  connections: number;
}

export async function withMaintenanceClient<T>(params: ConnectionParams, maintenanceDatabase: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(pgClientConfig(params, maintenanceDatabase));
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function databaseInfo(client: pg.ClientBase, name: string): Promise<DatabaseInfo | undefined> {
  const { rows } = await client.query<{ owner: string; encoding: string; collate: string; ctype: string; allow: boolean; size: string; connections: string }>(
    `SELECT pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding,
            d.datcollate AS collate, d.datctype AS ctype, d.datallowconn AS allow,
            pg_database_size(d.oid) AS size,
            (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid()) AS connections
       FROM pg_database d WHERE d.datname = $1`,
    [name],
  );
  const row = rows[0];
  if (!row) return undefined;
  return { name, owner: row.owner, encoding: row.encoding, collate: row.collate, ctype: row.ctype, allowConnections: row.allow, sizeBytes: Number(row.size), connections: Number(row.connections) };
}

export async function databaseExists(client: pg.ClientBase, name: string): Promise<boolean> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  return (rowCount ?? 0) > 0;
}

/** Names of databases matching a LIKE pattern, sorted. */
export async function databasesLike(client: pg.ClientBase, pattern: string): Promise<string[]> {
  const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname', [pattern]);
  return rows.map((r) => r.datname);
}

/**
 * CREATE DATABASE from template0 (a restore wants no local additions from template1), with the
 * owner, encoding and locale of the database it replaces when there is one. Does nothing if it
 * already exists.
 */
export async function createDatabase(client: pg.ClientBase, name: string, like?: Pick<DatabaseInfo, 'owner' | 'encoding' | 'collate' | 'ctype'>): Promise<boolean> {
  if (await databaseExists(client, name)) return false;
  const options = ['TEMPLATE template0'];
  if (like) {
    options.push(`OWNER ${quoteIdent(like.owner)}`, `ENCODING ${quoteLiteral(like.encoding)}`, `LC_COLLATE ${quoteLiteral(like.collate)}`, `LC_CTYPE ${quoteLiteral(like.ctype)}`);
  }
  await client.query(`CREATE DATABASE ${quoteIdent(name)} ${options.join(' ')}`);
  return true;
}

/** DROP DATABASE IF EXISTS ... WITH (FORCE): leftover sessions of a killed pg_restore must not block it. */
export async function dropDatabase(client: pg.ClientBase, name: string): Promise<boolean> {
  if (!(await databaseExists(client, name))) return false;
  await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  return true;
}

export async function setAllowConnections(client: pg.ClientBase, name: string, allow: boolean): Promise<boolean> {
  if (!(await databaseExists(client, name))) return false;
  await client.query(`ALTER DATABASE ${quoteIdent(name)} ALLOW_CONNECTIONS ${allow}`);
  return true;
}

/** pg_terminate_backend for every session on `name` but ours; returns how many were signalled. */
export async function terminateConnections(client: pg.ClientBase, name: string): Promise<number> {
  const { rows } = await client.query<{ n: string }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
    [name],
  );
  return Number(rows[0]?.n ?? 0);
}

export async function connectionCount(client: pg.ClientBase, name: string): Promise<number> {
  const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Terminates sessions until none remain (a pooler may reconnect between two rounds) or the
 * timeout passes. Returns the number terminated in total.
 */
export async function drainConnections(client: pg.ClientBase, name: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<number> {
  const deadline = Date.now() + options.timeoutMs;
  let terminated = 0;
  // This runs while the application is down: poll tightly, and not at all when nobody is there.
  let remaining = await connectionCount(client, name);
  while (remaining > 0) {
    options.signal?.throwIfAborted();
    if (Date.now() > deadline) throw new DrainTimeoutError(name, remaining, options.timeoutMs);
    terminated += await terminateConnections(client, name);
    await sleep(25);
    remaining = await connectionCount(client, name);
  }
  return terminated;
}

export class DrainTimeoutError extends Error {
  constructor(readonly database: string, readonly remaining: number, timeoutMs: number) {
    super(`${remaining} session(s) still connected to ${database} after ${Math.round(timeoutMs / 1000)} s of terminating them`);
  }
}

/**
 * Renames databases in one transaction (ALTER DATABASE RENAME is transactional): either every
 * rename happens or none does. Nobody may be connected to a database being renamed.
 */
export async function renameDatabases(client: pg.ClientBase, renames: readonly (readonly [from: string, to: string])[]): Promise<void> {
  await client.query('BEGIN');
  try {
    for (const [from, to] of renames) await client.query(`ALTER DATABASE ${quoteIdent(from)} RENAME TO ${quoteIdent(to)}`);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Number of user relations (tables, views, sequences...) in a database: 0 means freshly created. */
export async function userRelationCount(params: ConnectionParams, database: string): Promise<number> {
  const client = new pg.Client(pgClientConfig(params, database));
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'`,
    );
    return Number(rows[0]?.n ?? 0);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
