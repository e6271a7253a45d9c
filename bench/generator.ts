// A poorly compressible sample database for the benchmarks: two tables (events ~0.8 kB per row,
// accounts), random words, jsonb and base64 of random bytes, grown in batches to a target size.
import { hrtime } from 'node:process';
import pg from 'pg';
import { log, MB, mb, secondsSince } from './common.js';

/** Generated rows per INSERT ... SELECT generate_series. */
const BATCH_ROWS = 100_000;

const SCHEMA_SQL = `
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE public.accounts (
  id bigint PRIMARY KEY,
  name varchar(120) NOT NULL,
  email varchar(200) NOT NULL,
  country char(2) NOT NULL,
  plan varchar(20) NOT NULL,
  created_at timestamptz NOT NULL,
  notes text
);
CREATE TABLE public.events (
  id bigint PRIMARY KEY,
  account_id bigint NOT NULL,
  occurred_at timestamptz NOT NULL,
  kind varchar(40) NOT NULL,
  source varchar(80) NOT NULL,
  subject varchar(250) NOT NULL,
  payload jsonb NOT NULL,
  body text NOT NULL
);
`;

// Session-local helper: a random word from a fixed vocabulary.
const WORD_FN = `
CREATE FUNCTION pg_temp.w() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT (ARRAY['alpha','bravo','charlie','delta','echo','foxtrot','golf','hotel','india','juliet',
                'kilo','lima','mike','november','oscar','papa','quebec','romeo','sierra','tango',
                'uniform','victor','whiskey','xray','yankee','zulu','invoice','payment','refund',
                'signup','login','logout','upload','download','export','import','archive','restore',
                'billing','shipping','warehouse','checkout','session','profile','settings','report'])[1 + floor(random() * 46)::int]
$$;`;

// ~0.8 kB per row; the base64 body of random bytes keeps gzip from shrinking the dump much.
const INSERT_EVENTS = `
INSERT INTO public.events (id, account_id, occurred_at, kind, source, subject, payload, body)
SELECT g,
       1 + floor(random() * 100000)::bigint,
       timestamptz '2023-01-01 00:00:00+00' + random() * interval '730 days',
       pg_temp.w() || '.' || pg_temp.w(),
       pg_temp.w() || '-' || pg_temp.w() || '-' || floor(random() * 1000)::int,
       pg_temp.w() || ' ' || pg_temp.w() || ' ' || pg_temp.w() || ' ' || pg_temp.w() || ' ' || md5(random()::text),
       jsonb_build_object(
         'amount', round((random() * 10000)::numeric, 2),
         'quantity', floor(random() * 100)::int,
         'score', random(),
         'ref', md5(random()::text),
         'tags', jsonb_build_array(pg_temp.w(), pg_temp.w()),
         'flags', jsonb_build_array(random() < 0.5, floor(random() * 1000)::int)),
       encode(gen_random_bytes(384), 'base64')
  FROM generate_series($1::bigint, $2::bigint) AS g`;

const INSERT_ACCOUNTS = `
INSERT INTO public.accounts (id, name, email, country, plan, created_at, notes)
SELECT g,
       initcap(pg_temp.w()) || ' ' || initcap(pg_temp.w()) || ' ' || floor(random() * 10000)::int,
       pg_temp.w() || '.' || substr(md5(random()::text), 1, 10) || '@' || pg_temp.w() || '.example',
       (ARRAY['DE','FR','US','JP','BR','IN','GB','NL','SE','ES'])[1 + floor(random() * 10)::int],
       (ARRAY['free','team','business','enterprise'])[1 + floor(random() * 4)::int],
       timestamptz '2020-01-01 00:00:00+00' + random() * interval '1500 days',
       encode(gen_random_bytes(192), 'base64')
  FROM generate_series($1::bigint, $2::bigint) AS g`;

export class DataGenerator {
  private events = 0;
  private accounts = 0;

  private constructor(
    private readonly client: pg.Client,
    /** pg_database_size of the empty schema. */
    private readonly baseSize: number,
  ) {}

  static async create(url: string): Promise<DataGenerator> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(SCHEMA_SQL);
    await client.query(WORD_FN);
    const { rows } = await client.query<{ size: string }>('SELECT pg_database_size(current_database()) AS size');
    return new DataGenerator(client, Number(rows[0]!.size));
  }

  async databaseSize(): Promise<number> {
    const { rows } = await this.client.query<{ size: string }>('SELECT pg_database_size(current_database()) AS size');
    return Number(rows[0]!.size);
  }

  /** Inserts batches until pg_database_size reaches `target` bytes, then VACUUM ANALYZE + CHECKPOINT. */
  async growTo(target: number): Promise<number> {
    let size = await this.databaseSize();
    const started = hrtime.bigint();
    while (size < target) {
      // Database bytes per event row (accounts included), from what is there so far.
      const perRow = this.events > 0 ? (size - this.baseSize) / this.events : 1000;
      const rows = Math.min(BATCH_ROWS, Math.max(1000, Math.ceil(((target - size) / perRow) * 1.01)));
      const from = this.events + 1;
      const to = this.events + rows;
      await this.client.query(INSERT_EVENTS, [from, to]);
      this.events = to;
      // The second, smaller table grows along: one account per 20 events.
      const accountsTo = Math.floor(this.events / 20);
      if (accountsTo > this.accounts) {
        await this.client.query(INSERT_ACCOUNTS, [this.accounts + 1, accountsTo]);
        this.accounts = accountsTo;
      }
      size = await this.databaseSize();
      const rate = size / MB / Math.max(secondsSince(started), 0.001);
      log(`  generated ${this.events.toLocaleString('en')} events, ${this.accounts.toLocaleString('en')} accounts: ${mb(size)} MB of ${mb(target)} MB (${rate.toFixed(0)} MB/s)`);
    }
    log('  VACUUM ANALYZE + CHECKPOINT ...');
    await this.client.query('VACUUM ANALYZE');
    await this.client.query('CHECKPOINT');
    size = await this.databaseSize();
    return size;
  }

  get rows(): { events: number; accounts: number } {
    return { events: this.events, accounts: this.accounts };
  }

  /** Exact count(*) of both tables, timed: what pgrunbook's row counting costs on its own. */
  async timeRowCounts(): Promise<number> {
    const start = hrtime.bigint();
    await this.client.query('SELECT count(*) FROM ONLY public.accounts');
    await this.client.query('SELECT count(*) FROM ONLY public.events');
    return secondsSince(start);
  }

  async close(): Promise<void> {
    await this.client.end();
  }
}
