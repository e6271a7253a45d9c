import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../stack/binaries.js';

const exec = promisify(execFile);
const workDir = mkdtempSync(join(tmpdir(), 'pgrunbook-dev-'));

afterAll(() => rmSync(workDir, { recursive: true, force: true }));

describe('pgrunbook dev --demo (the README\'s main command)', () => {
  it('starts Temporal, a throwaway cluster and a worker, backs up, re-verifies, test-restores under another name, drills, and prints one JSON document', async () => {
    const env = { ...process.env };
    delete env.DATABASE_URL;
    const { stdout } = await exec(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'dev', '--demo', '--json'], { cwd: workDir, env, timeout: 150_000 });
    const result = JSON.parse(stdout) as { ok: boolean; status: string; backupId: string; reverification: { ok: boolean; problems: string[] }; restore: { target: string; verification: { ok: boolean; tablesChecked: number } }; drill: { outcome: string; rtoSeconds: number; reportKey: string } };
    expect(result).toMatchObject({ ok: true, status: 'verified', reverification: { ok: true, problems: [] } });
    expect(result.restore).toMatchObject({ workflowId: 'restore-app', target: 'app_restore_test', backupId: result.backupId, downtimeSeconds: null, verification: { ok: true } });
    expect(result.restore.verification.tablesChecked).toBeGreaterThan(10);
    // The drill: the same backup into a throwaway cluster, passed, measured, report in the repository.
    expect(result.drill).toMatchObject({ outcome: 'passed', workflowId: expect.stringMatching(/^drill-app-/) });
    expect(result.drill.rtoSeconds).toBeGreaterThan(0);
    expect(result.drill.reportKey).toMatch(/^reports\/app\/drill-\d{8}T\d{6}Z\.json$/);
    expect(result.backupId).toMatch(/^app\/\d{8}T\d{6}Z_demo$/);
    const folder = join(workDir, 'backups', result.backupId);
    expect(readdirSync(folder).sort()).toEqual(['db_full.dump', 'extensions.tsv', 'manifest.json', 'row_counts.tsv', 'schema.sql', 'schema_version.txt', 'version.txt', 'views_reloptions.tsv']);
    expect(JSON.parse(readFileSync(join(folder, 'manifest.json'), 'utf8'))).toMatchObject({ status: 'verified', label: 'demo' });
    // The server's own output went to its log, not to our stdout; the config for other terminals exists.
    expect(readFileSync(join(workDir, '.pgrunbook', 'dev.yaml'), 'utf8')).toContain('${PGRUNBOOK_DEV_DATABASE_URL}');
    expect(existsSync(join(workDir, '.pgrunbook', 'temporal.log'))).toBe(true);
  });
});
