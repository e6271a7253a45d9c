import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RestoreReport } from '../../activities/restore.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { drillReportKey, listRestoreReports, type DrillReport } from '../../repository/reports.js';
import { writeAll } from '../../repository/types.js';
import { formatDuration } from '../../report/units.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { CHROMIUM, decodePng, runChromium } from './chromium.js';
import { drillReport } from './fixtures.js';
import { runCli, type CliResult } from '../support/cli.js';

// The whole path an operator takes: real backups and a real restore through the worker, drill
// reports beside them, `pgrunbook report` as a CLI process, and the page opened in real headless
// Chromium. Drill reports are written here (the drill workflow is its own issue), typed as
// DrillReport so they stay what the drill workflow writes.

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let stack: TestStack;
let configPath: string;
let backupIds: string[];
let restore: RestoreReport;
let drills: DrillReport[];

const cli = (args: string[]): Promise<CliResult> => runCli([...args, '--config', configPath], stack.workerEnv);

/** One database's section of the rendered DOM (sections do not nest). */
function section(dom: string, database: string): string {
  const start = dom.indexOf(`data-testid="database" data-database="${database}"`);
  expect(start, `section of ${database}`).toBeGreaterThan(0);
  return dom.slice(start, dom.indexOf('</section>', start));
}

const count = (html: string, testid: string) => html.split(`data-testid="${testid}"`).length - 1;
const attributes = (html: string, testid: string, attribute: string) => [...html.matchAll(new RegExp(`data-testid="${testid}"[^>]*?${attribute}="([^"]*)"`, 'g'))].map((m) => m[1]);

beforeAll(async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/bootstrap.sh as root, or apt-get install chromium`).toBe(true);
  stack = await startTestStack({ sampleDatabase: 'app' });
  const repo = join(stack.workDir, 'repo');
  // A second repository that cannot be read (its path is a file): its database gets an error section.
  writeFileSync(join(stack.workDir, 'not-a-directory'), 'x');
  configPath = stack.writeConfig(
    { app: { url: stack.databaseUrl('app') }, fresh: { dbname: 'fresh' }, lost: { dbname: 'lost', repository: 'broken' } },
    { repositories: { local: { type: 'local', path: repo }, broken: { type: 'local', path: join(stack.workDir, 'not-a-directory') } } },
  );

  // Real history: two backups and a restore into a copy, through the CLI and a worker.
  const { stop } = await stack.startWorker(stack.config({ app: { url: stack.databaseUrl('app') } }));
  try {
    backupIds = [];
    for (const label of ['nightly', 'pre-migration']) {
      const backup = await cli(['backup', '--database', 'app', '--label', label, '--wait', '--json']);
      expect(backup.code, backup.stderr).toBe(0);
      backupIds.push(JSON.parse(backup.stdout).backupId);
      await new Promise((r) => setTimeout(r, 1100)); // backup ids are stamped to the second
    }
    const restored = await cli(['restore', '--database', 'app', '--backup', backupIds[1]!, '--target-database', 'app_report_copy', '--yes', '--wait', '--json']);
    expect(restored.code, restored.stdout + restored.stderr).toBe(0);
  } finally {
    await stop();
  }
  const repository = new RepositoryRegistry(stack.config({ app: { dbname: 'app' } }), stack.workerEnv).get('local');
  const restores = await listRestoreReports<RestoreReport>(repository, 'app');
  expect(restores.map((r) => r.outcome)).toEqual(['completed']);
  restore = restores[0]!;

  // Monthly drills over the past five months, each restoring that night's 02:00 backup at 10:00;
  // the one three months ago restored a backup a day older and failed its row-count check.
  const now = Date.now();
  drills = [150, 120, 90, 60, 30].map((daysAgo, i) => {
    const startedAt = new Date(now - daysAgo * DAY);
    const backupStartedAt = new Date(startedAt.getTime() - (i === 2 ? 32 : 8) * HOUR);
    return drillReport({ database: 'app', startedAt, backupId: `app/${backupStartedAt.toISOString().replace(/[-:]/g, '').slice(0, 15)}Z`, backupStartedAt, restoreSeconds: [21, 25, 190, 23, 27][i]!, failedCheck: i === 2 ? 'row-counts' : undefined });
  });
  for (const drill of drills) await writeAll(repository, drillReportKey('app', new Date(drill.started_at)), JSON.stringify(drill, null, 2));
});

afterAll(async () => {
  await stack?.teardown();
});

describe('pgrunbook report, opened in headless Chromium', () => {
  it('shows each database: backups over time, drills with RTO and RPO, the failed drill, and the latest restore\'s steps', async () => {
    const out = join(stack.workDir, 'report');
    const result = await cli(['report', '--out', out, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary.path).toBe(join(out, 'index.html'));
    expect(summary.databases).toMatchObject([
      { database: 'app', repository: 'local', backups: 2, drills: 5, restores: 1, problems: [] },
      { database: 'fresh', backups: 0, drills: 0, restores: 0, problems: [] },
      { database: 'lost', repository: 'broken', backups: 0 },
    ]);
    expect(summary.databases[2].problems[0]).toMatch(/ENOTDIR/);
    // Written atomically: nothing but the report is left in the folder.
    expect(readdirSync(out)).toEqual(['index.html']);

    const dump = await runChromium(['--dump-dom', `file://${summary.path}`]);
    expect(dump.code, dump.stderr.slice(-2000)).toBe(0);
    expect(dump.leftovers).toEqual([]);
    const dom = dump.stdout;
    expect(dom).toMatch(/data-testid="generated-at">Generated <time datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d UTC<\/time> by pgrunbook/);
    expect(attributes(dom, 'database', 'data-database')).toEqual(['app', 'fresh', 'lost']);

    const app = section(dom, 'app');
    // Backups over time: one point per backup in both charts, and a row each.
    expect(count(app, 'backup-size-point')).toBe(2);
    expect(count(app, 'backup-duration-point')).toBe(2);
    expect(attributes(app, 'backup-size-point', 'data-id')).toEqual([...backupIds]);
    expect(attributes(app, 'backup-row', 'data-state')).toEqual(['verified', 'verified']);
    expect(app).toContain('pre-migration');

    // Drills, newest first, with the RTO and RPO each one measured, in human units.
    expect(count(app, 'drill-rto-point')).toBe(5);
    expect(count(app, 'drill-rpo-point')).toBe(5);
    const rows = [...app.matchAll(/<tr data-testid="drill-row"[\s\S]*?<\/tr>/g)].map((m) => m[0]);
    const newestFirst = [...drills].reverse();
    expect(rows).toHaveLength(5);
    rows.forEach((row, i) => {
      const drill = newestFirst[i]!;
      expect(row).toContain(`data-testid="drill-rto">${formatDuration(drill.rto_seconds!)}</td>`);
      expect(row).toContain(`data-testid="drill-rpo">${formatDuration(drill.rpo_seconds!)}</td>`);
    });
    expect(rows[0]).toContain('data-testid="drill-rto">31 s</td>');
    expect(rows[0]).toContain('data-testid="drill-rpo">8.0 h</td>');
    // The failed drill: marked failed, its failed check named, its point red in both trend charts.
    expect(attributes(app, 'drill-row', 'data-outcome')).toEqual(['passed', 'passed', 'failed', 'passed', 'passed']);
    expect(rows[2]).toContain('<span class="badge failed">failed</span>');
    expect(rows[2]).toContain('data-testid="drill-rto">3 min 14 s</td>');
    expect(rows[2]).toContain('data-testid="drill-rpo">32.0 h</td>');
    expect(rows[2]).toMatch(/data-testid="drill-failed-checks"><span class="check-failed"[^>]*>row-counts<\/span>/);
    expect(attributes(app, 'drill-rto-point', 'data-outcome').filter((o) => o === 'failed')).toHaveLength(1);
    expect(app).toMatch(/data-testid="drill-summary">4 of 5 drills passed/);

    // The timeline is the restore's (newer than every drill): its real steps, in order.
    expect(app).toMatch(new RegExp(`data-testid="timeline" data-kind="restore" data-workflow-id="${restore.workflowId}" data-outcome="completed"`));
    const steps = (restore.steps as { step: string }[]).map((s) => s.step);
    expect(steps).toEqual(expect.arrayContaining(['preflight', 'restore']));
    expect(attributes(app, 'timeline-step', 'data-step')).toEqual(steps);
    expect(attributes(app, 'restore-row', 'data-outcome')).toEqual(['completed']);

    const fresh = section(dom, 'fresh');
    expect(fresh).toContain('no backups yet');
    expect(fresh).toContain('no drills yet');
    expect(fresh).toContain('no restore or drill yet');
    expect(section(dom, 'lost')).toMatch(/data-testid="problem">could not read [^<]*not-a-directory: ENOTDIR/);

    // And it renders: a full-page screenshot is a real picture, with the green bars of the
    // timeline and the red of the failed drill in it, not a blank page.
    const shot = join(stack.workDir, 'report.png');
    const screenshot = await runChromium(['--hide-scrollbars', '--window-size=1280,2600', `--screenshot=${shot}`, `file://${summary.path}`]);
    expect(screenshot.code, screenshot.stderr.slice(-2000)).toBe(0);
    expect(screenshot.leftovers).toEqual([]);
    const png = decodePng(readFileSync(shot));
    expect([png.width, png.height]).toEqual([1280, 2600]);
    const colours = new Map<number, number>();
    for (let i = 0; i < png.rgba.length; i += 4) {
      const key = (png.rgba[i]! << 16) | (png.rgba[i + 1]! << 8) | png.rgba[i + 2]!;
      colours.set(key, (colours.get(key) ?? 0) + 1);
    }
    const pixels = png.width * png.height;
    // Page and section backgrounds aside, a real share of the picture is text, charts and bars.
    const plain = (colours.get(0xffffff) ?? 0) + (colours.get(0xf7fafc) ?? 0);
    expect(colours.size).toBeGreaterThan(200);
    expect(1 - plain / pixels).toBeGreaterThan(0.05);
    expect(colours.get(0x2f855a) ?? 0, 'green (ok) timeline bars and badges').toBeGreaterThan(2000);
    expect(colours.get(0xc53030) ?? 0, 'red (failed) drill badge and points').toBeGreaterThan(100);
  });

  it('writes a report for one database with --database, and refuses a missing --out or an unknown database', async () => {
    const out = join(stack.workDir, 'report-fresh');
    const human = await cli(['report', '--out', out, '--database', 'fresh']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toBe(`wrote ${join(out, 'index.html')}\n  fresh: 0 backups, 0 drills, 0 restores\n`);
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(attributes(html, 'database', 'data-database')).toEqual(['fresh']);

    const lost = await cli(['report', '--out', join(stack.workDir, 'report-lost'), '--database', 'lost']);
    expect(lost.code).toBe(0);
    expect(lost.stderr).toMatch(/^warning: lost: could not read .*not-a-directory: ENOTDIR/m);

    const noOut = await cli(['report']);
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toMatch(/--out is required\nHINT: pgrunbook report --out DIR/);
    const unknown = await cli(['report', '--out', out, '--database', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown database "nope"\nHINT: databases in the config: app, fresh, lost/);
  });

  it('drills list shows past drills newest first with outcome, backup, RTO, RPO and failed checks', async () => {
    const json = await cli(['drills', 'list', '--database', 'app', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const listed = JSON.parse(json.stdout);
    expect(listed).toMatchObject({ ok: true, database: 'app', repository: 'local' });
    expect(listed.drills).toEqual([...drills].reverse());

    const limited = JSON.parse((await cli(['drills', 'list', '--database', 'app', '--limit', '2', '--json'])).stdout);
    expect(limited.drills.map((d: DrillReport) => d.workflow_id)).toEqual([drills[4]!.workflow_id, drills[3]!.workflow_id]);

    const human = await cli(['drills', 'list', '--database', 'app']);
    expect(human.code).toBe(0);
    const lines = human.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^STARTED\s+OUTCOME\s+BACKUP\s+RTO\s+RPO\s+FAILED CHECKS$/);
    expect(lines).toHaveLength(6);
    expect(lines[1]).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d UTC\\s+passed\\s+${drills[4]!.backup_id}\\s+31 s\\s+8\\.0 h\\s+-$`));
    expect(lines[3]).toMatch(new RegExp(`\\s+failed\\s+${drills[2]!.backup_id}\\s+3 min 14 s\\s+32\\.0 h\\s+row-counts$`));

    const none = await cli(['drills', 'list', '--database', 'fresh']);
    expect(none.stdout).toMatch(/^no drills of fresh in .* yet$/m);
    expect((await cli(['drills', 'list'])).code).toBe(2);
    const badLimit = await cli(['drills', 'list', '--database', 'app', '--limit', '0']);
    expect(badLimit.code).toBe(2);
    expect(badLimit.stderr).toMatch(/--limit: expected a whole number of at least 1, got "0"/);
  });
});
