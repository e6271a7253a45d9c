import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPgbouncerController } from '../../app-controllers/pgbouncer/controller.js';
import { PgbouncerAppConfig } from '../../app-controllers/schema.js';
import type { AppController } from '../../app-controllers/types.js';
import { startPgbouncer, type Pgbouncer } from '../../stack/pgbouncer.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';

// Debian's pgbouncer in front of a throwaway PostgreSQL 15 cluster; the controller talks to the
// real admin console.
describe('pgbouncer app controller', () => {
  let cluster: PostgresCluster;
  let bouncer: Pgbouncer;
  const signal = new AbortController().signal;
  const open: pg.Client[] = [];

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    await cluster.sql('CREATE DATABASE app');
    bouncer = await startPgbouncer({ upstreamPort: cluster.port, databases: ['app'], users: { postgres: cluster.password } });
  });

  afterAll(async () => {
    await bouncer?.stop();
    await cluster?.stop();
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.end().catch(() => undefined)));
    // Every test starts from a running pool whatever it left behind.
    await admin('RESUME app').catch(() => undefined);
    await admin('ENABLE app');
  });

  function controller(overrides: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = { PGBOUNCER_ADMIN_PASSWORD: bouncer.adminPassword }): AppController {
    const config = PgbouncerAppConfig.parse({ type: 'pgbouncer', port: bouncer.port, passwordEnv: 'PGBOUNCER_ADMIN_PASSWORD', database: 'app', ...overrides });
    return createPgbouncerController(config, env);
  }

  async function admin(command: string): Promise<Record<string, unknown>[]> {
    const client = new pg.Client(bouncer.adminUrl());
    await client.connect();
    try {
      return (await client.query<Record<string, unknown>>(command)).rows;
    } finally {
      await client.end();
    }
  }

  async function state(): Promise<{ paused: number; disabled: number }> {
    const row = (await admin('SHOW DATABASES')).find((r) => r.name === 'app');
    return { paused: Number(row?.paused), disabled: Number(row?.disabled) };
  }

  async function appClient(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: bouncer.url('app'), connectionTimeoutMillis: 10_000 });
    client.on('error', () => undefined);
    open.push(client);
    await client.connect();
    return client;
  }

  const upstreamSessions = async (): Promise<number> => Number(await cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app'"));

  it('stop returns once pgbouncer holds no server connection; a new client query waits until start resumes the pool', async () => {
    const app = controller({ disable: false });
    const warm = await appClient();
    await warm.query('SELECT 1');
    await warm.end();
    const snapshot = await app.capture(signal);
    expect(snapshot).toEqual({ controller: 'pgbouncer', database: 'app', paused: false, disabled: false });

    await app.stop(snapshot, signal);
    expect(await state()).toEqual({ paused: 1, disabled: 0 });
    expect(await upstreamSessions()).toBe(0);

    let settled = false;
    const query = (async () => {
      const client = new pg.Client({ connectionString: bouncer.url('app'), connectionTimeoutMillis: 20_000 });
      client.on('error', () => undefined);
      open.push(client);
      await client.connect();
      return (await client.query<{ answer: number }>('SELECT 42 AS answer')).rows[0]?.answer;
    })().finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 1_500));
    expect(settled).toBe(false);

    await app.start(snapshot, signal);
    expect(await query).toBe(42);
    expect(await state()).toEqual({ paused: 0, disabled: 0 });
  });

  it('with disable, pgbouncer refuses new client connections while stopped and accepts them after start', async () => {
    const app = controller();
    const snapshot = await app.capture(signal);
    await app.stop(snapshot, signal);
    expect(await state()).toEqual({ paused: 1, disabled: 1 });
    await expect(appClient()).rejects.toThrow(/database "app" is disabled/);

    await app.start(snapshot, signal);
    const client = await appClient();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('stop waits for a session that is still open (session pooling) and finishes when it ends', async () => {
    const app = controller({ disable: false });
    const session = await appClient();
    await session.query('SELECT 1');
    const snapshot = await app.capture(signal);
    let stopped = false;
    const stopping = app.stop(snapshot, signal).then(() => {
      stopped = true;
    });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(stopped).toBe(false);
    await session.end();
    await stopping;
    expect(await upstreamSessions()).toBe(0);
    await app.start(snapshot, signal);
  });

  it('stop gives up after pauseTimeoutSeconds naming the clients still connected; start undoes the pause', async () => {
    const app = controller({ disable: false, pauseTimeoutSeconds: 1 });
    const session = await appClient();
    await session.query('SELECT 1');
    const snapshot = await app.capture(signal);
    const started = Date.now();
    await expect(app.stop(snapshot, signal)).rejects.toThrow(/still holds server connections after 1s \(1 client connection\(s\) to app remain\)\nHINT: .*session pooling/);
    expect(Date.now() - started).toBeLessThan(5_000);
    await app.start(snapshot, signal);
    expect(await state()).toEqual({ paused: 0, disabled: 0 });
    expect((await session.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('stop and start are idempotent: each run twice in a row converges to the same state', async () => {
    const app = controller();
    const snapshot = await app.capture(signal);
    await app.stop(snapshot, signal);
    await app.stop(snapshot, signal);
    expect(await state()).toEqual({ paused: 1, disabled: 1 });
    await app.start(snapshot, signal);
    await app.start(snapshot, signal);
    expect(await state()).toEqual({ paused: 0, disabled: 0 });
  });

  it('start brings back the state capture saw: a pool an operator had paused stays paused', async () => {
    await admin('PAUSE app');
    const app = controller();
    const snapshot = await app.capture(signal);
    expect(snapshot).toMatchObject({ paused: true, disabled: false });
    await app.stop(snapshot, signal);
    await app.start(snapshot, signal);
    expect(await state()).toEqual({ paused: 1, disabled: 0 });
  });

  it('an unknown database is refused before anything changes, with a HINT', async () => {
    const app = controller({ database: 'nope' });
    await expect(app.capture(signal)).rejects.toThrow(/pgbouncer 127\.0\.0\.1:\d+ database nope: pgbouncer has no database nope \(it has app\)\nHINT: .*\[databases\]/);
    await expect(app.stop({ controller: 'pgbouncer' }, signal)).rejects.toThrow(/has no database nope/);
    expect(await state()).toEqual({ paused: 0, disabled: 0 });
  });

  it('a wrong admin password fails with a HINT about admin_users and never shows the password', async () => {
    const wrong = 'not-the-admin-password-4711';
    const app = controller({}, { PGBOUNCER_ADMIN_PASSWORD: wrong });
    const error = await app.capture(signal).then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/cannot connect to the admin console as pgbouncer: .*\nHINT: pgbouncer must be listed in pgbouncer's admin_users/);
    expect(error?.message).not.toContain(wrong);
    await expect(controller({}, {}).capture(signal)).rejects.toThrow(/PGBOUNCER_ADMIN_PASSWORD \(passwordEnv\) is not set/);
  });
});
