import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Config } from '../../config/schema.js';
import { collectReport } from '../../report/collect.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { drillReportKey } from '../../repository/reports.js';
import { writeAll } from '../../repository/types.js';
import { drillReport } from './fixtures.js';

const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-report-collect-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

// A local repository whose path is a regular file: every listing fails (ENOTDIR), like a
// repository that is unreachable.
writeFileSync(join(workDir, 'not-a-directory'), 'x');
const config = Config.parse({
  temporal: { address: '127.0.0.1:7233' },
  repositories: { local: { type: 'local', path: join(workDir, 'repo') }, broken: { type: 'local', path: join(workDir, 'not-a-directory') } },
  databases: { app: { dbname: 'app' }, fresh: { dbname: 'fresh' }, lost: { dbname: 'lost', repository: 'broken' } },
});

describe('collectReport', () => {
  it('reads drill reports newest first, skips unreadable ones, and reports an unreadable repository as a problem instead of failing', async () => {
    const repository = new RepositoryRegistry(config).get('local');
    const older = new Date('2026-09-05T10:00:00Z');
    const newer = new Date('2026-10-03T10:00:00Z');
    for (const startedAt of [older, newer]) {
      const report = drillReport({ database: 'app', startedAt, backupId: 'app/20260905T020000Z', backupStartedAt: new Date(startedAt.getTime() - 8 * 3_600_000), restoreSeconds: 12 });
      await writeAll(repository, drillReportKey('app', startedAt), JSON.stringify(report));
    }
    await writeAll(repository, drillReportKey('app', new Date('2026-11-07T10:00:00Z')), '{"kind": "drill", trunc');

    const data = await collectReport(config, { now: new Date('2026-11-22T00:00:00Z') });
    expect(data.generatedAt).toBe('2026-11-22T00:00:00.000Z');
    expect(data.databases.map((d) => d.database)).toEqual(['app', 'fresh', 'lost']);
    const [app, fresh, lost] = data.databases;
    expect(app!.problems).toEqual([]);
    expect(app!.drills.map((d) => d.started_at)).toEqual([newer.toISOString(), older.toISOString()]);
    expect(app!.timeline).toMatchObject({ kind: 'drill', startedAt: newer.toISOString() });
    expect(fresh).toMatchObject({ problems: [], backups: [], drills: [], restores: [], timeline: null });
    // One problem, not one per kind of file: the repository as a whole is unreadable.
    expect(lost!.problems).toHaveLength(1);
    expect(lost!.problems[0]).toMatch(/^could not read .*not-a-directory: ENOTDIR/);

    const only = await collectReport(config, { databases: ['fresh'] });
    expect(only.databases.map((d) => d.database)).toEqual(['fresh']);
  });
});
