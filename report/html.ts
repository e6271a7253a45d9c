import type { DrillReport } from '../repository/reports.js';
import type { BackupPoint, DatabaseReport, ReportData, RestoreSummary, Timeline } from './collect.js';
import { formatDuration, formatBytes, formatTimestamp } from './units.js';

// The static HTML report: one self-contained file (inline CSS, inline SVG, no script, no font, no
// network), readable from a file share or a mail attachment years later. A Content-Security-Policy
// forbids every fetch, so a reference that slipped in would show as missing, not load silently.
// Elements tests and scrapers look for carry a `data-testid`; values carry raw numbers in data-*.

const TABLE_ROWS = 15;

export function renderReport(data: ReportData): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pgrunbook ${esc(data.pgrunbookVersion)}">
<title>pgrunbook report</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>pgrunbook report</h1>
<p class="meta" data-testid="generated-at">Generated <time datetime="${esc(data.generatedAt)}">${esc(formatTimestamp(data.generatedAt))}</time> by pgrunbook ${esc(data.pgrunbookVersion)}</p>
</header>
<main>
${overview(data)}
${data.databases.map(databaseSection).join('\n')}
</main>
</body>
</html>
`;
}

function overview(data: ReportData): string {
  if (data.databases.length === 0) return '<p class="empty" data-testid="no-databases">no databases in the config</p>';
  const rows = data.databases.map((db) => {
    const latestGood = db.backups.find((b) => b.state === 'verified');
    const drill = db.drills[0];
    const passed = db.drills.filter((d) => d.outcome === 'passed').length;
    return `<tr data-testid="overview-row" data-database="${esc(db.database)}">
<td><a href="#${esc(sectionId(db.database))}">${esc(db.database)}</a>${db.problems.length ? ' <span class="badge failed">unreadable</span>' : ''}</td>
<td>${latestGood ? `${esc(formatTimestamp(latestGood.startedAt))}${latestGood.sizeBytes !== null ? `, ${esc(formatBytes(latestGood.sizeBytes))}` : ''}` : '<span class="muted">none</span>'}</td>
<td class="num">${db.backups.length}</td>
<td>${drill ? `${badge(drill.outcome)} ${esc(formatTimestamp(drill.started_at))}` : '<span class="muted">no drills yet</span>'}</td>
<td class="num">${drill ? seconds(drill.rto_seconds) : '-'}</td>
<td class="num">${drill ? seconds(drill.rpo_seconds) : '-'}</td>
<td class="num">${db.drills.length ? `${passed}/${db.drills.length}` : '-'}</td>
</tr>`;
  });
  return `<section data-testid="overview">
<h2>Overview</h2>
<table>
<thead><tr><th>Database</th><th>Latest good backup</th><th>Backups</th><th>Latest drill</th><th>RTO</th><th>RPO</th><th>Drills passed</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>
</section>`;
}

function databaseSection(db: DatabaseReport): string {
  return `<section class="database" id="${esc(sectionId(db.database))}" data-testid="database" data-database="${esc(db.database)}">
<h2>${esc(db.database)}</h2>
<p class="meta">repository ${esc(db.repository.id)}${db.repository.location ? ` (${esc(db.repository.location)})` : ''}</p>
${db.problems.map((p) => `<p class="problem" role="alert" data-testid="problem">${esc(p)}</p>`).join('\n')}
${backupsPart(db.backups)}
${drillsPart(db.drills)}
${timelinePart(db.timeline)}
${restoresPart(db.restores)}
</section>`;
}

function backupsPart(backups: BackupPoint[]): string {
  const points = (value: (b: BackupPoint) => number | null) =>
    backups.flatMap((b) => {
      const v = value(b);
      return v === null ? [] : [{ time: Date.parse(b.startedAt), value: v, failed: b.state !== 'verified', id: b.id, when: b.startedAt }];
    });
  const size = points((b) => b.sizeBytes);
  const duration = points((b) => b.durationSeconds);
  const rows = backups.slice(0, TABLE_ROWS).map(
    (b) => `<tr data-testid="backup-row" data-backup-id="${esc(b.id)}" data-state="${esc(b.state)}">
<td>${esc(formatTimestamp(b.startedAt))}</td><td>${b.label ? esc(b.label) : '<span class="muted">-</span>'}</td><td>${badge(b.state)}</td>
<td class="num">${b.sizeBytes !== null ? esc(formatBytes(b.sizeBytes)) : '-'}</td><td class="num">${seconds(b.durationSeconds)}</td>
<td>${b.error ? esc(b.error) : ''}</td></tr>`,
  );
  return `<div class="part" data-testid="backups">
<h3>Backups</h3>
${
  backups.length === 0
    ? '<p class="empty" data-testid="no-backups">no backups yet</p>'
    : `<div class="charts">
${lineChart({ testid: 'backup-size', title: 'Backup size', measure: 'bytes', points: size })}
${lineChart({ testid: 'backup-duration', title: 'Backup duration', measure: 'seconds', points: duration })}
</div>
<table data-testid="backups-table">
<thead><tr><th>Started</th><th>Label</th><th>State</th><th>Size</th><th>Duration</th><th>Error</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>${more(backups.length)}`
}
</div>`;
}

function drillsPart(drills: DrillReport[]): string {
  if (drills.length === 0) {
    return `<div class="part" data-testid="drills">
<h3>Restore drills</h3>
<p class="empty" data-testid="no-drills">no drills yet</p>
</div>`;
  }
  const points = (value: (d: DrillReport) => number | null) =>
    drills.flatMap((d) => {
      const v = value(d);
      return v === null ? [] : [{ time: Date.parse(d.started_at), value: v, failed: d.outcome !== 'passed', id: d.workflow_id, when: d.started_at }];
    });
  const passed = drills.filter((d) => d.outcome === 'passed').length;
  const latest = drills[0]!;
  const rows = drills.slice(0, TABLE_ROWS).map((d) => {
    const failedChecks = d.checks.filter((c) => c.outcome === 'fail');
    return `<tr data-testid="drill-row" data-workflow-id="${esc(d.workflow_id)}" data-outcome="${esc(d.outcome)}" data-rto-seconds="${d.rto_seconds ?? ''}" data-rpo-seconds="${d.rpo_seconds ?? ''}">
<td>${esc(formatTimestamp(d.started_at))}</td><td>${badge(d.outcome)}</td><td>${d.backup_id ? esc(d.backup_id) : '-'}</td>
<td class="num" data-testid="drill-rto">${seconds(d.rto_seconds)}</td><td class="num" data-testid="drill-rpo">${seconds(d.rpo_seconds)}</td>
<td class="num">${checksPassed(d.checks)}</td>
<td data-testid="drill-failed-checks">${failedChecks.map((c) => `<span class="check-failed" title="${esc(describeCheck(c))}">${esc(c.name)}</span>`).join(', ')}</td>
<td>${d.error ? esc(`${d.error.step}: ${d.error.message}`) : ''}</td></tr>`;
  });
  return `<div class="part" data-testid="drills">
<h3>Restore drills</h3>
<p data-testid="drill-summary">${passed} of ${drills.length} drills passed; latest ${badge(latest.outcome)} on ${esc(formatTimestamp(latest.started_at))}, RTO ${seconds(latest.rto_seconds)}, RPO ${seconds(latest.rpo_seconds)}</p>
<div class="charts">
${lineChart({ testid: 'drill-rto', title: 'RTO (restore until checks passed)', measure: 'seconds', points: points((d) => d.rto_seconds) })}
${lineChart({ testid: 'drill-rpo', title: 'RPO (age of the backup restored)', measure: 'seconds', points: points((d) => d.rpo_seconds) })}
</div>
<table data-testid="drills-table">
<thead><tr><th>Started</th><th>Outcome</th><th>Backup</th><th>RTO</th><th>RPO</th><th>Checks passed</th><th>Failed checks</th><th>Error</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>${more(drills.length)}
</div>`;
}

function restoresPart(restores: RestoreSummary[]): string {
  if (restores.length === 0) return '';
  const rows = restores.slice(0, TABLE_ROWS).map(
    (r) => `<tr data-testid="restore-row" data-workflow-id="${esc(r.workflowId)}" data-outcome="${esc(r.outcome)}">
<td>${esc(formatTimestamp(r.startedAt))}</td><td>${badge(r.outcome)}</td><td>${r.backupId ? esc(r.backupId) : '-'}</td><td>${r.target ? esc(r.target) : '-'}</td>
<td>${r.strategy ? esc(r.strategy) : '-'}</td><td class="num">${seconds(r.durationSeconds)}</td><td class="num">${seconds(r.downtimeSeconds)}</td><td>${r.error ? esc(r.error) : ''}</td></tr>`,
  );
  return `<div class="part" data-testid="restores">
<h3>Restores</h3>
<table>
<thead><tr><th>Started</th><th>Outcome</th><th>Backup</th><th>Target</th><th>Strategy</th><th>Duration</th><th>App downtime</th><th>Error</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>${more(restores.length)}
</div>`;
}

interface ChartPoint {
  time: number;
  value: number;
  failed: boolean;
  id: string;
  when: string;
}

/** A time series as an inline SVG: value over time, failed runs in red, a tooltip per point. */
function lineChart(chart: { testid: string; title: string; measure: 'bytes' | 'seconds'; points: ChartPoint[] }): string {
  const unit = chart.measure === 'bytes' ? formatBytes : formatDuration;
  const W = 460;
  const H = 200;
  const left = 70;
  const right = 16;
  const top = 14;
  const bottom = 34;
  const points = chart.points.filter((p) => Number.isFinite(p.time) && Number.isFinite(p.value)).sort((a, b) => a.time - b.time);
  const head = `<figure class="chart" data-testid="${esc(chart.testid)}-chart" data-points="${points.length}">
<figcaption>${esc(chart.title)}${points.length ? ` <span class="muted">latest ${esc(unit(points.at(-1)!.value))}</span>` : ''}</figcaption>`;
  if (points.length === 0) return `${head}<p class="empty">no values yet</p></figure>`;
  const t0 = points[0]!.time;
  const t1 = points.at(-1)!.time;
  const span = t1 - t0 || 86_400_000;
  const yMax = (chart.measure === 'bytes' ? niceBytes : niceSeconds)(Math.max(...points.map((p) => p.value)));
  const x = (t: number) => (t1 === t0 ? left + (W - left - right) / 2 : left + ((t - t0) / span) * (W - left - right));
  const y = (v: number) => top + (1 - v / yMax) * (H - top - bottom);
  const grid = [0, yMax / 2, yMax]
    .map((v) => `<line class="grid" x1="${left}" x2="${W - right}" y1="${r(y(v))}" y2="${r(y(v))}"/><text class="axis" x="${left - 6}" y="${r(y(v) + 4)}" text-anchor="end">${esc(unit(v))}</text>`)
    .join('');
  // Dates of the first and last point (one label when they fall on the same day).
  const dates = [...new Set([t0, t1].map((t) => new Date(t).toISOString().slice(0, 10)))];
  const xLabels =
    dates.length === 1
      ? `<text class="axis" x="${r(left + (W - left - right) / 2)}" y="${H - 12}" text-anchor="middle">${dates[0]}</text>`
      : `<text class="axis" x="${left}" y="${H - 12}" text-anchor="start">${dates[0]}</text><text class="axis" x="${W - right}" y="${H - 12}" text-anchor="end">${dates[1]}</text>`;
  const line = points.length > 1 ? `<polyline class="series" points="${points.map((p) => `${r(x(p.time))},${r(y(p.value))}`).join(' ')}"/>` : '';
  const circles = points
    .map(
      (p) =>
        `<circle class="${p.failed ? 'point failed' : 'point'}" data-testid="${esc(chart.testid)}-point" data-id="${esc(p.id)}" data-value="${p.value}" data-outcome="${p.failed ? 'failed' : 'ok'}" cx="${r(x(p.time))}" cy="${r(y(p.value))}" r="4"><title>${esc(`${formatTimestamp(p.when)}: ${unit(p.value)}${p.failed ? ' (failed)' : ''}`)}</title></circle>`,
    )
    .join('\n');
  return `${head}
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(chart.title)}">
${grid}${xLabels}
${line}
${circles}
</svg>
</figure>`;
}

/** The steps of the latest restore or drill as Gantt-like bars on one time axis. */
function timelinePart(timeline: Timeline | null): string {
  if (!timeline) {
    return `<div class="part" data-testid="timeline">
<h3>Latest restore or drill</h3>
<p class="empty" data-testid="no-timeline">no restore or drill yet</p>
</div>`;
  }
  const steps = timeline.steps.filter((s) => Number.isFinite(Date.parse(s.startedAt)));
  const head = `<div class="part" data-testid="timeline" data-kind="${timeline.kind}" data-workflow-id="${esc(timeline.workflowId)}" data-outcome="${esc(timeline.outcome)}">
<h3>Latest ${timeline.kind}: ${badge(timeline.outcome)} <span class="muted">${esc(timeline.workflowId)}, started ${esc(formatTimestamp(timeline.startedAt))}</span></h3>`;
  if (steps.length === 0) return `${head}<p class="empty">no steps recorded</p></div>`;
  const t0 = Math.min(...steps.map((s) => Date.parse(s.startedAt)));
  const t1 = Math.max(...steps.map((s) => Date.parse(s.startedAt) + Math.max(0, s.durationMs)));
  const span = Math.max(1, t1 - t0);
  const W = 900;
  const label = 190;
  const value = 90;
  const row = 24;
  const barArea = W - label - value;
  const H = steps.length * row + 30;
  const bars = steps
    .map((s, i) => {
      const start = Date.parse(s.startedAt) - t0;
      const bx = label + (start / span) * barArea;
      const bw = Math.max(2, (Math.max(0, s.durationMs) / span) * barArea);
      const yTop = i * row + 4;
      return `<g data-testid="timeline-step" data-step="${esc(s.step)}" data-outcome="${esc(s.outcome)}" data-duration-ms="${s.durationMs}">
<title>${esc(`${s.step}: ${s.outcome}, ${formatDuration(s.durationMs / 1000)}${s.error ? ` (${s.error})` : ''}`)}</title>
<text class="step" x="${label - 8}" y="${yTop + 13}" text-anchor="end">${esc(s.step)}</text>
<rect class="bar ${esc(outcomeClass(s.outcome))}" x="${r(bx)}" y="${yTop}" width="${r(bw)}" height="${row - 8}"/>
<text class="axis" x="${W - 4}" y="${yTop + 13}" text-anchor="end">${esc(formatDuration(s.durationMs / 1000))}</text>
</g>`;
    })
    .join('\n');
  const axisY = steps.length * row + 18;
  return `${head}
<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="step timeline">
${bars}
<line class="grid" x1="${label}" x2="${label + barArea}" y1="${axisY - 12}" y2="${axisY - 12}"/>
<text class="axis" x="${label}" y="${axisY}" text-anchor="start">0 s</text>
<text class="axis" x="${label + barArea}" y="${axisY}" text-anchor="end">${esc(formatDuration(span / 1000))}</text>
</svg>
</div>`;
}

function describeCheck(check: DrillReport['checks'][number]): string {
  const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v) ?? 'null');
  return `expected ${show(check.expected)}, found ${show(check.actual)}${check.detail ? `: ${check.detail}` : ''}`;
}

function badge(outcome: string): string {
  return `<span class="badge ${esc(outcomeClass(outcome))}">${esc(outcome)}</span>`;
}

function outcomeClass(outcome: string): string {
  if (outcome === 'passed' || outcome === 'verified' || outcome === 'completed' || outcome === 'ok') return 'ok';
  if (outcome === 'cancelled' || outcome === 'skipped' || outcome === 'incomplete' || outcome === 'rejected') return 'neutral';
  return 'failed';
}

function seconds(value: number | null | undefined): string {
  return value === null || value === undefined ? '-' : esc(formatDuration(value));
}

function more(total: number): string {
  return total > TABLE_ROWS ? `\n<p class="muted">${TABLE_ROWS} newest of ${total} shown</p>` : '';
}

function sectionId(database: string): string {
  return `db-${database.replace(/[^A-Za-z0-9_-]/g, '-')}`;
}

/** An axis maximum a reader takes in at a glance: 1, 2 or 5 times a power of ten of B, KiB, MiB... */
function niceBytes(value: number): number {
  if (!(value > 0)) return 1024;
  const unit = 1024 ** Math.min(4, Math.max(0, Math.floor(Math.log(value) / Math.log(1024))));
  const step = [1, 2, 5, 10, 20, 50, 100, 200, 500].find((s) => s * unit >= value);
  // Above 500 of a unit, the next unit reads better (1.0 MiB, not 1000.0 KiB).
  return step === undefined ? 1024 * unit : step * unit;
}

/** An axis maximum on the clock: 10 s, 1 min, 30 min, 6 h, 2 d..., whose half is a round duration too. */
function niceSeconds(value: number): number {
  const steps = [1, 2, 4, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 4 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 4 * 86_400, 7 * 86_400, 14 * 86_400, 30 * 86_400];
  return steps.find((step) => step >= value) ?? Math.ceil(value / (30 * 86_400)) * 30 * 86_400;
}

function r(n: number): string {
  return (Math.round(n * 10) / 10).toString();
}

/** Text and attribute values: everything from a repository is data, never markup. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const STYLE = `
:root { color-scheme: light; --ok: #2f855a; --failed: #c53030; --neutral: #718096; --line: #2b6cb0; --grid: #e2e8f0; --text: #1a202c; --muted: #4a5568; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--text); background: #f7fafc; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 4px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
section { background: #fff; border: 1px solid var(--grid); border-radius: 6px; padding: 14px 18px; margin: 16px 0; }
.meta, .muted { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
.problem { background: #fff5f5; border-left: 4px solid var(--failed); padding: 8px 12px; color: #742a2a; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--grid); vertical-align: top; }
th { background: #edf2f7; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600; color: #fff; background: var(--neutral); }
.badge.ok { background: var(--ok); }
.badge.failed { background: var(--failed); }
.check-failed { color: var(--failed); font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure.chart { margin: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg { max-width: 100%; height: auto; background: #fff; }
svg text { font-size: 11px; fill: var(--muted); }
svg text.step { font-size: 12px; fill: var(--text); }
.grid { stroke: var(--grid); stroke-width: 1; }
.series { fill: none; stroke: var(--line); stroke-width: 2; }
.point { fill: var(--line); stroke: #fff; stroke-width: 1.5; }
.point.failed { fill: var(--failed); }
.bar.ok { fill: var(--ok); }
.bar.failed { fill: var(--failed); }
.bar.neutral { fill: var(--neutral); }
`;

/** "4/4 (1 skipped)": a skipped check (no canary configured) is neither a pass nor a failure. */
function checksPassed(checks: { outcome: string }[]): string {
  const ran = checks.filter((c) => c.outcome !== 'skipped');
  const skipped = checks.length - ran.length;
  return `${ran.filter((c) => c.outcome === 'pass').length}/${ran.length}${skipped > 0 ? ` (${skipped} skipped)` : ''}`;
}
