import pg from 'pg';

/**
 * What a database holds, reduced to hashes, for "the restored copy equals the source" assertions.
 * Keys are quoted qualified names (`format('%I.%I')`), large objects are keyed by OID, and
 * sequences map to `"<last_value>/<is_called>"`.
 */
export interface ContentFingerprint {
  tables: Record<string, { rows: number; md5: string }>;
  largeObjects: Record<string, string>;
  sequences: Record<string, string>;
}

// User relations only: no system schemas (pg_catalog, pg_toast, pg_temp_N, information_schema)
// and nothing an extension owns (its CREATE EXTENSION script recreates that content).
const USER_RELATIONS = `
SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind AS kind
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'S')
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1`;

/**
 * Fingerprints every plain table (partitions included, partitioned parents excluded so rows count
 * once), every large object and every sequence. Row hashes are sorted, so physical row order
 * (which a restore does not preserve) does not matter.
 */
export async function contentFingerprint(connectionString: string): Promise<ContentFingerprint> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    // Row text depends on these settings; pin them so fingerprints compare across clusters.
    await client.query(`SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
      SET extra_float_digits = 1; SET bytea_output = 'hex'`);
    // One snapshot for all relations, like pg_dump takes.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const fingerprint: ContentFingerprint = { tables: {}, largeObjects: {}, sequences: {} };
    const relations = await client.query<{ name: string; kind: 'r' | 'S' }>(USER_RELATIONS);
    for (const { name, kind } of relations.rows) {
      if (kind === 'r') {
        // ROW(t.*) rather than t: a column named t would shadow the row alias.
        const { rows } = await client.query<{ rows: number; md5: string }>(
          `SELECT count(*)::int AS rows, md5(coalesce(string_agg(h, '' ORDER BY h COLLATE "C"), '')) AS md5
           FROM (SELECT md5(ROW(t.*)::text) AS h FROM ${name} AS t) AS hashes`,
        );
        fingerprint.tables[name] = rows[0]!;
      } else {
        const { rows } = await client.query<{ last_value: string; is_called: boolean }>(
          `SELECT last_value::text, is_called FROM ${name}`,
        );
        fingerprint.sequences[name] = `${rows[0]!.last_value}/${rows[0]!.is_called}`;
      }
    }
    const objects = await client.query<{ oid: string; md5: string }>(
      'SELECT oid::text, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid',
    );
    for (const { oid, md5 } of objects.rows) fingerprint.largeObjects[oid] = md5;
    await client.query('COMMIT');
    return fingerprint;
  } finally {
    await client.end();
  }
}
