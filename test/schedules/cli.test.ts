import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestStack, type TestStack } from '../support/stack.js';
import { runCli, type CliResult } from '../support/cli.js';

// The built CLI (`npm run build` first) against a real dev server.

let stack: TestStack;

const cli = (args: string[]): Promise<CliResult> => runCli(args, stack.workerEnv);

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.teardown();
});

describe('pgrunbook schedules', () => {
  it('apply --json creates the schedules, a second run reports each unchanged, and --dry-run plans a change without making it', async () => {
    const path = stack.writeConfig({ app: { dbname: 'app' } });
    const first = await cli(['schedules', 'apply', '--json', '--config', path]);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual({
      ok: true,
      dryRun: false,
      schedules: [
        { scheduleId: 'pgrunbook-backup-app', database: 'app', kind: 'backup', action: 'created', reason: 'not in Temporal yet', spec: '02:00 UTC every day' },
        {
          scheduleId: 'pgrunbook-drill-app',
          database: 'app',
          kind: 'drill',
          action: 'created',
          reason: 'not in Temporal yet',
          spec: '10:00 UTC on the first Saturday of every month (days 1-7 that are a Saturday)',
        },
      ],
    });
    const second = await cli(['schedules', 'apply', '--json', '--config', path]);
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout).schedules.map((s: { action: string }) => s.action)).toEqual(['unchanged', 'unchanged']);

    const later = stack.writeConfig({ app: { dbname: 'app', schedules: { backup: { calendar: { hour: 1, minute: 15 }, jitterMinutes: 10 } } } });
    const dryRun = await cli(['schedules', 'apply', '--dry-run', '--config', later]);
    expect(dryRun.code).toBe(0);
    expect(dryRun.stdout).toMatch(/pgrunbook-backup-app\s+would be updated\s+spec changed\s+01:15 UTC every day/);
    expect(dryRun.stdout).toMatch(/pgrunbook-drill-app\s+unchanged/);
    expect(dryRun.stdout).toContain('dry run, nothing changed: 0 would be created, 1 would be updated, 0 would be deleted, 1 unchanged');
    const describeAfterDryRun = JSON.parse((await cli(['schedules', 'describe', 'pgrunbook-backup-app', '--json', '--config', path])).stdout);
    expect(describeAfterDryRun).toMatchObject({ spec: '02:00 UTC every day', jitterSeconds: 0 });
  });

  it('describe shows the spec in words, policies, and next runs that are all first Saturdays', async () => {
    const path = stack.writeConfig({ app: { dbname: 'app' } });
    expect((await cli(['schedules', 'apply', '--config', path])).code).toBe(0);
    const human = await cli(['schedules', 'describe', 'drill-app', '--config', path]);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('pgrunbook-drill-app  (drill of app, managed by pgrunbook)');
    expect(human.stdout).toContain('  when        10:00 UTC on the first Saturday of every month (days 1-7 that are a Saturday)');
    expect(human.stdout).toMatch(/workflow {4}runRestoreDrill on task queue \S+, id drill-app-<scheduled time>/);
    expect(human.stdout).toContain('  policies    overlap skip; catch-up window 360 min; jitter none');
    expect(human.stdout).toContain('  state       active');
    const nextRuns = [...human.stdout.matchAll(/(\d{4}-\d{2}-(\d{2})) 10:00 UTC \((\w{3})\)/g)];
    expect(nextRuns.length).toBeGreaterThanOrEqual(3);
    for (const [, , day, weekday] of nextRuns) expect({ weekday, firstWeek: Number(day) <= 7 }).toEqual({ weekday: 'Sat', firstWeek: true });

    const json = JSON.parse((await cli(['schedules', 'describe', 'pgrunbook-drill-app', '--json', '--config', path])).stdout);
    expect(json).toMatchObject({ ok: true, scheduleId: 'pgrunbook-drill-app', workflowType: 'runRestoreDrill', overlap: 'skip', catchupWindowMinutes: 360, paused: false, inConfig: true });
    expect(json.nextActionTimes.length).toBeGreaterThanOrEqual(3);
    for (const time of json.nextActionTimes as string[]) {
      const date = new Date(time);
      expect([date.getUTCDay(), date.getUTCDate() <= 7, date.getUTCHours()]).toEqual([6, true, 10]);
    }
  });

  it('pause with a reason, list, unpause, trigger and delete; unknown ids exit 2 naming the known ones', async () => {
    const path = stack.writeConfig({ app: { dbname: 'app' } });
    expect((await cli(['schedules', 'apply', '--config', path])).code).toBe(0);

    const paused = await cli(['schedules', 'pause', 'backup-app', '--reason', 'INC-42 storage move', '--config', path]);
    expect(paused.code).toBe(0);
    expect(paused.stdout).toMatch(/^paused pgrunbook-backup-app: INC-42 storage move \(\S+@\S+\)/);
    const list = await cli(['schedules', 'list', '--config', path]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/pgrunbook-backup-app\s+paused\s+-\s+02:00 UTC every day/);
    expect(list.stdout).toMatch(/pgrunbook-drill-app\s+active\s+\d{4}-\d{2}-0[1-7] 10:00 UTC \(Sat\)/);
    // apply keeps an operator's pause.
    expect((await cli(['schedules', 'apply', '--config', path])).stdout).toMatch(/pgrunbook-backup-app\s+unchanged/);
    expect(JSON.parse((await cli(['schedules', 'describe', 'backup-app', '--json', '--config', path])).stdout)).toMatchObject({ paused: true });
    const unpaused = await cli(['schedules', 'unpause', 'pgrunbook-backup-app', '--json', '--config', path]);
    expect(JSON.parse(unpaused.stdout)).toMatchObject({ ok: true, paused: false });

    // No worker listens on this task queue: the trigger still starts the workflow, which waits for one.
    const triggered = await cli(['schedules', 'trigger', 'backup-app', '--json', '--config', path]);
    expect(triggered.code).toBe(0);
    const workflowId = JSON.parse(triggered.stdout).workflowId as string;
    expect(workflowId).toMatch(/^backup-app-\d{4}-\d{2}-\d{2}T/);
    expect((await stack.client.workflow.getHandle(workflowId).describe()).type).toBe('backupDatabase');
    await stack.client.workflow.getHandle(workflowId).terminate('test: no worker');

    const unknown = await cli(['schedules', 'describe', 'backup-nope', '--config', path]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/error: no schedule "backup-nope" in namespace default\nHINT: pgrunbook's schedules: pgrunbook-backup-app, pgrunbook-drill-app/);
    const badSub = await cli(['schedules', 'frobnicate', '--json', '--config', path]);
    expect(badSub.code).toBe(2);
    expect(JSON.parse(badSub.stdout).error).toMatchObject({ type: 'UsageError', message: 'unknown subcommand "schedules frobnicate"' });

    const deleted = await cli(['schedules', 'delete', 'drill-app', '--config', path]);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toContain('deleted pgrunbook-drill-app\nnote: the config still wants it: the next `pgrunbook schedules apply` recreates it; set databases.app.schedules.drill.enabled: false');
    expect((await cli(['schedules', 'list', '--config', path])).stdout).toMatch(/pgrunbook-drill-app\s+missing: run `pgrunbook schedules apply`/);
  });

  it('refuses a config whose cron sets both day-of-month and day-of-week, before touching Temporal', async () => {
    const path = stack.writeConfig({ app: { dbname: 'app', schedules: { drill: { cron: '0 10 1 * 6' } } } });
    const result = await cli(['schedules', 'apply', '--config', path]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/databases\.app\.schedules\.drill\.cron: "0 10 1 \* 6" sets both day-of-month \(1\) and day-of-week \(6\): crontab fires when either matches, Temporal only when both do/);
  });
});
