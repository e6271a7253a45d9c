import { describe, expect, it } from 'vitest';
import type { BackupPoint, DatabaseReport, ReportData, RestoreSummary } from '../../report/collect.js';
import { latestTimeline } from '../../report/collect.js';
import { renderReport } from '../../report/html.js';
import { formatDuration } from '../../report/units.js';
import { drillReport } from './fixtures.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const now = new Date('2026-11-22T08:00:00.000Z');

function backup(daysAgo: number, sizeBytes: number, state: BackupPoint['state'] = 'verified', label: string | null = null): BackupPoint {
  const started = new Date(now.getTime() - daysAgo * DAY);
  return {
    id: `app/${started.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '')}${label ? `_${label}` : ''}`,
    label,
    state,
    startedAt: started.toISOString(),
    finishedAt: new Date(started.getTime() + 40_000).toISOString(),
    sizeBytes,
    durationSeconds: 40,
    error: state === 'failed' ? 'pg_dump: error: connection lost' : null,
  };
}

function database(overrides: Partial<DatabaseReport> = {}): DatabaseReport {
  return { database: 'app', repository: { id: 'local', location: '/var/backups/pgrunbook' }, problems: [], backups: [], drills: [], restores: [], timeline: null, ...overrides };
}

const report = (...databases: DatabaseReport[]): ReportData => ({ generatedAt: now.toISOString(), pgrunbookVersion: '0.1.0', databases });

/** Counts elements carrying `data-testid="<id>"`. */
const count = (html: string, testid: string) => html.split(`data-testid="${testid}"`).length - 1;

describe('renderReport', () => {
  it('shows backups as points of the size and duration charts, and failed backups in red', () => {
    const html = renderReport(report(database({ backups: [backup(0, 5_400_000), backup(1, 5_300_000, 'failed'), backup(2, 5_200_000)] })));
    expect(count(html, 'backup-size-point')).toBe(3);
    expect(count(html, 'backup-duration-point')).toBe(3);
    expect(html).toMatch(/data-testid="backup-size-point"[^>]*data-value="5300000" data-outcome="failed"/);
    expect(count(html, 'backup-row')).toBe(3);
    expect(html).toContain('5.1 MiB');
  });

  it('shows drills with RTO and RPO in human units and marks a failed drill failed', () => {
    const drills = [
      drillReport({ database: 'app', startedAt: new Date(now.getTime() - 2 * DAY), backupId: 'app/x', backupStartedAt: new Date(now.getTime() - 2 * DAY - 8 * HOUR), restoreSeconds: 20 }),
      drillReport({ database: 'app', startedAt: new Date(now.getTime() - 32 * DAY), backupId: 'app/y', backupStartedAt: new Date(now.getTime() - 35 * DAY), restoreSeconds: 200, failedCheck: 'row-counts' }),
    ];
    const html = renderReport(report(database({ drills })));
    expect(count(html, 'drill-rto-point')).toBe(2);
    expect(count(html, 'drill-rpo-point')).toBe(2);
    expect(html).toMatch(/data-testid="drill-row"[^>]*data-outcome="passed" data-rto-seconds="24" data-rpo-seconds="28800"/);
    expect(html).toMatch(/data-testid="drill-row"[^>]*data-outcome="failed"/);
    expect(html).toContain('<td class="num" data-testid="drill-rpo">8.0 h</td>');
    expect(html).toContain('<td class="num" data-testid="drill-rpo">3.0 d</td>');
    expect(html).toContain('<td class="num" data-testid="drill-rto">3 min 24 s</td>');
    expect(html).toMatch(/<span class="check-failed" title="expected \{&quot;public.users&quot;:1200\}, found \{&quot;public.users&quot;:1187\}: public.users: 13 rows missing">row-counts<\/span>/);
    expect(html).toMatch(/data-testid="drill-summary">1 of 2 drills passed; latest <span class="badge ok">passed<\/span>/);
  });

  it('escapes everything read from a repository: no markup from a database name, label, check or error gets through', () => {
    const evil = '<script>alert(1)</script>';
    const failed = drillReport({ database: evil, startedAt: new Date(now.getTime() - DAY), backupId: `app/x_${evil}`, backupStartedAt: new Date(now.getTime() - 2 * DAY), restoreSeconds: 5, failedCheck: 'canary' });
    failed.checks[3]!.name = `"><img src=x onerror=alert(1)>`;
    failed.steps[0]!.step = evil;
    failed.error = { step: 'checks', type: 'X', message: `it said ${evil} & more` };
    const html = renderReport(report(database({ database: evil, backups: [backup(1, 1000, 'failed', evil)], drills: [failed], timeline: latestTimeline(failed, undefined), problems: [evil] })));
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).toContain('&quot;&gt;&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('it said &lt;script&gt;alert(1)&lt;/script&gt; &amp; more');
    expect(html).toContain('data-database="&lt;script&gt;alert(1)&lt;/script&gt;"');
  });

  it('says "no backups yet" and "no drills yet" for a database with no history', () => {
    const html = renderReport(report(database()));
    expect(count(html, 'database')).toBe(1);
    expect(html).toContain('data-testid="no-backups">no backups yet<');
    expect(html).toContain('data-testid="no-drills">no drills yet<');
    expect(html).toContain('data-testid="no-timeline">no restore or drill yet<');
    expect(html).not.toContain('<svg');
    expect(renderReport(report())).toContain('no databases in the config');
  });

  it('is self-contained: no script, no external reference, a CSP that forbids fetching, a generated-at line', () => {
    const drills = [drillReport({ database: 'app', startedAt: new Date(now.getTime() - DAY), backupId: 'app/x', backupStartedAt: new Date(now.getTime() - 2 * DAY), restoreSeconds: 5 })];
    const html = renderReport(report(database({ backups: [backup(1, 1000)], drills, timeline: latestTimeline(drills[0], undefined) })));
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(/i);
    // The only URL is the SVG namespace, which is an identifier, never fetched.
    expect(html.match(/https?:\/\/[^"\s]+/g)?.filter((u) => u !== 'http://www.w3.org/2000/svg') ?? []).toEqual([]);
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`);
    expect(html).toMatch(/data-testid="generated-at">Generated <time datetime="2026-11-22T08:00:00.000Z">2026-11-22 08:00 UTC<\/time> by pgrunbook 0.1.0/);
  });

  it('draws the timeline of whichever ran last, the latest restore or the latest drill', () => {
    const drill = drillReport({ database: 'app', startedAt: new Date(now.getTime() - 3 * DAY), backupId: 'app/x', backupStartedAt: new Date(now.getTime() - 4 * DAY), restoreSeconds: 30 });
    const restore: RestoreSummary = {
      workflowId: 'restore-app-1',
      startedAt: new Date(now.getTime() - DAY).toISOString(),
      finishedAt: new Date(now.getTime() - DAY + 9000).toISOString(),
      outcome: 'completed',
      backupId: 'app/x',
      target: 'app_copy',
      strategy: 'swap',
      durationSeconds: 9,
      downtimeSeconds: null,
      error: null,
      steps: [
        { step: 'preflight', startedAt: new Date(now.getTime() - DAY).toISOString(), durationMs: 1000, outcome: 'ok', error: null },
        { step: 'restore', startedAt: new Date(now.getTime() - DAY + 1000).toISOString(), durationMs: 8000, outcome: 'ok', error: null },
      ],
    };
    const newerRestore = renderReport(report(database({ drills: [drill], restores: [restore], timeline: latestTimeline(drill, restore) })));
    expect(newerRestore).toMatch(/data-testid="timeline" data-kind="restore" data-workflow-id="restore-app-1"/);
    expect([...newerRestore.matchAll(/data-testid="timeline-step" data-step="([^"]+)"/g)].map((m) => m[1])).toEqual(['preflight', 'restore']);
    expect(count(newerRestore, 'restore-row')).toBe(1);

    const olderRestore = { ...restore, startedAt: new Date(now.getTime() - 5 * DAY).toISOString() };
    const newerDrill = renderReport(report(database({ drills: [drill], restores: [olderRestore], timeline: latestTimeline(drill, olderRestore) })));
    expect(newerDrill).toMatch(/data-testid="timeline" data-kind="drill"/);
    expect([...newerDrill.matchAll(/data-testid="timeline-step" data-step="([^"]+)"/g)].map((m) => m[1])).toEqual(['preflight', 'create-scratch', 'restore', 'checks', 'teardown', 'report']);
  });

  it('shows an unreadable repository as a problem in its database section', () => {
    const html = renderReport(report(database({ problems: ['could not list backups in /nope: ENOTDIR'] }), database({ database: 'other' })));
    expect(html).toMatch(/<p class="problem" role="alert" data-testid="problem">could not list backups in \/nope: ENOTDIR<\/p>/);
    expect(count(html, 'database')).toBe(2);
  });
});

describe('formatDuration', () => {
  it('uses seconds, minutes, hours or days, whichever an operator reads at a glance', () => {
    expect(formatDuration(4.25)).toBe('4.3 s');
    expect(formatDuration(42)).toBe('42 s');
    expect(formatDuration(125)).toBe('2 min 5 s');
    expect(formatDuration(8 * 3600)).toBe('8.0 h');
    expect(formatDuration(3 * 86_400)).toBe('3.0 d');
  });
});
