import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { registerSecret } from '../process/secrets.js';
import { findOnPath, MissingToolError } from './binaries.js';
import { isRoot, postgresUid } from '../postgres/server-user.js';
import { freePort } from './ports.js';

/**
 * A throwaway pgbouncer (Debian's) in front of an upstream PostgreSQL: a temp dir, loopback only, a
 * random free port, SCRAM client authentication against a generated auth_file, and an admin user
 * with a random password. As root it runs as the `postgres` user (it needs no privileges).
 * Clients log in with the upstream users' own names and passwords, which pgbouncer reuses upstream.
 */
export interface Pgbouncer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Listed in admin_users: may PAUSE, RESUME, DISABLE, ENABLE. */
  readonly adminUser: 'pgbouncer';
  readonly adminPassword: string;
  readonly dir: string;
  /** URL of `database` through pgbouncer (includes the user's password), by default as the first upstream user. */
  url(database: string, user?: string): string;
  /** URL of the admin console (the special `pgbouncer` database), password included. */
  adminUrl(): string;
  /** The last lines of pgbouncer's log, for failure messages. */
  logTail(lines?: number): string;
  /** Stops pgbouncer, waits for it to exit and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartPgbouncerOptions {
  upstreamHost?: string;
  upstreamPort: number;
  /** Databases pgbouncer serves, each under the same name upstream. */
  databases: string[];
  /** Users and their upstream passwords, e.g. `{ postgres: cluster.password }`. */
  users: Record<string, string>;
  poolMode?: 'session' | 'transaction' | 'statement';
  /** Extra [pgbouncer] settings. */
  settings?: Record<string, string | number>;
}

const READY_TIMEOUT_MS = 20_000;
const running = new Map<ChildProcess, string>();

// A test runner that dies must not leave pgbouncers behind.
process.once('exit', () => {
  for (const [child, dir] of running) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Debian's pgbouncer lives in /usr/sbin, which a non-root PATH may lack. */
export function pgbouncerBinary(): string {
  const found = process.env.PGBOUNCER_BIN ?? findOnPath('pgbouncer') ?? ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  if (!found) throw new MissingToolError('pgbouncer', 'install it (Debian/Ubuntu: `apt-get install pgbouncer`; scripts/bootstrap.sh does it as root), or set PGBOUNCER_BIN');
  return found;
}

export async function startPgbouncer(options: StartPgbouncerOptions): Promise<Pgbouncer> {
  const binary = pgbouncerBinary();
  const userNames = Object.keys(options.users);
  const badName = options.databases.find((db) => !/^\w+$/.test(db));
  if (badName !== undefined) throw new Error(`startPgbouncer: database name ${JSON.stringify(badName)} must be letters, digits and "_" (pgbouncer.ini keys are not quoted)`);
  if (userNames.length === 0) throw new Error('startPgbouncer needs at least one upstream user');
  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-pgbouncer-'));
  const adminPassword = randomBytes(18).toString('base64url');
  registerSecret(adminPassword);
  for (const password of Object.values(options.users)) registerSecret(password);
  const port = await freePort();
  const quote = (s: string): string => `"${s.replace(/"/g, '""')}"`;

  const authFile = join(dir, 'userlist.txt');
  // Plain-text passwords: pgbouncer can then answer the upstream's SCRAM challenge itself.
  const entries: [string, string][] = [['pgbouncer', adminPassword], ...Object.entries(options.users)];
  writeFileSync(authFile, entries.map(([u, p]) => `${quote(u)} ${quote(p)}\n`).join(''), { mode: 0o600 });
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'scram-sha-256',
    auth_file: authFile,
    admin_users: 'pgbouncer',
    pool_mode: options.poolMode ?? 'session',
    max_client_conn: 200,
    default_pool_size: 20,
    // node-postgres and JDBC send it; pgbouncer refuses unknown startup parameters otherwise.
    ignore_startup_parameters: 'extra_float_digits',
    logfile: join(dir, 'pgbouncer.log'),
    pidfile: join(dir, 'pgbouncer.pid'),
    ...options.settings,
  };
  const host = options.upstreamHost ?? '127.0.0.1';
  const ini = [
    '[databases]',
    ...options.databases.map((db) => `${db} = host=${host} port=${options.upstreamPort} dbname=${db}`),
    '',
    '[pgbouncer]',
    ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
  const iniPath = join(dir, 'pgbouncer.ini');
  writeFileSync(iniPath, ini, { mode: 0o600 });

  // Root: run it as `postgres` (like the clusters). The directory and its files must be theirs.
  const ids = isRoot() ? postgresUid() : undefined;
  if (ids) for (const path of [dir, authFile, iniPath]) chownSync(path, ids.uid, ids.gid);
  const stderr = openSync(join(dir, 'stderr.log'), 'a');
  const child = spawn(binary, [iniPath], { cwd: dir, stdio: ['ignore', 'ignore', stderr], ...(ids ? { uid: ids.uid, gid: ids.gid } : {}) });
  closeSync(stderr);
  running.set(child, dir);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    resolve();
  }));

  const logTail = (lines = 20): string =>
    ['pgbouncer.log', 'stderr.log']
      .map((f) => join(dir, f))
      .filter((p) => existsSync(p))
      .map((p) => readFileSync(p, 'utf8').trim().split('\n').slice(-lines).join('\n'))
      .join('\n');
  const adminUrl = (): string => `postgresql://pgbouncer:${encodeURIComponent(adminPassword)}@127.0.0.1:${port}/pgbouncer`;
  const stop = async (): Promise<void> => {
    if (!running.has(child)) return;
    running.delete(child);
    // SIGTERM: immediate shutdown (SIGINT would wait for clients to disconnect).
    if (!exited) child.kill('SIGTERM');
    await Promise.race([exit, new Promise((r) => setTimeout(r, 5_000))]);
    if (!exited) child.kill('SIGKILL');
    await exit;
    rmSync(dir, { recursive: true, force: true });
  };

  // Ready once the admin console answers.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      const log = logTail();
      await stop();
      throw new Error(`pgbouncer exited at start:\n${log}`);
    }
    const client = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 2_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SHOW VERSION');
      await client.end();
      break;
    } catch (error) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline) {
        const log = logTail();
        await stop();
        throw new Error(`pgbouncer did not accept admin connections within ${READY_TIMEOUT_MS / 1000}s: ${(error as Error).message}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  return {
    host: '127.0.0.1',
    port,
    adminUser: 'pgbouncer',
    adminPassword,
    dir,
    url: (database, user = userNames[0] ?? 'postgres') =>
      `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(options.users[user] ?? '')}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    adminUrl,
    logTail,
    stop,
  };
}
