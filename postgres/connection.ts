import type { ClientConfig } from 'pg';
import type { DatabaseConfig } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import { registerSecret } from '../process/secrets.js';

/** Where and as whom to connect. Resolved inside the worker; never serialised into a workflow. */
export interface ConnectionParams {
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
  sslmode?: string;
}

/** ${VAR} and ${VAR:-default}: the variable's name, and the default. */
const ENV_REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces ${VAR} and ${VAR:-default} from the environment; a missing variable is a config error. */
export function substituteEnv(text: string, field: string, env: NodeJS.ProcessEnv = process.env): string {
  return text.replace(ENV_REFERENCE, (_, name: string, fallback: string | undefined) => {
    // As in the shell and docker compose, ":-" applies when the variable is unset *or empty*.
    const value = fallback !== undefined && !env[name] ? fallback : env[name];
    if (value === undefined) {
      throw new ConfigError([{ path: field, message: `environment variable ${name} is not set`, hint: `export ${name} in the worker's environment` }], 'configuration');
    }
    return value;
  });
}

/** The connection fields of a database (and of a drill server). */
export type ConnectionFields = Pick<DatabaseConfig, 'url' | 'host' | 'port' | 'user' | 'dbname' | 'passwordEnv' | 'sslmode'>;

export function resolveConnection(databaseId: string, db: ConnectionFields, env: NodeJS.ProcessEnv = process.env): ConnectionParams {
  const field = `databases.${databaseId}`;
  let params: ConnectionParams;
  if (db.url) {
    const text = substituteEnv(db.url, `${field}.url`, env);
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new ConfigError([{ path: `${field}.url`, message: 'not a valid URL', hint: 'postgres://user:${PASSWORD}@host:5432/dbname' }], 'configuration');
    }
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      throw new ConfigError([{ path: `${field}.url`, message: `expected a postgres:// URL, got ${url.protocol}//`, hint: 'postgres://user:${PASSWORD}@host:5432/dbname' }], 'configuration');
    }
    params = {
      host: url.searchParams.get('host') ?? (decodeURIComponent(url.hostname) || 'localhost'),
      port: Number(url.port || 5432),
      user: decodeURIComponent(url.username) || env.PGUSER || 'postgres',
      database: decodeURIComponent(url.pathname.replace(/^\//, '')) || 'postgres',
      password: url.password ? decodeURIComponent(url.password) : undefined,
      sslmode: url.searchParams.get('sslmode') ?? undefined,
    };
  } else {
    params = {
      host: db.host ?? 'localhost',
      port: db.port ?? 5432,
      user: db.user ?? env.PGUSER ?? 'postgres',
      database: db.dbname ?? 'postgres',
      sslmode: db.sslmode,
    };
  }
  if (db.passwordEnv) {
    const password = env[db.passwordEnv];
    if (password === undefined) {
      throw new ConfigError([{ path: `${field}.passwordEnv`, message: `environment variable ${db.passwordEnv} is not set`, hint: `export ${db.passwordEnv} in the worker's environment` }], 'configuration');
    }
    params.password = password;
  }
  if (db.sslmode) params.sslmode = db.sslmode;
  registerSecret(params.password);
  return params;
}

/**
 * host:port of a database's server, to tell which databases share one (a fleet dumps each
 * server's roles and tablespaces once). Needs no secrets: a ${VAR} that is not set here (another
 * site's password) stays as written, and only the host and port are read.
 */
export function serverAddress(db: ConnectionFields, env: NodeJS.ProcessEnv = process.env): string {
  if (!db.url) return `${db.host ?? 'localhost'}:${db.port ?? 5432}`;
  const text = db.url.replace(ENV_REFERENCE, (_, name: string, fallback: string | undefined) => env[name] || fallback || name);
  try {
    const url = new URL(text);
    return `${url.searchParams.get('host') ?? (decodeURIComponent(url.hostname) || 'localhost')}:${url.port || 5432}`;
  } catch {
    // Never the text itself: it may hold a substituted password.
    return 'unparsable-url';
  }
}

/** libpq environment for pg_dump, pg_restore and psql: the password travels here, never in argv. */
export function libpqEnv(params: ConnectionParams, database = params.database): Record<string, string> {
  const env: Record<string, string> = {
    PGHOST: params.host,
    PGPORT: String(params.port),
    PGUSER: params.user,
    PGDATABASE: database,
    PGAPPNAME: 'pgrunbook',
    PGCONNECT_TIMEOUT: '10',
  };
  if (params.password !== undefined) env.PGPASSWORD = params.password;
  if (params.sslmode) env.PGSSLMODE = params.sslmode;
  return env;
}

/** node-postgres client settings for the same connection. */
export function pgClientConfig(params: ConnectionParams, database = params.database): ClientConfig {
  const ssl = params.sslmode && !['disable', 'allow', 'prefer'].includes(params.sslmode)
    ? { rejectUnauthorized: params.sslmode === 'verify-ca' || params.sslmode === 'verify-full' }
    : undefined;
  return {
    host: params.host,
    port: params.port,
    user: params.user,
    database,
    password: params.password,
    ssl,
    application_name: 'pgrunbook',
    connectionTimeoutMillis: 10_000,
  };
}

/** host:port/db as an operator would read it, without credentials. */
export function describeConnection(params: ConnectionParams): string {
  return `${params.user}@${params.host}:${params.port}/${params.database}`;
}
