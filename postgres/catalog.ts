import type pg from 'pg';

// Catalog queries shared by backup (metadata snapshot, row counts) and, later, restore
// verification. All run on a caller-provided client so they can share a snapshot.

export interface TableRef {
  schema: string;
  name: string;
}

/** User tables holding rows: plain tables and partitions, not partitioned parents or extension-owned tables. */
export async function listTables(client: pg.ClientBase): Promise<TableRef[]> {
  const { rows } = await client.query<{ schema: string; name: string }>(`
    SELECT n.nspname AS schema, c.relname AS name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 1, 2`);
  return rows;
}

export const tableKey = (t: TableRef): string => `${t.schema}.${t.name}`;

/**
 * psql/pg_dump name pattern -> regex (as pg_dump's --exclude-table/--exclude-schema read it):
 * unquoted letters fold to lower case, `*` and `?` are wildcards, `"..."` is literal, a `.`
 * outside quotes separates schema from name; without one, any schema matches.
 */
export function namePattern(pattern: string): { schema: RegExp | null; name: RegExp } {
  const parts: string[] = [''];
  let quoted = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '"') {
      if (quoted && pattern[i + 1] === '"') {
        parts[parts.length - 1] += '"';
        i++;
      } else quoted = !quoted;
    } else if (!quoted && ch === '.') parts.push('');
    else if (!quoted && ch === '*') parts[parts.length - 1] += '.*';
    else if (!quoted && ch === '?') parts[parts.length - 1] += '.';
    else parts[parts.length - 1] += (quoted ? ch : ch.toLowerCase()).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  const whole = (re: string): RegExp => new RegExp(`^(?:${re})$`);
  return parts.length > 1 ? { schema: whole(parts.at(-2)!), name: whole(parts.at(-1)!) } : { schema: null, name: whole(parts[0]!) };
}

/** The tables a dump with these exclusions contains: row counts must describe the dump, not the server. */
export function excludeTables(tables: TableRef[], exclusions: { excludeSchemas: string[]; excludeTables: string[] }): TableRef[] {
  const schemas = exclusions.excludeSchemas.map((p) => namePattern(p).name);
  const names = exclusions.excludeTables.map(namePattern);
  return tables.filter(
    (t) => !schemas.some((re) => re.test(t.schema)) && !names.some((p) => p.name.test(t.name) && (p.schema === null || p.schema.test(t.schema))),
  );
}

/** Exact row counts, keyed "schema.table". Runs in the caller's transaction (and so its snapshot). */
export async function countRows(client: pg.ClientBase, tables: TableRef[], onTiming?: (table: string, ms: number) => void): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of tables) {
    const started = performance.now();
    const { rows } = await client.query<{ n: string }>(
      `SELECT count(*) AS n FROM ONLY ${quoteIdent(table.schema)}.${quoteIdent(table.name)}`,
    );
    counts[tableKey(table)] = Number(rows[0]?.n ?? 0);
    onTiming?.(tableKey(table), performance.now() - started);
  }
  return counts;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

// Migration tools whose table tells the schema version, tried in order when none is configured.
const SCHEMA_VERSION_PROBES: { table: string; query: string }[] = [
  { table: 'alembic_version', query: 'SELECT string_agg(version_num, \',\' ORDER BY version_num) FROM alembic_version' },
  { table: '_prisma_migrations', query: 'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, migration_name DESC LIMIT 1' },
  { table: 'flyway_schema_history', query: 'SELECT version FROM flyway_schema_history WHERE success ORDER BY installed_rank DESC LIMIT 1' },
  { table: 'schema_migrations', query: 'SELECT max(version)::text FROM schema_migrations' },
  { table: 'knex_migrations', query: 'SELECT name FROM knex_migrations ORDER BY id DESC LIMIT 1' },
];

export interface SchemaVersion {
  /** The query that produced it (configured, or the detected migration tool's). */
  query: string | null;
  value: string | null;
  error?: string;
}

/**
 * The schema version (seed 002's alembic_version check). With no configured query, detects common
 * migration tools' tables on the search path. A failing configured query is recorded, not fatal:
 * the dump itself is still good.
 */
export async function probeSchemaVersion(client: pg.ClientBase, configured?: string): Promise<SchemaVersion> {
  let query = configured ?? null;
  if (!query) {
    for (const probe of SCHEMA_VERSION_PROBES) {
      const { rows } = await client.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [probe.table]);
      if (rows[0]?.found) {
        query = probe.query;
        break;
      }
    }
  }
  if (!query) return { query: null, value: null };
  await client.query('SAVEPOINT pgrunbook_schema_version');
  try {
    const result = await client.query({ text: query, rowMode: 'array' });
    await client.query('RELEASE SAVEPOINT pgrunbook_schema_version');
    const first = (result.rows[0] as unknown[] | undefined)?.[0];
    return { query, value: first === null || first === undefined ? null : String(first) };
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT pgrunbook_schema_version');
    return { query, value: null, error: (error as Error).message };
  }
}

export async function extensionsInventory(client: pg.ClientBase): Promise<{ name: string; version: string; schema: string }[]> {
  const { rows } = await client.query<{ name: string; version: string; schema: string }>(
    'SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1',
  );
  return rows;
}

/** Views' reloptions (e.g. security_invoker=true): seed 003's permission-posture snapshot. */
export async function viewReloptions(client: pg.ClientBase): Promise<{ schema: string; view: string; kind: string; reloptions: string }[]> {
  const { rows } = await client.query<{ schema: string; view: string; kind: string; reloptions: string }>(`
    SELECT n.nspname AS schema, c.relname AS view,
           CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END AS kind,
           coalesce(array_to_string(c.reloptions, ','), '') AS reloptions
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
     ORDER BY 1, 2`);
  return rows;
}

/** Tab-separated values with a header row; tabs and newlines inside values are escaped. */
export function toTsv(header: string[], rows: (string | number)[][]): string {
  const cell = (v: string | number): string => String(v).replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n');
  return [header, ...rows].map((r) => r.map(cell).join('\t')).join('\n') + '\n';
}
