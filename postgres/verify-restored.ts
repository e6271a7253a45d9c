import pg from 'pg';
import type { SmokeQuery } from '../config/schema.js';
import { countRows, listTables, probeSchemaVersion, tableKey } from './catalog.js';
import { pgClientConfig, type ConnectionParams } from './connection.js';

// Step 8 of the restore (seed 002's success criteria): the restored database must hold what the
// backup recorded: per-table row counts, the schema version, and the operator's smoke queries.

export interface RowCountMismatch {
  table: string;
  expected: number;
  /** null: the table is missing from the restored database. */
  actual: number | null;
}

export interface SmokeResult {
  name: string;
  ok: boolean;
  expected: string | null;
  actual: string | null;
  error?: string;
  durationMs: number;
}

export interface RestoredCheck {
  ok: boolean;
  database: string;
  /** Tables compared with the manifest; null when the backup recorded no counts. */
  tablesChecked: number | null;
  rowCountMismatches: RowCountMismatch[];
  /** Rows found per table the backup counted; null when it recorded no counts. */
  rowCounts: Record<string, number | null> | null;
  /** How long each query took (row counts, smoke queries), for a drill's query-time budget. */
  queryTimings: { query: string; ms: number }[];
  schemaVersion: { expected: string | null; actual: string | null; ok: boolean };
  smokeQueries: SmokeResult[];
  analyzed: boolean;
  problems: string[];
}

export interface RestoredExpectations {
  rowCounts: Record<string, number> | null;
  schemaVersion: { query: string | null; value: string | null } | null;
  smokeQueries: SmokeQuery[];
  analyze: boolean;
}

export async function checkRestoredDatabase(params: ConnectionParams, database: string, expected: RestoredExpectations): Promise<RestoredCheck> {
  const client = new pg.Client(pgClientConfig(params, database));
  await client.connect();
  try {
    const problems: string[] = [];

    // Row counts: every table the backup counted must be there with exactly as many rows.
    const rowCountMismatches: RowCountMismatch[] = [];
    const queryTimings: { query: string; ms: number }[] = [];
    let tablesChecked: number | null = null;
    let rowCounts: Record<string, number | null> | null = null;
    if (expected.rowCounts) {
      const tables = await listTables(client);
      const actual = await countRows(client, tables.filter((t) => tableKey(t) in expected.rowCounts!), (table, ms) => queryTimings.push({ query: `count(*) ${table}`, ms }));
      rowCounts = {};
      for (const [table, rows] of Object.entries(expected.rowCounts)) {
        const found = actual[table];
        rowCounts[table] = found ?? null;
        if (found !== rows) rowCountMismatches.push({ table, expected: rows, actual: found ?? null });
      }
      tablesChecked = Object.keys(expected.rowCounts).length;
      if (rowCountMismatches.length > 0) {
        const shown = rowCountMismatches.slice(0, 5).map((m) => `${m.table} ${m.actual ?? 'missing'} (backup: ${m.expected})`).join(', ');
        problems.push(`row counts differ from the backup in ${rowCountMismatches.length} table(s): ${shown}`);
      }
    }

    // Schema version: the same query the backup used, so both sides mean the same thing.
    await client.query('BEGIN READ ONLY');
    const version = await probeSchemaVersion(client, expected.schemaVersion?.query ?? undefined);
    await client.query('COMMIT');
    const expectedVersion = expected.schemaVersion?.value ?? null;
    const versionOk = version.value === expectedVersion;
    if (!versionOk) problems.push(`schema version ${version.value ?? '(none)'} differs from the backup's ${expectedVersion ?? '(none)'}${version.error ? ` (${version.error})` : ''}`);

    const smokeQueries: SmokeResult[] = [];
    for (const smoke of expected.smokeQueries) {
      const result = await runSmokeQuery(client, smoke);
      smokeQueries.push(result);
      queryTimings.push({ query: `smoke: ${smoke.name}`, ms: result.durationMs });
      if (!result.ok) problems.push(`smoke query "${smoke.name}": ${result.error ?? `returned ${result.actual ?? 'no row'}, expected ${result.expected}`}`);
    }

    // Fresh statistics before the application comes back: a restored database has none.
    let analyzed = false;
    if (expected.analyze && problems.length === 0) {
      await client.query('ANALYZE');
      analyzed = true;
    }
    return {
      ok: problems.length === 0,
      database,
      tablesChecked,
      rowCountMismatches,
      rowCounts,
      queryTimings,
      schemaVersion: { expected: expectedVersion, actual: version.value, ok: versionOk },
      smokeQueries,
      analyzed,
      problems,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function runSmokeQuery(client: pg.Client, smoke: SmokeQuery): Promise<SmokeResult> {
  const expected = smoke.expect === undefined ? null : String(smoke.expect);
  const started = performance.now();
  const took = (): number => Math.round((performance.now() - started) * 10) / 10;
  try {
    // Read-only, so a smoke query can never change the restored data.
    await client.query('BEGIN READ ONLY');
    const result = await client.query({ text: smoke.sql, rowMode: 'array' });
    const durationMs = took();
    await client.query('COMMIT');
    const row = result.rows[0] as unknown[] | undefined;
    if (!row) return { name: smoke.name, ok: false, expected, actual: null, error: 'returned no row', durationMs };
    const value = row[0];
    const actual = value === null || value === undefined ? null : String(value);
    return { name: smoke.name, ok: expected === null || actual === expected, expected, actual, durationMs };
  } catch (error) {
    const durationMs = took();
    await client.query('ROLLBACK').catch(() => undefined);
    return { name: smoke.name, ok: false, expected, actual: null, error: (error as Error).message, durationMs };
  }
}
