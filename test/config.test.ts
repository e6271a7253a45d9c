import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../config/errors.js';
import { loadConfig, parseConfig } from '../config/load.js';
import { Config, configuredTaskQueues, DatabaseConfig, defaultRepositoryId, selectDatabases, taskQueueOf } from '../config/schema.js';
import { libpqEnv, resolveConnection, serverAddress, substituteEnv } from '../postgres/connection.js';
import { scrubSecrets } from '../process/secrets.js';
import { checkWorkerEnvironment, servedRepositories, workerTaskQueues } from '../worker/run.js';

const CONFIG_PATH = '/etc/pgrunbook/pgrunbook.yaml';

const MINIMAL = `
repositories:
  main:
    type: local
    path: backups
databases:
  app:
    url: postgres://backup@db.internal:5432/app
`;

/** The ConfigError `fn` throws; fails the test if it throws nothing or something else. */
function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

const parseError = (yaml: string): ConfigError => configErrorOf(() => parseConfig(yaml, CONFIG_PATH));

/** A unique, secret-looking value that no other test has registered. */
const freshSecret = (label: string): string => `${label}-${randomBytes(8).toString('hex')}`;

describe('parseConfig', () => {
  it('fills in defaults for a minimal config', () => {
    const config = parseConfig(MINIMAL, CONFIG_PATH);
    expect(config.temporal).toEqual({ address: 'localhost:7233', namespace: 'default', taskQueue: 'pgrunbook' });
    expect(config.databases.app?.dump).toEqual({ format: 'custom', compression: 'gzip:6', excludeSchemas: [], excludeTables: [], rowCounts: true });
    expect(config.timeouts).toEqual({ heartbeatSeconds: 30, longStepHours: 24 });
    expect(config.retry).toEqual({ maxAttempts: 5, initialIntervalSeconds: 1, maximumIntervalSeconds: 60 });
    expect(defaultRepositoryId(config, 'app')).toBe('main');
  });

  it('resolves a relative local repository path against the config file folder, and keeps absolute ones', () => {
    const config = parseConfig(MINIMAL.replace('path: backups', 'path: ./backups/nightly'), CONFIG_PATH);
    expect(config.repositories.main).toEqual({ type: 'local', path: '/etc/pgrunbook/backups/nightly' });
    const absolute = parseConfig(MINIMAL.replace('path: backups', 'path: /srv/backups'), CONFIG_PATH);
    expect(absolute.repositories.main).toEqual({ type: 'local', path: '/srv/backups' });
  });

  it('fills in S3 repository defaults', () => {
    const config = parseConfig(MINIMAL.replace('type: local\n    path: backups', 'type: s3\n    bucket: my-backups'), CONFIG_PATH);
    expect(config.repositories.main).toEqual({
      type: 's3',
      bucket: 'my-backups',
      prefix: '',
      region: 'us-east-1',
      forcePathStyle: false,
      accessKeyIdEnv: 'AWS_ACCESS_KEY_ID',
      secretAccessKeyEnv: 'AWS_SECRET_ACCESS_KEY',
      partSizeMiB: 8,
      queueSize: 2,
    });
  });

  it('names the field path and the expected type of a wrongly typed value', () => {
    const error = parseError(`
repositories:
  main: { type: local, path: b }
databases:
  app:
    dbname: app
    port: "abc"
`);
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatchObject({ path: 'databases.app.port', message: 'expected number, received string' });
    expect(error.message).toContain(`invalid ${CONFIG_PATH}:`);
    expect(error.message).toContain('databases.app.port: expected number, received string');
  });

  it('refuses an unknown key with a hint about spelling', () => {
    const error = parseError(`${MINIMAL}colour: red\n`);
    expect(error.problems).toEqual([{ path: '', message: 'unknown key "colour"', hint: expect.stringContaining('spelling') }]);
    expect(error.message).toMatch(/\(top level\): unknown key "colour"\n\s+HINT: remove it/);
  });

  it('refuses an unknown key nested in a repository, naming its path', () => {
    const error = parseError(MINIMAL.replace('path: backups', 'path: backups\n    colour: red'));
    expect(error.problems).toMatchObject([{ path: 'repositories.main', message: 'unknown key "colour"' }]);
    expect(error.message).toContain('HINT:');
  });

  it('refuses an unknown repository type with a hint listing local and s3', () => {
    const error = parseError(MINIMAL.replace('type: local', 'type: ftp'));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]?.path).toBe('repositories.main.type');
    expect(error.problems[0]?.hint).toMatch(/type: local.*type: s3/);
    expect(error.message).toMatch(/repositories\.main\.type: .*\n\s+HINT: .*local.*s3/);
  });

  it('refuses a database that references an unknown repository', () => {
    const error = parseError(`${MINIMAL}    repository: offsite\n`);
    expect(error.problems).toEqual([
      { path: 'databases.app.repository', message: 'unknown repository "offsite"; known: main', hint: expect.stringContaining('repositories:') },
    ]);
  });

  it('refuses an out-of-range compression level', () => {
    const error = parseError(`${MINIMAL}    dump:\n      compression: zstd:99\n`);
    expect(error.problems).toEqual([
      { path: 'databases.app.dump.compression', message: expect.stringContaining('zstd[:1-22]'), hint: expect.stringContaining('gzip:6') },
    ]);
    expect(parseConfig(`${MINIMAL}    dump:\n      compression: zstd:22\n`, CONFIG_PATH).databases.app?.dump.compression).toBe('zstd:22');
  });

  it('refuses a database given both as url and as discrete host', () => {
    const error = parseError(`${MINIMAL}    host: db.internal\n`);
    expect(error.problems).toEqual([{ path: 'databases.app', message: expect.stringContaining('either url or discrete'), hint: undefined }]);
  });

  it('refuses a database without any connection', () => {
    const error = parseError(MINIMAL.replace('url: postgres://backup@db.internal:5432/app', 'host: db.internal'));
    expect(error.problems).toMatchObject([{ path: 'databases.app.url', message: expect.stringContaining('expected a connection') }]);
    expect(error.message).toContain('HINT: e.g. url: postgres://');
  });

  it('refuses a config without repositories', () => {
    expect(parseError('repositories: {}\ndatabases: {}\n').problems).toEqual([{ path: 'repositories', message: 'expected at least one repository', hint: undefined }]);
  });

  it('reports a YAML syntax error with its line and column', () => {
    const error = parseError('repositories:\n  main:\n    type: local\n    path: [unclosed\ndatabases: {}\n');
    expect(error.source).toBe(CONFIG_PATH);
    expect(error.problems[0]?.path).toBe('line 5, column 1');
    expect(error.problems[0]?.hint).toBe('fix the YAML syntax');
    expect(error.message).toMatch(/line \d+, column \d+: .+\n\s+HINT: fix the YAML syntax/);
  });
});

describe('loadConfig', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'pgrunbook-config-'));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a file and resolves relative paths against its folder', () => {
    mkdirSync(join(dir, 'etc'));
    const path = join(dir, 'etc', 'pgrunbook.yaml');
    writeFileSync(path, MINIMAL);
    const loaded = loadConfig(path);
    expect(loaded.path).toBe(path);
    expect(loaded.config.repositories.main).toEqual({ type: 'local', path: join(dir, 'etc', 'backups') });
  });

  it('reports a missing file with a hint about --config and PGRUNBOOK_CONFIG', () => {
    const path = join(dir, 'nope', 'pgrunbook.yaml');
    const error = configErrorOf(() => loadConfig(path));
    expect(error.message).toContain(`no config file at ${path}`);
    expect(error.message).toMatch(/HINT: .*--config.*PGRUNBOOK_CONFIG/);
  });

  it('reports errors of a file under its path', () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, `${MINIMAL}colour: red\n`);
    const error = configErrorOf(() => loadConfig(path));
    expect(error.source).toBe(path);
    expect(error.message.split('\n')[0]).toBe(`invalid ${path}:`);
  });
});

describe('schema', () => {
  it('accepts the documented compression forms and refuses the rest', () => {
    const compression = (value: string): boolean => DatabaseConfig.safeParse({ dbname: 'x', dump: { compression: value } }).success;
    for (const ok of ['none', 'gzip', 'gzip:1', 'gzip:9', 'zstd', 'zstd:1', 'zstd:22', 'lz4', 'lz4:12']) expect(compression(ok), ok).toBe(true);
    for (const bad of ['gzip:0', 'gzip:10', 'zstd:0', 'zstd:23', 'zstd:99', 'lz4:13', 'brotli', 'GZIP', 'gzip:']) expect(compression(bad), bad).toBe(false);
  });

  it('accepts lowercase identifiers as repository and database ids', () => {
    expect(Config.safeParse({ repositories: { main: { type: 'local', path: '/b' } }, databases: { 'app-1_x': { dbname: 'x' } } }).success).toBe(true);
    expect(Config.safeParse({ repositories: { Main: { type: 'local', path: '/b' } }, databases: {} }).success).toBe(false);
    expect(Config.safeParse({ repositories: { main: { type: 'local', path: '/b' } }, databases: { 'app db': { dbname: 'x' } } }).success).toBe(false);
  });

  it('refuses an id that is not a lowercase identifier, saying what an id must look like', () => {
    const error = parseError(MINIMAL.replace('  main:', '  Main:'));
    expect(error.problems.map((p) => p.path)).toEqual(['repositories.Main']);
    // Regression: zod keeps this in a nested issue; fromZodError must surface it.
    expect(error.message).toContain('expected an id of lowercase letters');
  });
});

describe('substituteEnv', () => {
  it('replaces ${VAR} and ${VAR:-default}', () => {
    expect(substituteEnv('a=${A} b=${B:-fallback} c=${C:-}', 'f', { A: '1' })).toBe('a=1 b=fallback c=');
    expect(substituteEnv('b=${B:-fallback}', 'f', { B: 'set' })).toBe('b=set');
    expect(substituteEnv('no references, $A, {A}', 'f', {})).toBe('no references, $A, {A}');
  });

  it('uses the default of ${VAR:-default} for an empty variable, as the shell does', () => {
    // `:-` means "unset or empty" in sh, bash and docker compose.
    expect(substituteEnv('port=${PORT:-5432}', 'f', { PORT: '' })).toBe('port=5432');
  });

  it('names the field and the variable when a variable is missing', () => {
    const error = configErrorOf(() => substituteEnv('x=${NOT_SET_ANYWHERE}', 'databases.app.url', {}));
    expect(error.problems).toEqual([
      { path: 'databases.app.url', message: 'environment variable NOT_SET_ANYWHERE is not set', hint: "export NOT_SET_ANYWHERE in the worker's environment" },
    ]);
  });
});

describe('resolveConnection', () => {
  const db = (fields: Record<string, unknown>): DatabaseConfig => DatabaseConfig.parse(fields);

  it('substitutes ${VAR} in the URL and parses it', () => {
    const password = freshSecret('pw');
    const params = resolveConnection('app', db({ url: 'postgres://backup:${APP_DB_PASSWORD}@${APP_DB_HOST:-db.internal}:6543/app?sslmode=require' }), { APP_DB_PASSWORD: password });
    expect(params).toEqual({ host: 'db.internal', port: 6543, user: 'backup', database: 'app', password, sslmode: 'require' });
  });

  it('decodes percent-encoded URL parts and defaults the rest', () => {
    const params = resolveConnection('app', db({ url: 'postgresql://b%40ck:p%40ss%3Aw0rd@db/my%20db' }), {});
    expect(params).toEqual({ host: 'db', port: 5432, user: 'b@ck', database: 'my db', password: 'p@ss:w0rd', sslmode: undefined });
  });

  it('names databases.<id>.url and the variable when a URL variable is missing', () => {
    const error = configErrorOf(() => resolveConnection('app', db({ url: 'postgres://backup:${APP_DB_PASSWORD}@db/app' }), {}));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]?.path).toBe('databases.app.url');
    expect(error.message).toContain('APP_DB_PASSWORD');
  });

  it('refuses a URL that is not postgres://', () => {
    const error = configErrorOf(() => resolveConnection('app', db({ url: 'mysql://u@h/db' }), {}));
    expect(error.problems[0]).toMatchObject({ path: 'databases.app.url', message: expect.stringContaining('postgres://') });
  });

  it('registers the URL password as a secret, so it is masked from then on', () => {
    const password = freshSecret('urlpw');
    const leak = `FATAL: password authentication failed, tried ${password}`;
    expect(scrubSecrets(leak)).toContain(password);
    resolveConnection('app', db({ url: 'postgres://backup:${PW}@db/app' }), { PW: password });
    expect(scrubSecrets(leak)).toBe('FATAL: password authentication failed, tried ***');
  });

  it('takes the password from passwordEnv and registers it', () => {
    const password = freshSecret('envpw');
    const params = resolveConnection('app', db({ host: 'db', port: 5433, user: 'backup', dbname: 'app', passwordEnv: 'APP_PW', sslmode: 'verify-full' }), { APP_PW: password });
    expect(params).toEqual({ host: 'db', port: 5433, user: 'backup', database: 'app', password, sslmode: 'verify-full' });
    expect(scrubSecrets(`got ${password}`)).toBe('got ***');
  });

  it('refuses a passwordEnv that is not set, naming it', () => {
    const error = configErrorOf(() => resolveConnection('app', db({ dbname: 'app', passwordEnv: 'APP_PW' }), {}));
    expect(error.problems).toEqual([{ path: 'databases.app.passwordEnv', message: 'environment variable APP_PW is not set', hint: expect.stringContaining('export APP_PW') }]);
  });
});

describe('libpqEnv', () => {
  it('passes the password in PGPASSWORD and nowhere else', () => {
    const password = freshSecret('libpq');
    const env = libpqEnv({ host: 'db', port: 5433, user: 'backup', database: 'app', password, sslmode: 'require' });
    expect(env).toMatchObject({ PGHOST: 'db', PGPORT: '5433', PGUSER: 'backup', PGDATABASE: 'app', PGSSLMODE: 'require', PGPASSWORD: password });
    expect(Object.entries(env).filter(([, value]) => value.includes(password)).map(([name]) => name)).toEqual(['PGPASSWORD']);
  });

  it('sets no PGPASSWORD without a password and targets another database on request', () => {
    const env = libpqEnv({ host: 'db', port: 5432, user: 'backup', database: 'app' }, 'postgres');
    expect(env).not.toHaveProperty('PGPASSWORD');
    expect(env).not.toHaveProperty('PGSSLMODE');
    expect(env.PGDATABASE).toBe('postgres');
  });
});

describe('checkWorkerEnvironment', () => {
  const config = parseConfig(`
repositories:
  main: { type: local, path: backups }
  offsite: { type: s3, bucket: my-backups, accessKeyIdEnv: OFFSITE_KEY_ID, secretAccessKeyEnv: OFFSITE_SECRET }
databases:
  app:
    url: postgres://backup:\${APP_DB_PASSWORD}@db/app
  reports:
    dbname: reports
`, CONFIG_PATH);

  it('reports every problem of the environment at once', () => {
    const error = configErrorOf(() => checkWorkerEnvironment(config, {}));
    expect(error.source).toBe('worker environment');
    expect(error.problems.map((p) => p.path)).toEqual(['databases.app.url', 'repositories.offsite']);
    expect(error.problems[0]?.message).toContain('APP_DB_PASSWORD');
    expect(error.problems[1]?.message).toContain('OFFSITE_KEY_ID and OFFSITE_SECRET');
  });

  it('passes when everything resolves', () => {
    expect(() => checkWorkerEnvironment(config, { APP_DB_PASSWORD: freshSecret('ok'), OFFSITE_KEY_ID: 'id', OFFSITE_SECRET: freshSecret('s3') })).not.toThrow();
  });
});

describe('sites, workers and fleets', () => {
  const SITES = `
temporal: { taskQueue: control }
repositories:
  eu-bucket: { type: s3, bucket: eu-backups, accessKeyIdEnv: EU_KEY_ID, secretAccessKeyEnv: EU_SECRET }
  us-disk: { type: local, path: /var/backups }
databases:
  orders-eu:
    url: postgres://backup:\${EU_DB_PASSWORD}@eu-db:5432/orders
    repository: eu-bucket
    taskQueue: site-eu
    labels: { tier: prod, region: eu }
  orders-us:
    host: us-db
    dbname: orders
    passwordEnv: US_DB_PASSWORD
    repository: us-disk
    taskQueue: site-us
    labels: { tier: prod, region: us }
  scratch-us:
    host: us-db
    dbname: scratch
    passwordEnv: US_DB_PASSWORD
    repository: us-disk
    taskQueue: site-us
fleets:
  prod: { select: { labels: { tier: prod } }, concurrency: 2 }
  orders: { select: { databases: ['orders-*'] } }
`;
  const config = parseConfig(SITES, CONFIG_PATH);

  it('fills in worker defaults for a 2-core host and empty labels', () => {
    const minimal = parseConfig(MINIMAL, CONFIG_PATH);
    expect(minimal.worker).toEqual({ maxConcurrentActivities: 8, maxConcurrentWorkflowTasks: 10, maxConcurrentDumps: 2, shutdownGraceSeconds: 30 });
    expect(minimal.databases.app?.labels).toEqual({});
    expect(minimal.fleets).toEqual({});
    expect(workerTaskQueues(minimal)).toEqual(['pgrunbook']);
  });

  it('maps each database to its site task queue, and selects fleets by label and by id glob', () => {
    expect(configuredTaskQueues(config)).toEqual(['control', 'site-eu', 'site-us']);
    expect(taskQueueOf(config, 'orders-eu')).toBe('site-eu');
    expect(selectDatabases(config, config.fleets.prod!.select)).toEqual(['orders-eu', 'orders-us']);
    expect(selectDatabases(config, config.fleets.orders!.select)).toEqual(['orders-eu', 'orders-us']);
    expect(selectDatabases(config, { databases: ['*-us'], labels: { tier: 'prod' } })).toEqual(['orders-us']);
    expect(selectDatabases(config, {})).toEqual(['orders-eu', 'orders-us', 'scratch-us']);
  });

  it("checks only the worker's own site: its databases' credentials and repositories", () => {
    const usOnly = { US_DB_PASSWORD: freshSecret('us') };
    expect(() => checkWorkerEnvironment(config, usOnly, ['site-us'])).not.toThrow();
    expect(servedRepositories(config, ['site-us'])).toEqual(['us-disk']);
    const error = configErrorOf(() => checkWorkerEnvironment(config, usOnly, ['site-eu']));
    expect(error.problems.map((p) => p.path)).toEqual(['databases.orders-eu.url', 'repositories.eu-bucket']);
    // The control queue alone serves no database here: nothing to resolve.
    expect(() => checkWorkerEnvironment(config, {}, ['control'])).not.toThrow();
  });

  it('refuses a worker task queue that nothing is started on, listing the ones that are', () => {
    const error = configErrorOf(() => workerTaskQueues(config, ['site-asia']));
    expect(error.problems).toEqual([{ path: '--task-queue', message: 'task queue "site-asia" is neither temporal.taskQueue nor any database\'s taskQueue', hint: 'task queues in this config: control, site-eu, site-us' }]);
    expect(configErrorOf(() => workerTaskQueues(parseConfig(`${SITES}\nworker: { taskQueues: [control, site-eu, typo] }\n`, CONFIG_PATH))).problems[0]?.path).toBe('worker.taskQueues');
    expect(workerTaskQueues(config, ['site-us', 'site-us'])).toEqual(['site-us']);
  });

  it('refuses bad task queue names, labels, worker limits and a fleet that selects nothing, naming each field', () => {
    const error = parseError(`${MINIMAL}    taskQueue: "eu site"
    labels: { "tier!": prod }
worker: { maxConcurrentDumps: 0 }
fleets:
  ghosts: { select: { databases: ['ghost-*'] } }
`);
    const paths = error.problems.map((p) => p.path);
    expect(paths).toEqual(expect.arrayContaining(['databases.app.taskQueue', 'databases.app.labels.tier!', 'worker.maxConcurrentDumps']));
    const fleetError = parseError(`${MINIMAL}fleets:\n  ghosts: { select: { databases: ['ghost-*'] } }\n`);
    expect(fleetError.problems).toEqual([expect.objectContaining({ path: 'fleets.ghosts.select', message: 'matches no configured database; databases: app' })]);
  });

  it("finds a database's server without its secrets", () => {
    const env = { EU_DB_PASSWORD: freshSecret('eu') };
    expect(serverAddress(config.databases['orders-eu']!, env)).toBe('eu-db:5432');
    expect(serverAddress(config.databases['orders-eu']!, {})).toBe('eu-db:5432');
    expect(serverAddress(config.databases['orders-us']!, {})).toBe('us-db:5432');
    expect(serverAddress({ url: 'postgres://u:${P}@[broken' }, { P: 'hunter2' })).toBe('unparsable-url');
  });
});

describe('scrubSecrets', () => {
  it('masks passwords in connection URLs', () => {
    expect(scrubSecrets('connecting to postgres://u:pw@h/db failed')).toBe('connecting to postgres://u:***@h/db failed');
    expect(scrubSecrets('postgresql://backup:s3cr%40t@db.internal:5432/app')).toBe('postgresql://backup:***@db.internal:5432/app');
    expect(scrubSecrets('postgres://u@h/db')).toBe('postgres://u@h/db');
  });

  it('masks password=... style pairs', () => {
    expect(scrubSecrets('host=db password=hunter2 user=u')).toBe('host=db password=*** user=u');
    expect(scrubSecrets("password='two words' user=u")).toBe('password=*** user=u');
    expect(scrubSecrets('PASSWORD: "x y", token=abc;')).toBe('PASSWORD: ***, token=***;');
  });
});

describe('the README\'s configuration reference', () => {
  it('is a valid config, including every restore option and the kubernetes app', async () => {
    const { readFileSync } = await import('node:fs');
    const { parse } = await import('yaml');
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    const block = /## Configuration reference[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const config = Config.parse(parse(block!));
    expect(config.databases.app!.restore).toMatchObject({ strategy: 'swap', jobs: 2, keepPreRestoreDays: 14, smokeQueries: [{ expect: true }] });
    expect(config.databases.app!.app).toMatchObject({ type: 'kubernetes', targets: [{ kind: 'Deployment', name: 'backend' }] });
    expect(config.databases.billing!.restore.approval).toEqual({ required: true, timeoutMinutes: 60 });
    expect(config.databases.billing!.app).toEqual({ type: 'none' });
  });
});
