import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { projectRoot } from '../../stack/binaries.js';
import { METRIC, WorkerMetrics } from '../../worker/metrics.js';

// The alert rules and the Grafana dashboard shipped in deploy/: valid for Prometheus' own tool,
// each alert proven to fire (and to stay quiet) on synthetic series, and every metric they use
// one the worker really exports.

const exec = promisify(execFile);
const PROMTOOL = '/usr/bin/promtool';
const rulesFile = join(projectRoot, 'deploy', 'prometheus', 'pgrunbook-alerts.yml');
const rulesTestFile = join(projectRoot, 'deploy', 'prometheus', 'pgrunbook-alerts.test.yml');
const dashboardFile = join(projectRoot, 'deploy', 'grafana', 'pgrunbook-dashboard.json');
const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-rules-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

async function promtool(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  if (!existsSync(PROMTOOL)) throw new Error(`${PROMTOOL} is missing\nHINT: apt-get install prometheus (scripts/bootstrap.sh does it as root)`);
  return exec(PROMTOOL, args, { cwd: workDir, timeout: 120_000 });
}

/** The metric names a PromQL expression selects: identifiers that are not functions, keywords, labels or strings. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const match of stripped.matchAll(/(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (match[2] || ['and', 'or', 'unless', 'bool', 'offset'].includes(match[1]!)) continue;
    names.add(match[1]!);
  }
  return [...names];
}

/** What the worker's registry serves (pgrunbook's metrics and the process ones). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = new WorkerMetrics({ databases: ['app'] });
  return new Set((await metrics.registry.getMetricsAsJSON()).map((m) => m.name));
}

const ALERTS = ['BackupFailed', 'BackupSlow', 'BaseBackupOverdue', 'DrillFailed', 'DrillOverdue', 'PitrFailed', 'WalArchiveStale'];

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const rules = (): Rule[] => (parse(readFileSync(rulesFile, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface Panel { type: string; title: string; datasource?: { type: string; uid: string }; targets?: { expr: string; datasource?: { uid: string } }[] }
const dashboard = (): { uid: string; panels: Panel[]; templating: { list: { name: string; type: string; query: unknown; datasource?: { uid: string } }[] } } =>
  JSON.parse(readFileSync(dashboardFile, 'utf8'));

describe('deploy/prometheus/pgrunbook-alerts.yml', () => {
  it('passes `promtool check rules` (syntax, templates, lint)', async () => {
    const { stdout } = await promtool('check', 'rules', rulesFile);
    expect(stdout).toContain('SUCCESS: 8 rules found');
  });

  it('passes `promtool test rules`: each alert fires on synthetic series where it must and stays quiet where it must not', async () => {
    const { stdout } = await promtool('test', 'rules', rulesTestFile);
    expect(stdout).toContain('SUCCESS');
    // Every alert has at least one firing and one quiet case in the unit tests.
    const tests = (parse(readFileSync(rulesTestFile, 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] }).tests.flatMap((t) => t.alert_rule_test);
    for (const alert of ALERTS) {
      expect(tests.some((t) => t.alertname === alert && t.exp_alerts.length > 0), `${alert} fires somewhere`).toBe(true);
      expect(tests.some((t) => t.alertname === alert && t.exp_alerts.length === 0), `${alert} stays quiet somewhere`).toBe(true);
    }
  });

  it('has the issue\'s alerts, each with a severity, a summary and a runbook hint', () => {
    const alerts = rules();
    expect([...new Set(alerts.map((r) => r.alert))].sort()).toEqual(ALERTS);
    for (const rule of alerts) {
      expect(['critical', 'warning']).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary).toBeTruthy();
      expect(rule.annotations?.runbook).toMatch(/pgrunbook /);
    }
    // The seed's BackupFailed: no success in 48 hours, and absent() for when nothing reports at all.
    expect(alerts.filter((r) => r.alert === 'BackupFailed').map((r) => r.expr)).toEqual([
      expect.stringContaining('> 48 * 3600'),
      'absent(postgresql_backup_last_success_timestamp)',
    ]);
    // Point-in-time recovery: the thresholds are the documented ones, per cluster.
    const expr = (alert: string): string => alerts.find((r) => r.alert === alert)!.expr;
    expect(expr('BaseBackupOverdue')).toContain('max by (cluster) (postgresql_basebackup_last_success_timestamp) > 8 * 86400');
    expect(expr('WalArchiveStale')).toContain('max by (cluster) (postgresql_wal_last_archived_timestamp) > 3600');
    expect(expr('PitrFailed')).toContain('postgresql_pitr_total{outcome="failed"}');
  });

  it('documents a pg_stat_archiver rule for postgres_exporter that promtool checks and that fires on failed archive_command runs only', async () => {
    // The example is commented out in the rules file (its metric is postgres_exporter's, not
    // ours): uncommented, it must be a valid rule that does what its comment says.
    const lines = readFileSync(rulesFile, 'utf8').split('\n');
    const start = lines.indexOf('# example: WalArchiveCommandFailing');
    expect(start).toBeGreaterThan(0);
    const example = lines.slice(start + 1).filter((l) => l.startsWith('#      ')).map((l) => l.slice('#      '.length)).join('\n');
    const [rule] = parse(example) as Rule[];
    expect(rule).toMatchObject({ alert: 'WalArchiveCommandFailing', expr: 'increase(pg_stat_archiver_failed_count[15m]) > 0', labels: { severity: 'critical' } });
    writeFileSync(join(workDir, 'archiver-example.yml'), stringify({ groups: [{ name: 'example', rules: [rule] }] }));
    expect((await promtool('check', 'rules', join(workDir, 'archiver-example.yml'))).stdout).toContain('SUCCESS: 1 rules found');
    // db-1 fails three times from 00:35 (then archives again: the counter stays); db-2 archives fine;
    // db-3's statistics are reset (pg_stat_reset_shared('archiver')), which is no failure.
    writeFileSync(
      join(workDir, 'archiver-example.test.yml'),
      stringify({
        rule_files: ['archiver-example.yml'],
        evaluation_interval: '5m',
        tests: [
          {
            interval: '5m',
            input_series: [
              { series: 'pg_stat_archiver_failed_count{instance="db-1:9187", job="postgres"}', values: '0 0 0 0 0 0 0 1 2 3 3 3 3 3 3 3 3 3 3 3' },
              { series: 'pg_stat_archiver_failed_count{instance="db-2:9187", job="postgres"}', values: '0x19' },
              { series: 'pg_stat_archiver_failed_count{instance="db-3:9187", job="postgres"}', values: '7x5 0x14' },
            ],
            alert_rule_test: [
              { eval_time: '30m', alertname: 'WalArchiveCommandFailing', exp_alerts: [] },
              // Pending from 00:35, firing 15 minutes later while failures stay in the window.
              { eval_time: '45m', alertname: 'WalArchiveCommandFailing', exp_alerts: [] },
              {
                eval_time: '50m',
                alertname: 'WalArchiveCommandFailing',
                exp_alerts: [{ exp_labels: { severity: 'critical', instance: 'db-1:9187', job: 'postgres' }, exp_annotations: { ...rule!.annotations, summary: 'archive_command fails on db-1:9187', description: rule!.annotations!.description!.replace('{{ $labels.instance }}', 'db-1:9187') } }],
              },
              { eval_time: '1h30m', alertname: 'WalArchiveCommandFailing', exp_alerts: [] },
            ],
          },
        ],
      }),
    );
    const { stdout } = await promtool('test', 'rules', join(workDir, 'archiver-example.test.yml'));
    expect(stdout).toContain('SUCCESS');
  });

  it('uses only metrics the worker exports', async () => {
    const exported = await exportedNames();
    const used = rules().flatMap((r) => metricNames(r.expr));
    expect(used.length).toBeGreaterThan(0);
    expect(used.filter((name) => !exported.has(name))).toEqual([]);
  });
});

describe('deploy/grafana/pgrunbook-dashboard.json', () => {
  const queries = (): { title: string; expr: string }[] =>
    dashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));

  it('parses, and every panel query is valid PromQL (checked by promtool as recording rules)', async () => {
    const exprs = queries();
    expect(exprs.length).toBeGreaterThanOrEqual(10);
    const file = join(workDir, 'dashboard-queries.yml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules: exprs.map((q, i) => ({ record: `pgrunbook_dashboard_query_${i}`, expr: q.expr })) }] }));
    const { stdout } = await promtool('check', 'rules', file);
    expect(stdout).toContain(`SUCCESS: ${exprs.length} rules found`);
  });

  it('queries only metrics the worker exports, and has a panel for each of pgrunbook\'s metrics', async () => {
    const exported = await exportedNames();
    const used = new Set(queries().flatMap((q) => metricNames(q.expr)));
    expect([...used].filter((name) => !exported.has(name))).toEqual([]);
    expect(Object.values(METRIC).filter((name) => !used.has(name))).toEqual([]);
  });

  it('takes its Prometheus data source from a template variable: no data source is hard-coded', () => {
    const { panels, templating } = dashboard();
    expect(templating.list.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      for (const target of panel.targets ?? []) expect(target.datasource?.uid, panel.title).toBe('${datasource}');
    }
    expect(templating.list.find((v) => v.name === 'database')?.datasource?.uid).toBe('${datasource}');
    const uids = [...readFileSync(dashboardFile, 'utf8').matchAll(/"uid": "([^"]*)"/g)].map((m) => m[1]);
    expect(new Set(uids)).toEqual(new Set(['${datasource}', 'pgrunbook']));
  });
});

describe('metricNames (the check above)', () => {
  it('finds selected metrics, not functions, grouping labels, matchers or keywords', () => {
    expect(metricNames('time() - max by (database) (postgresql_backup_last_success_timestamp{database=~"$database"}) > 48 * 3600')).toEqual(['postgresql_backup_last_success_timestamp']);
    expect(metricNames('sum by (database) (increase(a_total{x="y or z"}[24h])) or absent(b) and on (instance) c offset 1h')).toEqual(['a_total', 'b', 'c']);
  });
});
