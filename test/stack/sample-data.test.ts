import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTool } from '../../process/run.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';
import { loadSampleData } from '../../stack/sample-data.js';
import { contentFingerprint, type ContentFingerprint } from '../support/content.js';

const EXPECTED_ROWS: Record<string, number> = {
  '"Ops Data"."Störungen"': 8,
  'audit.events': 300,
  'billing.invoices_2023': 192,
  'billing.invoices_2024': 192,
  'billing.invoices_2025': 192,
  'billing.invoices_default': 24,
  'billing.payments': 304,
  'public.alembic_version': 1,
  'public.attachments': 5,
  'public.organizations': 12,
  'public.processed_updates': 5000,
  'public.projects': 40,
  'public.users': 200,
};

/** Names of the tables whose content differs between two fingerprints. */
function changedTables(a: ContentFingerprint, b: ContentFingerprint): string[] {
  const names = new Set([...Object.keys(a.tables), ...Object.keys(b.tables)]);
  return [...names].filter((name) => JSON.stringify(a.tables[name]) !== JSON.stringify(b.tables[name])).sort();
}

describe('sample data', () => {
  let cluster: PostgresCluster;
  let workDir: string;
  let source: ContentFingerprint;

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-sample-'));
    await cluster.sql('CREATE DATABASE sample');
    await loadSampleData(cluster.url('sample'));
    source = await contentFingerprint(cluster.url('sample'));
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('fingerprints every table (partitions, not their parent), large object and sequence', () => {
    expect(Object.fromEntries(Object.entries(source.tables).map(([name, t]) => [name, t.rows]))).toEqual(EXPECTED_ROWS);
    expect(Object.keys(source.largeObjects)).toEqual(['910001', '910002', '910003', '910004', '910005']);
    expect(source.largeObjects['910005']).toBe('d41d8cd98f00b204e9800998ecf8427e'); // md5 of the empty object
    expect(source.sequences).toMatchObject({
      '"Ops Data".incident_number_seq': '42/false',
      'billing.invoice_number_seq': '1599/true',
      'public.processed_updates_id_seq': '5000/true',
    });
  });

  it('has the schema objects a backup must carry', async () => {
    const q = (sql: string): Promise<string> => cluster.sql(sql, 'sample');
    expect(await q('SELECT version_num FROM public.alembic_version')).toBe('4f2a9c1b7d3e');
    expect(await q("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql'"))
      .toBe('citext,hstore,pg_trgm,pgcrypto');
    expect(await q("SELECT reloptions::text FROM pg_class WHERE oid = 'public.project_activity'::regclass")).toBe('{security_invoker=true}');
    expect(Number(await q('SELECT count(*) FROM billing.monthly_revenue'))).toBeGreaterThan(0);
    expect(await q("SELECT count(*) FROM pg_trigger WHERE tgname = 'projects_audit'")).toBe('1');
  });

  it('scales the big table with rows', async () => {
    await cluster.sql('CREATE DATABASE small');
    await loadSampleData(cluster.url('small'), { rows: 50 });
    expect((await contentFingerprint(cluster.url('small'))).tables['public.processed_updates']?.rows).toBe(50);
  });

  it('is deterministic, and the fingerprint notices a single changed value', async () => {
    await cluster.sql('CREATE DATABASE twin');
    await loadSampleData(cluster.url('twin'));
    expect(await contentFingerprint(cluster.url('twin'))).toEqual(source);

    await cluster.sql(`UPDATE "Ops Data"."Störungen" SET titel = 'Sauvegarde lente' WHERE id = 6`, 'twin');
    const changed = await contentFingerprint(cluster.url('twin'));
    expect(changedTables(source, changed)).toEqual(['"Ops Data"."Störungen"']);

    // Back to the original value: the row now sits elsewhere on disk, the fingerprint is equal again.
    await cluster.sql(`UPDATE "Ops Data"."Störungen" SET titel = 'बैकअप धीमा है' WHERE id = 6`, 'twin');
    expect(await contentFingerprint(cluster.url('twin'))).toEqual(source);

    await cluster.sql(`SELECT lo_put(910004, 1000, '\\x00'::bytea)`, 'twin');
    await cluster.sql(`SELECT setval('"Ops Data".incident_number_seq', 42, true)`, 'twin');
    const tampered = await contentFingerprint(cluster.url('twin'));
    expect(tampered.largeObjects['910004']).not.toBe(source.largeObjects['910004']);
    expect(tampered.sequences['"Ops Data".incident_number_seq']).toBe('42/true');
  }, 60_000);

  it('survives a pg_dump -Fc / pg_restore round trip with equal content', async () => {
    const archive = join(workDir, 'sample.dump');
    const env = cluster.env();
    await runTool(join(cluster.binDir, 'pg_dump'), ['-Fc', '-d', 'sample', '-f', archive], { env });
    await cluster.sql('CREATE DATABASE restored');
    await runTool(join(cluster.binDir, 'pg_restore'), ['--exit-on-error', '-d', 'restored', archive], { env });
    expect(await contentFingerprint(cluster.url('restored'))).toEqual(source);
    // pg_dump splits this view (it depends on a primary key via GROUP BY); the option must survive.
    expect(await cluster.sql("SELECT reloptions::text FROM pg_class WHERE oid = 'public.project_activity'::regclass", 'restored'))
      .toBe('{security_invoker=true}');
  }, 60_000);
});
