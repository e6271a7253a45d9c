import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listBackups } from '../../repository/catalog.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { drillReportKey, listDrillReports } from '../../repository/reports.js';
import { writeAll } from '../../repository/types.js';

// Drill reports live under reports/<database>/; a database whose id is "reports" keeps its
// backups under reports/<timestamp>/. Neither may be mistaken for the other.

const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-reports-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('drill reports beside backups', () => {
  it('keeps a database called "reports" and the drill reports of others apart', async () => {
    const repo = new LocalRepository('local', dir);
    await writeAll(repo, 'reports/20261121T020000Z/db_full.dump', 'x');
    const at = new Date('2026-11-07T10:00:00Z');
    await writeAll(repo, drillReportKey('app', at), JSON.stringify({ kind: 'drill', database: 'app', started_at: at.toISOString() }));
    await writeAll(repo, drillReportKey('reports', at), JSON.stringify({ kind: 'drill', database: 'reports', started_at: at.toISOString() }));
    await writeAll(repo, 'reports/app/drill-20261101T100000Z.json', '{ truncated');

    expect((await listBackups(repo, 'reports')).map((b) => b.id)).toEqual(['reports/20261121T020000Z']);
    expect(await listBackups(repo, 'app')).toEqual([]);
    expect((await listDrillReports(repo, 'app')).map((r) => r.database)).toEqual(['app']);
    expect((await listDrillReports(repo, 'reports')).map((r) => r.database)).toEqual(['reports']);
  });
});
