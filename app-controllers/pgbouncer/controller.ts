import pg from 'pg';
import { registerSecret } from '../../process/secrets.js';
import { AppControllerError, messageOf } from '../errors.js';
import type { PgbouncerAppConfig } from '../schema.js';
import { expectSnapshot } from '../snapshot.js';
import type { AppController, AppSnapshot } from '../types.js';
import { abortReason, sleep } from '../wait.js';

export type PgbouncerSnapshot = AppSnapshot & { controller: 'pgbouncer'; database: string; paused: boolean; disabled: boolean };

// pgbouncer answers these when the database is already in the requested state; for an idempotent
// stop or start they mean "done".
const ALREADY_PAUSED = /already (paused|suspended)/i;
const NOT_PAUSED = /not paused/i;

/**
 * Holds an application's database traffic at pgbouncer: stop = DISABLE (no new client
 * connections, when `disable`) + PAUSE (waits until pgbouncer has released every server
 * connection to the database); start = RESUME + ENABLE, back to the state capture saw (a database
 * an operator had paused before stays paused). Talks to the admin console (simple query protocol).
 */
export function createPgbouncerController(config: PgbouncerAppConfig, env: NodeJS.ProcessEnv): AppController {
  const describe = (): string => `pgbouncer ${config.host}:${config.port} database ${config.database}`;
  const db = adminIdentifier(config.database);

  function password(): string | undefined {
    if (config.passwordEnv === undefined) return undefined;
    const value = env[config.passwordEnv];
    if (value === undefined) {
      throw new AppControllerError(describe(), `the environment variable ${config.passwordEnv} (passwordEnv) is not set`, `set ${config.passwordEnv} in the worker's environment to the password of pgbouncer admin user ${config.user}`);
    }
    registerSecret(value);
    return value;
  }

  async function connect(signal: AbortSignal): Promise<pg.Client> {
    if (signal.aborted) throw abortReason(signal);
    const client = new pg.Client({
      host: config.host,
      port: config.port,
      user: config.user,
      password: password(),
      database: 'pgbouncer',
      connectionTimeoutMillis: 15_000,
      application_name: 'pgrunbook',
    });
    client.on('error', () => undefined); // a dropped admin connection surfaces as a failed query instead
    try {
      await client.connect();
      return client;
    } catch (error) {
      await client.end().catch(() => undefined);
      const message = messageOf(error);
      const auth = /password|authentication|not allowed|no such user/i.test(message);
      throw new AppControllerError(
        describe(),
        `cannot connect to the admin console as ${config.user}: ${message}`,
        auth
          ? `${config.user} must be listed in pgbouncer's admin_users and its password set in ${config.passwordEnv ? `$${config.passwordEnv}` : 'the environment variable named by passwordEnv'}`
          : 'check that pgbouncer is running and listens on this host and port (listen_addr, listen_port in pgbouncer.ini)',
        { cause: error },
      );
    }
  }

  /** Runs admin commands on one connection; the connection is destroyed when `signal` aborts. */
  async function withAdmin<T>(signal: AbortSignal, use: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = await connect(signal);
    const onAbort = (): void => void client.end().catch(() => undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      return await use(client);
    } catch (error) {
      if (signal.aborted) throw abortReason(signal);
      throw error;
    } finally {
      signal.removeEventListener('abort', onAbort);
      await client.end().catch(() => undefined);
    }
  }

  /** An admin command; `done` matches the errors that mean the database already is in that state. */
  async function admin(client: pg.Client, command: string, done?: RegExp): Promise<'ran' | 'already'> {
    try {
      await client.query(command);
      return 'ran';
    } catch (error) {
      const message = messageOf(error);
      if (done?.test(message)) return 'already';
      throw new AppControllerError(
        describe(),
        `${command.split(' ')[0]} failed: ${message}`,
        /no such database/i.test(message)
          ? `use the name of an entry in the [databases] section of pgbouncer.ini (now ${config.database})`
          : `${config.user} must be in admin_users (not only stats_users) to run ${command.split(' ')[0]}`,
        { cause: error },
      );
    }
  }

  async function readState(client: pg.Client): Promise<{ paused: boolean; disabled: boolean }> {
    const result = await client.query<Record<string, unknown>>('SHOW DATABASES');
    const row = result.rows.find((r) => r.name === config.database);
    if (!row) {
      throw new AppControllerError(
        describe(),
        `pgbouncer has no database ${config.database} (it has ${result.rows.map((r) => String(r.name)).filter((n) => n !== 'pgbouncer').join(', ') || 'none'})`,
        'set database: to the name of an entry in the [databases] section of pgbouncer.ini',
      );
    }
    return { paused: truthy(row.paused), disabled: truthy(row.disabled) };
  }

  /** Server connections pgbouncer still holds for the database (the pause is complete at 0). */
  async function serverConnections(client: pg.Client): Promise<number> {
    const result = await client.query<Record<string, unknown>>('SHOW SERVERS');
    return result.rows.filter((r) => r.database === config.database).length;
  }

  async function clientConnections(client: pg.Client): Promise<number> {
    const result = await client.query<Record<string, unknown>>('SHOW CLIENTS');
    return result.rows.filter((r) => r.database === config.database).length;
  }

  return {
    type: 'pgbouncer',
    describe,
    capture: (signal) =>
      withAdmin(signal, async (client): Promise<PgbouncerSnapshot> => ({ controller: 'pgbouncer', database: config.database, ...(await readState(client)) })),

    stop: (_snapshot, signal) =>
      withAdmin(signal, async (client) => {
        await readState(client); // a clear error for an unknown database before anything changes
        if (config.disable) await admin(client, `DISABLE ${db}`);
        const timeoutMs = config.pauseTimeoutSeconds * 1000;
        const deadline = Date.now() + timeoutMs;
        // PAUSE returns once every server connection is released; it blocks this connection until
        // then, so it runs on its own and is given up (the pause stays in effect) at the deadline.
        const pauseEnded = new AbortController();
        const pauseSignal = AbortSignal.any([signal, pauseEnded.signal]);
        const pausing = withAdmin(pauseSignal, (pauser) => admin(pauser, `PAUSE ${db}`, ALREADY_PAUSED));
        pausing.catch(() => undefined); // awaited through the race below; ended on purpose at the deadline
        const deadlinePassed = sleep(timeoutMs, pauseSignal).then(
          () => 'timeout' as const,
          () => 'ended' as const,
        );
        let outcome: 'ran' | 'already' | 'timeout' | 'ended';
        try {
          outcome = await Promise.race([pausing, deadlinePassed]);
        } finally {
          pauseEnded.abort(); // closes the PAUSE connection if it still waits, and the timer
        }
        if (signal.aborted) throw abortReason(signal);
        if (outcome === 'ran') return;
        // Paused earlier (a retried stop), or still pausing: wait for the servers to be released.
        while ((await serverConnections(client)) > 0) {
          if (Date.now() >= deadline) {
            const clients = await clientConnections(client);
            throw new AppControllerError(
              describe(),
              `paused, but pgbouncer still holds server connections after ${config.pauseTimeoutSeconds}s (${clients} client connection(s) to ${config.database} remain)`,
              'in session pooling a server connection is released only when its client disconnects: stop the clients first, use transaction pooling, or raise pauseTimeoutSeconds. start (RESUME) undoes the pause',
            );
          }
          await sleep(200, signal);
        }
      }),

    start: (snapshot, signal) =>
      withAdmin(signal, async (client) => {
        expectSnapshot(snapshot, 'pgbouncer', describe());
        const before = snapshot as PgbouncerSnapshot;
        if (!before.paused) await admin(client, `RESUME ${db}`, NOT_PAUSED);
        if (!before.disabled) await admin(client, `ENABLE ${db}`);
      }),
  };
}

function truthy(value: unknown): boolean {
  return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
}

/** pgbouncer's admin parser takes a bare word or a double-quoted name. */
function adminIdentifier(name: string): string {
  return /^\w+$/.test(name) ? name : `"${name.replace(/"/g, '')}"`;
}
