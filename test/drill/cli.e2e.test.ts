import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DrillReport } from '../../repository/reports.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { runCli, type CliResult } from '../support/cli.js';

// `pgrunbook drill --wait` as an operator runs it: live progress on stderr, the human summary or
// the report as JSON on stdout, exit 0 for a passed drill and 1 for a failed one.

let stack: TestStack;
let stopWorker: () => Promise<void>;
let configFile: string;

const cli = (args: string[]): Promise<CliResult> => runCli([...args, '--config', configFile], stack.workerEnv);

beforeAll(async () => {
  stack = await startTestStack({ sampleDatabase: 'app' });
  const databases = {
    app: { url: stack.databaseUrl('app'), repository: 'local', drill: { canary: { enabled: true } } },
    // Same data, but its drills expect an admin count no database has: a failing smoke query.
    strict: { url: stack.databaseUrl('app'), repository: 'local', drill: { smokeQueries: [{ name: 'admins', sql: 'SELECT count(*) FROM public.users WHERE is_admin', expect: 999 }] } },
  };
  configFile = stack.writeConfig(databases);
  ({ stop: stopWorker } = await stack.startWorker(stack.config(databases)));
});

afterAll(async () => {
  await stopWorker?.();
  await stack?.teardown();
});

describe('pgrunbook drill', () => {
  it('--wait: a passing drill prints its checks, RTO and RPO and exits 0; drills list shows it', async () => {
    const run = await cli(['drill', '--database', 'app', '--wait']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^started drill-app-\d{8}T\d{6}Z$/m);
    expect(run.stderr).toMatch(/resolve/); // live progress
    expect(run.stdout).toMatch(/^restore drill of app: PASSED$/m);
    expect(run.stdout).toMatch(/RTO\s+\d+(\.\d)? s \(pg_restore/);
    expect(run.stdout).toMatch(/RPO\s+\d+(\.\d)? s \(backup age when the drill started\)/);
    expect(run.stdout).toMatch(/canary\s+found/);
    for (const name of ['artifact checksum', 'row counts', 'schema version', 'canary present', 'query-time budget']) expect(run.stdout).toContain(`pass  ${name}`);
    expect(run.stdout).toMatch(/teardown\s+done: removed/);

    const list = await cli(['drills', 'list', '--database', 'app', '--json']);
    expect(list.code, list.stderr).toBe(0);
    const reports = JSON.parse(list.stdout) as DrillReport[] | { drills: DrillReport[] };
    const drills = Array.isArray(reports) ? reports : reports.drills;
    expect(drills[0]).toMatchObject({ database: 'app', outcome: 'passed', restore_success: true, canary_found: true });
  });

  it('--wait --json: a failing drill prints the report with the failed check and exits 1', async () => {
    const backup = await cli(['backup', '--database', 'strict', '--wait']);
    expect(backup.code, backup.stderr).toBe(0);
    const run = await cli(['drill', '--database', 'strict', '--wait', '--json']);
    expect(run.code).toBe(1);
    const out = JSON.parse(run.stdout) as { ok: boolean; report: DrillReport };
    expect(out.ok).toBe(false);
    expect(out.report).toMatchObject({ outcome: 'failed', restore_success: false, error: { step: 'checks' }, teardown: { state: 'done' } });
    expect(out.report.checks.find((c) => c.kind === 'smoke-query')).toMatchObject({ name: 'smoke: admins', outcome: 'fail', expected: '999' });
  });

  it('refuses bad usage before anything starts', async () => {
    expect((await cli(['drill'])).code).toBe(2);
    const unknown = await cli(['drill', '--database', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown database "nope"');
    const bad = await cli(['drill', '--database', 'app', '--backup', 'yesterday']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected "latest" or a backup id');
  });
});
