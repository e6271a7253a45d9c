import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientToolsFor } from '../postgres/tools.js';
import { runCli, type CliResult } from './support/cli.js';
import { startTestStack, type TestStack } from './support/stack.js';

let stack: TestStack;

const cli = (args: string[], env: NodeJS.ProcessEnv = stack.workerEnv): Promise<CliResult> => runCli(args, env);

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
});

afterAll(async () => {
  await stack?.teardown();
});

describe('pgrunbook CLI', () => {
  it('prints usage with --help and exits 2 on an unknown command', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/backups verify BACKUP_ID/);
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"\nHINT: pgrunbook --help/);
  });

  it('refuses an invalid config file, naming the field, the expectation and a hint', async () => {
    const path = join(stack.workDir, 'bad.yaml');
    writeFileSync(path, 'repositories:\n  main: { type: ftp, path: /x }\ndatabases:\n  app: { host: db, port: "5432", dbname: app, colour: red }\n');
    const human = await cli(['backups', 'list', '--database', 'app', '--config', path]);
    expect(human.code).toBe(2);
    expect(human.stderr).toContain(`invalid ${path}`);
    expect(human.stderr).toMatch(/repositories\.main\.type: .*\n\s+HINT: a repository is `type: local`/);
    expect(human.stderr).toMatch(/databases\.app\.port: expected number/);
    expect(human.stderr).toMatch(/databases\.app: unknown key "colour"/);
    const json = await cli(['backups', 'list', '--database', 'app', '--config', path, '--json']);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { type: 'ConfigError' } });
  });

  it('config check reports every missing secret of the worker environment at once', async () => {
    const path = stack.writeConfig({ app: { url: '${PGRUNBOOK_TEST_MISSING_URL}' }, other: { dbname: 'x', passwordEnv: 'PGRUNBOOK_TEST_MISSING_PW' } });
    const result = await cli(['config', 'check', '--config', path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/databases\.app\.url: environment variable PGRUNBOOK_TEST_MISSING_URL is not set/);
    expect(result.stderr).toMatch(/databases\.other\.passwordEnv: environment variable PGRUNBOOK_TEST_MISSING_PW is not set/);
  });

  it('backup --wait --json follows the workflow and backups list shows it as latest good', async () => {
    const path = stack.writeConfig({ app: { url: stack.databaseUrl('app') } });
    const { stop } = await stack.startWorker(stack.config({ app: { url: stack.databaseUrl('app') } }));
    try {
      const backup = await cli(['backup', '--database', 'app', '--label', 'cli', '--wait', '--json', '--config', path]);
      expect(backup.code).toBe(0);
      const result = JSON.parse(backup.stdout);
      expect(result).toMatchObject({ ok: true, status: 'verified', database: 'app' });
      expect(result.workflowId).toMatch(/^backup-app-\d{8}T\d{6}Z$/);
      const list = await cli(['backups', 'list', '--database', 'app', '--json', '--config', path]);
      expect(list.code).toBe(0);
      expect(JSON.parse(list.stdout)).toMatchObject({ ok: true, latestGood: result.backupId });
      const human = await cli(['backups', 'list', '--database', 'app', '--config', path]);
      expect(human.stdout).toMatch(new RegExp(`${result.backupId} \\(latest good\\)\\s+verified`));

      const unknown = await cli(['backup', '--database', 'nope', '--config', path]);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/unknown database "nope"\nHINT: databases in the config: app/);
    } finally {
      await stop();
    }
  });

  it('refuses zstd compression on a pg_dump older than 16 before dumping anything', async () => {
    const path = stack.writeConfig({ app: { url: stack.databaseUrl('app'), dump: { compression: 'zstd:3' } } });
    const { stop } = await stack.startWorker(stack.config({ app: { url: stack.databaseUrl('app'), dump: { compression: 'zstd:3' } } }));
    try {
      const result = await cli(['backup', '--database', 'app', '--wait', '--json', '--config', path]);
      expect(result.code).toBe(1);
      const error = JSON.parse(result.stdout).error;
      expect(error.type).toBe('VersionIncompatible');
      expect(error.message).toMatch(/compression zstd:3 needs pg_dump 16 or newer/);
      expect(error.hint).toMatch(/gzip:6/);
    } finally {
      await stop();
    }
  });
});

describe('client tool selection', () => {
  it('refuses a server newer than every installed pg_dump, saying what to install', async () => {
    await expect(clientToolsFor(99)).rejects.toThrow(/pg_dump 1\d cannot dump a PostgreSQL 99 server[\s\S]*HINT: install postgresql-client-99/);
  });

  it('picks an installed pg_dump whose major version is at least the server\'s', async () => {
    const tools = await clientToolsFor(15);
    expect(tools.major).toBeGreaterThanOrEqual(15);
    expect(tools.version).toMatch(/^pg_dump \(PostgreSQL\) \d+/);
  });
});
