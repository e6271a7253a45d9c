import pg from 'pg';

/**
 * Sample content for throwaway databases (`pgrunbook dev`, tests, benchmarks). It is shaped to
 * trip up a backup tool: quoted and non-ASCII identifiers, contrib extensions, a partitioned
 * table, views and a materialized view, sequences in every state, large objects with binary
 * content, and text that COPY must escape. Everything is deterministic (generate_series plus md5
 * based choices, fixed timestamps and large-object OIDs), so two loads have equal content.
 */

const DEFAULT_ROWS = 5000;

/**
 * SQL that populates an EMPTY database; run it in one transaction so a failure leaves nothing
 * behind (it is not re-runnable: tables are created without IF NOT EXISTS on purpose, so a second
 * run fails instead of duplicating rows). The size of `public.processed_updates` comes from the
 * setting `pgrunbook.sample_rows` (default 5000), e.g. `SET pgrunbook.sample_rows = 100000`.
 */
export const SAMPLE_DATABASE_SQL = String.raw`
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE SCHEMA IF NOT EXISTS billing;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS "Ops Data";
COMMENT ON SCHEMA "Ops Data" IS 'Betriebsdaten – operational data';

-- Deterministic "random" choice in [0, n): the first 28 bits of md5(seed). Session-local.
CREATE FUNCTION pg_temp.pick(seed text, n int) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT ('x' || substr(md5(seed), 1, 7))::bit(28)::int % n $$;

-- What schema-version probes (Alembic) read.
CREATE TABLE public.alembic_version (
  version_num varchar(32) NOT NULL CONSTRAINT alembic_version_pkc PRIMARY KEY
);
INSERT INTO public.alembic_version VALUES ('4f2a9c1b7d3e');

CREATE TABLE public.organizations (
  id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  slug citext NOT NULL UNIQUE,
  name text NOT NULL,
  settings hstore NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL
);
INSERT INTO public.organizations (slug, name, settings, created_at)
SELECT o.slug, o.name,
       hstore(ARRAY['plan', 'region', 'seats'],
              ARRAY[(ARRAY['free', 'team', 'enterprise'])[1 + pg_temp.pick('plan' || o.slug, 3)],
                    (ARRAY['eu-central-1', 'us-east-1', 'ap-northeast-1'])[1 + pg_temp.pick('region' || o.slug, 3)],
                    (5 + pg_temp.pick('seats' || o.slug, 500))::text]),
       timestamptz '2021-03-01 09:00:00+00' + o.n * interval '17 days 3 hours'
FROM (VALUES
  (1, 'Acme', 'Acme Corporation'),
  (2, 'mueller-soehne', 'Müller & Söhne GmbH'),
  (3, 'societe-eaux', 'Société Générale des Eaux'),
  (4, 'omega-labs', 'Ωmega Λabs ΑΕ'),
  (5, 'roga-kopyta', 'Рога и копыта'),
  (6, 'sample-kk', '株式会社サンプル'),
  (7, 'mithal', 'شركة المثال'),
  (8, 'namuna', 'नमूना प्राइवेट लिमिटेड'),
  (9, 'rocket', '🚀 Rocket Ventures'),
  (10, 'zurich-analytics', 'Zürich Analytics AG'),
  (11, 'sao-paulo-dados', 'São Paulo Dados Ltda'),
  (12, 'beijing-shili', '北京示例科技有限公司')
) AS o(n, slug, name)
ORDER BY o.n;

CREATE TABLE public.projects (
  id bigserial PRIMARY KEY,
  organization_id int NOT NULL REFERENCES public.organizations ON DELETE CASCADE,
  name text NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
  metadata jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  UNIQUE (organization_id, name)
);
CREATE INDEX projects_name_trgm ON public.projects USING gin (name gin_trgm_ops);
INSERT INTO public.projects (organization_id, name, status, metadata, created_at, updated_at)
SELECT 1 + (i - 1) % 12,
       (ARRAY['Billing API', 'Data Lake', 'Mobile App', 'Auth Service', 'Search', 'Reporting',
              'Webshop', 'Fahrplan', 'Доставка', 'アナリティクス'])[1 + (i - 1) % 10]
         || ' ' || (ARRAY['v1', 'v2', 'Next', 'Legacy'])[1 + (i - 1) / 10],
       (ARRAY['active', 'active', 'active', 'paused', 'archived'])[1 + pg_temp.pick('status' || i, 5)],
       jsonb_build_object(
         'tier', (ARRAY['bronze', 'silver', 'gold'])[1 + pg_temp.pick('tier' || i, 3)],
         'retention_days', 7 * (1 + pg_temp.pick('retention' || i, 12)),
         'tags', to_jsonb(string_to_array((ARRAY['prod,pci', 'staging,eu', 'internal,beta'])[1 + i % 3], ',')),
         'owner', CASE WHEN i % 4 = 0 THEN NULL ELSE 'team-' || (1 + i % 6) END),
       timestamptz '2022-01-10 08:00:00+00' + i * interval '9 days 5 hours',
       timestamptz '2024-06-01 12:00:00+00' + i * interval '2 days 7 minutes'
FROM generate_series(1, 40) AS i;

CREATE TABLE public.users (
  id uuid PRIMARY KEY,
  organization_id int NOT NULL REFERENCES public.organizations,
  email citext NOT NULL UNIQUE,
  email_domain text GENERATED ALWAYS AS (split_part(email::text, '@', 2)) STORED,
  display_name text NOT NULL,
  password_hash text NOT NULL,
  is_admin boolean NOT NULL DEFAULT false,
  last_login_at timestamptz,
  created_at timestamptz NOT NULL
);
INSERT INTO public.users (id, organization_id, email, display_name, password_hash, is_admin, last_login_at, created_at)
SELECT md5('user-' || i)::uuid,
       1 + pg_temp.pick('user-org' || i, 12),
       -- Mixed case on purpose: citext compares case-insensitively, a restore must keep the case.
       (ARRAY['anna', 'Jose', 'zoe', 'Oyvind', 'oleg', 'alex', 'Sakura', 'mohammed', 'priya', 'li'])[1 + i % 10]
         || '.' || i || '@' || (ARRAY['example.com', 'Example.org', 'beispiel.de', 'exemple.fr'])[1 + pg_temp.pick('domain' || i, 4)],
       (ARRAY['Anna', 'José', 'Zoë', 'Øyvind', 'Олег', 'Αλέξανδρος', 'さくら', 'محمد', 'प्रिया', '李'])[1 + i % 10]
         || ' ' || (ARRAY['Schmidt', 'García', 'Ó Briain', 'Łukasiewicz', 'Иванова', 'Παπαδόπουλος', '山田', 'الحسن', 'शर्मा', '王'])[1 + pg_temp.pick('last' || i, 10)],
       'sha256$' || encode(digest('password-' || i, 'sha256'), 'hex'),
       i % 17 = 0,
       CASE WHEN i % 7 = 0 THEN NULL ELSE timestamptz '2025-01-01 00:00:00+00' + pg_temp.pick('login' || i, 525600) * interval '1 minute' END,
       timestamptz '2022-02-01 00:00:00+00' + i * interval '3 days 1 hour 12 minutes'
FROM generate_series(1, 200) AS i;

-- The big table; its size is the knob (pgrunbook.sample_rows).
CREATE TABLE public.processed_updates (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES public.projects ON DELETE CASCADE,
  update_id text NOT NULL UNIQUE,
  kind text NOT NULL,
  payload jsonb NOT NULL,
  processed_at timestamptz NOT NULL
);
CREATE INDEX processed_updates_project_time ON public.processed_updates (project_id, processed_at);
COMMENT ON TABLE public.processed_updates IS 'Idempotency log: one row per update a worker has applied';
INSERT INTO public.processed_updates (project_id, update_id, kind, payload, processed_at)
SELECT 1 + pg_temp.pick('pu-project' || i, 40),
       'upd_' || substr(md5('update-' || i), 1, 20),
       (ARRAY['deploy', 'config_change', 'scale', 'rollback', 'migration'])[1 + pg_temp.pick('kind' || i, 5)],
       jsonb_build_object(
         'seq', i,
         'actor', md5('user-' || (1 + pg_temp.pick('actor' || i, 200)))::uuid,
         'replicas', 1 + pg_temp.pick('replicas' || i, 8),
         'ratio', round(pg_temp.pick('ratio' || i, 10000) / 10000.0, 4),
         'note', CASE WHEN i % 97 = 0 THEN 'Überprüft ✅ проверено 確認済み' END),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '7 minutes 13 seconds'
FROM generate_series(1, coalesce(nullif(current_setting('pgrunbook.sample_rows', true), '')::int, ${DEFAULT_ROWS})) AS i;

CREATE VIEW public.project_activity WITH (security_invoker = true) AS
SELECT p.id, o.name AS organization, p.name, p.status,
       count(u.id) AS updates, max(u.processed_at) AS last_processed_at
FROM public.projects p
JOIN public.organizations o ON o.id = p.organization_id
LEFT JOIN public.processed_updates u ON u.project_id = p.id
GROUP BY p.id, o.name;

-- Large objects live outside any table; fixed OIDs keep them comparable across databases.
CREATE TABLE public.attachments (
  id int PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES public.projects,
  file_name text NOT NULL,
  mime_type text NOT NULL,
  content_oid oid NOT NULL UNIQUE,
  sha256 bytea NOT NULL,
  preview bytea
);
INSERT INTO public.attachments (id, project_id, file_name, mime_type, content_oid, sha256, preview)
SELECT a.id, a.project_id, a.file_name, a.mime_type, lo_from_bytea(a.oid, a.content), digest(a.content, 'sha256'), substr(a.content, 1, 16)
FROM (VALUES
  (1, 1, 'invoice-2024-03.pdf', 'application/pdf', 910001,
   convert_to('%PDF-1.7' || chr(10), 'UTF8') || '\x000000ff00fe0d0a1a00'::bytea || convert_to('%%EOF', 'UTF8')),
  (2, 2, 'logo.png', 'image/png', 910002,
   '\x89504e470d0a1a0a0000000d49484452000000100000001008060000001ff3ff610000000049454e44ae426082'::bytea),
  (3, 3, 'Grüße-🌍.txt', 'text/plain; charset=utf-8', 910003,
   convert_to('Grüße · привет · こんにちは · مرحبا · नमस्ते · 👋🏽', 'UTF8')),
  -- 256 KiB: spans many pg_largeobject pages.
  (4, 5, 'blob.bin', 'application/octet-stream', 910004,
   (SELECT string_agg(decode(md5('blob-' || b), 'hex'), ''::bytea ORDER BY b) FROM generate_series(1, 16384) AS b)),
  (5, 8, 'empty.dat', 'application/octet-stream', 910005, ''::bytea)
) AS a(id, project_id, file_name, mime_type, oid, content);
COMMENT ON LARGE OBJECT 910001 IS 'Rechnung März 2024';

CREATE TYPE billing.invoice_status AS ENUM ('draft', 'open', 'paid', 'void');
CREATE SEQUENCE billing.invoice_number_seq START 1000;
CREATE TABLE billing.invoices (
  id bigserial,
  organization_id int NOT NULL REFERENCES public.organizations,
  number text NOT NULL,
  status billing.invoice_status NOT NULL,
  issued_on date NOT NULL,
  amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
  currency char(3) NOT NULL,
  lines jsonb NOT NULL,
  PRIMARY KEY (id, issued_on)
) PARTITION BY RANGE (issued_on);
CREATE TABLE billing.invoices_2023 PARTITION OF billing.invoices FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE billing.invoices_2024 PARTITION OF billing.invoices FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE billing.invoices_2025 PARTITION OF billing.invoices FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE billing.invoices_default PARTITION OF billing.invoices DEFAULT;
INSERT INTO billing.invoices (organization_id, number, status, issued_on, amount, currency, lines)
SELECT 1 + pg_temp.pick('inv-org' || i, 12),
       'INV-' || nextval('billing.invoice_number_seq'),
       (ARRAY['draft', 'open', 'paid', 'paid', 'paid', 'void'])[1 + pg_temp.pick('inv-status' || i, 6)]::billing.invoice_status,
       date '2023-01-01' + (i * 19) / 10,
       10 + pg_temp.pick('amount' || i, 250000) / 100.0,
       (ARRAY['EUR', 'USD', 'JPY', 'GBP'])[1 + pg_temp.pick('currency' || i, 4)],
       jsonb_build_array(
         jsonb_build_object('sku', 'SEAT', 'qty', 1 + pg_temp.pick('qty' || i, 50)),
         jsonb_build_object('sku', 'STORAGE-GB', 'qty', pg_temp.pick('gb' || i, 2000)))
FROM generate_series(1, 600) AS i
ORDER BY i;

CREATE TABLE billing.payments (
  id bigserial PRIMARY KEY,
  invoice_id bigint NOT NULL,
  invoice_issued_on date NOT NULL,
  paid_at timestamptz NOT NULL,
  amount numeric(12, 2) NOT NULL,
  method text NOT NULL,
  FOREIGN KEY (invoice_id, invoice_issued_on) REFERENCES billing.invoices (id, issued_on)
);
INSERT INTO billing.payments (invoice_id, invoice_issued_on, paid_at, amount, method)
SELECT id, issued_on, (issued_on + time '10:30' + pg_temp.pick('paid' || id, 30) * interval '1 day') AT TIME ZONE 'UTC', amount,
       (ARRAY['card', 'sepa_debit', 'wire', 'コンビニ払い'])[1 + pg_temp.pick('method' || id, 4)]
FROM billing.invoices
WHERE status = 'paid'
ORDER BY id;

CREATE MATERIALIZED VIEW billing.monthly_revenue AS
SELECT date_trunc('month', issued_on::timestamp)::date AS month, currency, count(*) AS invoices, sum(amount) AS revenue
FROM billing.invoices
WHERE status IN ('open', 'paid')
GROUP BY 1, 2;
CREATE UNIQUE INDEX monthly_revenue_key ON billing.monthly_revenue (month, currency);

CREATE TABLE audit.events (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  operation text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
  row_id text,
  row_data jsonb,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION audit.record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit.events (table_name, operation, row_id, row_data)
  VALUES (format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_OP,
          CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
          to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END));
  RETURN NULL;
END
$$;
INSERT INTO audit.events (table_name, operation, row_id, row_data, recorded_at)
SELECT 'public.projects',
       (ARRAY['INSERT', 'UPDATE', 'UPDATE', 'UPDATE', 'DELETE'])[1 + pg_temp.pick('op' || i, 5)],
       (1 + pg_temp.pick('row' || i, 40))::text,
       jsonb_build_object('status', (ARRAY['active', 'paused', 'archived'])[1 + pg_temp.pick('st' || i, 3)], 'by', 'team-' || (1 + i % 6)),
       timestamptz '2024-02-01 00:00:00+00' + i * interval '11 hours 23 minutes'
FROM generate_series(1, 300) AS i;
-- Created after the seed rows: the trigger stamps now(), which would make loads differ.
CREATE TRIGGER projects_audit AFTER INSERT OR UPDATE OR DELETE ON public.projects
  FOR EACH ROW EXECUTE FUNCTION audit.record_change();

-- Non-ASCII identifiers, and values COPY must escape (tab, newline, backslash, quotes, NULL vs '').
CREATE SEQUENCE "Ops Data".incident_number_seq;
CREATE TABLE "Ops Data"."Störungen" (
  id int PRIMARY KEY,
  "Priorität" smallint NOT NULL CHECK ("Priorität" BETWEEN 1 AND 5),
  titel text NOT NULL,
  beschreibung text,
  tags text[] NOT NULL DEFAULT '{}',
  "eröffnet_am" timestamptz NOT NULL
);
INSERT INTO "Ops Data"."Störungen" VALUES
  (1, 1, 'Datenbank nicht erreichbar', 'Primärknoten antwortet nicht; Failover läuft.', '{db,kritisch}', '2024-03-04 02:17:00+00'),
  (2, 2, 'Сбой репликации', 'Отставание реплики > 5 минут', '{replication}', '2024-03-09 11:02:00+00'),
  (3, 3, 'Καθυστέρηση αντιγράφων ασφαλείας', NULL, '{}', '2024-04-12 23:45:00+00'),
  (4, 2, 'バックアップが失敗しました', 'ディスク容量不足（残り 3%）', '{backup,ストレージ}', '2024-05-01 06:30:00+00'),
  (5, 4, 'فشل النسخ الاحتياطي', 'تم استعادة الخدمة', '{backup}', '2024-05-20 14:00:00+00'),
  (6, 3, 'बैकअप धीमा है', '', '{performance}', '2024-06-02 08:15:00+00'),
  (7, 5, 'Emoji overload 🔥🐘💾', 'Family: 👨‍👩‍👧‍👦, flag: 🇩🇪, ' || E'combining e\u0301 vs precomposed \u00e9', '{"with space","quote\"inside"}', '2024-07-07 07:07:07+00'),
  (8, 4, E'Tab\there, newline\nthere', E'Backslash \\ and \\N is not NULL; ''single'' "double"', '{escaping}', '2024-08-15 16:45:00+00');
SELECT setval('"Ops Data".incident_number_seq', 42, false);

CREATE VIEW "Ops Data"."offene Störungen" AS
SELECT id, "Priorität", titel FROM "Ops Data"."Störungen" WHERE "Priorität" <= 2;

DROP FUNCTION pg_temp.pick(text, int);
`;

/** Loads SAMPLE_DATABASE_SQL into an empty database in one transaction. */
export async function loadSampleData(connectionString: string, options: { rows?: number } = {}): Promise<void> {
  const rows = options.rows ?? DEFAULT_ROWS;
  if (!Number.isSafeInteger(rows) || rows < 0) throw new RangeError(`rows must be a non-negative integer, got ${rows}`);
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('pgrunbook.sample_rows', $1, true)", [String(rows)]);
    await client.query(SAMPLE_DATABASE_SQL);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    await client.end();
  }
}
