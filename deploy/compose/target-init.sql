-- Sample data for the compose stack's target PostgreSQL (docker-compose.yml, service
-- target-postgresql): runs once, when the data volume is empty, in the database POSTGRES_DB
-- (shop) as POSTGRES_USER. pgrunbook backs it up (deploy/compose/pgrunbook.yaml, database shop);
-- the smoke queries there check what is created here.
CREATE TABLE customers (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email      text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers (id),
  total_cents integer NOT NULL CHECK (total_cents >= 0),
  placed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);

INSERT INTO customers (email)
SELECT format('customer%s@example.com', n) FROM generate_series(1, 1000) AS n;

INSERT INTO orders (customer_id, total_cents, placed_at)
SELECT 1 + (n % 1000), (n * 37) % 50000, now() - make_interval(hours => n)
FROM generate_series(1, 20000) AS n;

-- What `pgrunbook ... --database shop` reports as the schema version (schemaVersionQuery).
CREATE TABLE schema_migrations (version text PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20250101000000');

ANALYZE;
