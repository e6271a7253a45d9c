import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startPitr } from '../../client/pitr.js';
import { pitrReportKey } from '../../pitr/layout.js';
import { projectRoot } from '../../stack/binaries.js';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { parseLsn, segmentOf } from '../../pitr/wal-names.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll } from '../../repository/types.js';
import type { BasebackupResult } from '../../workflows/basebackup-cluster.js';
import type { PitrResult } from '../../workflows/point-in-time-restore.js';
import { statusQuery } from '../../workflows/runbook.js';
import { PITR_CLUSTER, startArchivingCluster, type PitrSetup } from '../support/pitr.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startPitrWorker } from './basebackup-support.js';
import { recoveredSql, serverNow, takeBaseBackup, waitForStatus } from './pitr-support.js';

// pointInTimeRestore in its default mode (a new data directory and port) on real PostgreSQL 15
// archiving through `pgrunbook wal-push`, a real Temporal server and an in-process worker.
// Seed 001's disaster scenario 1: rows inserted, time T noted, `DELETE FROM organizations`,
// writes go on; recovering to T brings the rows back and nothing written after T.

let stack: TestStack;
let pitr: PitrSetup;
let base: BasebackupResult;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  stack = await startTestStack();
  pitr = await startArchivingCluster(stack);
  await pitr.source.sql('CREATE TABLE organizations (id int PRIMARY KEY, name text NOT NULL); INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(1, 100) g', 'app');
  base = await takeBaseBackup(stack, pitr);
  ({ stop: stopWorker } = await startPitrWorker(stack, pitr));
});

afterAll(async () => {
  await stopWorker?.();
  // Recovered clusters left by a failed assertion: stop them before their directories go.
  for (const name of existsSync(join(pitr?.dir ?? '/nonexistent', 'restores')) ? readdirSync(join(pitr.dir, 'restores')) : []) {
    await runPgCtlStop(join(pitr.dir, 'restores', name, 'data'));
  }
  await pitr?.stop();
  await stack?.teardown();
});

async function runPgCtlStop(dataDir: string): Promise<void> {
  if (!existsSync(join(dataDir, 'postmaster.pid'))) return;
  const { runTool } = await import('../../process/run.js');
  await runTool('runuser', ['-u', 'postgres', '--', join(pitr.source.binDir, 'pg_ctl'), '-D', dataDir, '-m', 'immediate', 'stop']).catch(() => undefined);
}

const restoresNow = (): string[] => readdirSync(join(pitr.dir, 'restores'));
const count = async (sql: (q: string) => Promise<string>, query: string): Promise<number> => Number(await sql(query));

describe('pointInTimeRestore into a new data directory', () => {
  it('seed 001 scenario 1: recovering to T, just before DELETE FROM organizations, brings the rows back without the writes after T; promoted, it accepts writes', async () => {
    await pitr.source.sql('INSERT INTO organizations SELECT g, md5(g::text) FROM generate_series(101, 150) g', 'app');
    const t = await serverNow(pitr);
    await pitr.source.sql('DELETE FROM organizations', 'app');
    await pitr.source.sql('CREATE TABLE written_after_t AS SELECT g AS id FROM generate_series(1, 10) g; INSERT INTO organizations VALUES (9001, \'after T\')', 'app');
    await pitr.switchAndArchive();

    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: t } });

    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    expect(handle.workflowId).toBe('pitr-main');
    // Only one at a time per cluster.
    await expect(startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { latest: true } })).rejects.toThrow(/already running \(workflow pitr-main\)/);

    const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running');
    expect(waiting.state).toBe('running');
    expect(waiting.waitingFor).toContain('pgrunbook pitr promote|discard pitr-main');
    expect(waiting.finished.map((s) => `${s.step}:${s.outcome}`)).toEqual(['resolve:ok', 'provision:ok', 'extract:ok', 'configure:ok', 'start:ok', 'recover:ok', 'verify:ok']);
    expect(waiting.details.baseBackupId).toBe(base.backupId);
    expect(String(waiting.details.recovery)).toMatch(/^replayed LSN [0-9A-F]+\/[0-9A-F]+.*\(paused at the target\)$/);
    // `pgrunbook status` shows the steps and where replay stopped against the target.
    const shown = await pitr.cli(['status', handle.workflowId]);
    expect(shown.stdout).toMatch(/WAITING\s+promote or discard the recovered cluster/);
    expect(shown.stdout).toMatch(/recovery\s+replayed LSN [0-9A-F]+\/[0-9A-F]+/);
    expect(shown.stdout).toMatch(/recover\s+ok/);
    const port = Number(waiting.details.port);
    const socketDir = String(waiting.details.socketDir);
    expect(socketDir).toMatch(new RegExp(`^${pitr.dir}/restores/pgrunbook-pitr-main-\\d{14}$`));

    // Paused at T: every row inserted before T, none of the DELETE, nothing written after T.
    const sql = recoveredSql(pitr, socketDir, port);
    expect(await count(sql, 'SELECT count(*) FROM organizations')).toBe(150);
    expect(await sql("SELECT to_regclass('written_after_t') IS NULL")).toBe('t');
    expect(await sql('SELECT pg_is_in_recovery()')).toBe('t');
    // The copy is socket-only, and never archives into the source's archive.
    expect(await sql("SELECT current_setting('listen_addresses') || '|' || current_setting('archive_mode')")).toBe('|off');

    const promoted = await pitr.cli(['pitr', 'promote', handle.workflowId]);
    expect(promoted.code, promoted.stderr).toBe(0);
    const result: PitrResult = await handle.result();
    expect(result).toMatchObject({ outcome: 'promoted', mode: 'new', port, socketDir, movedAside: null });
    expect(result.verification?.rowCounts['public.organizations']).toBe(150);
    expect(result.connect).toBe(`psql -h ${socketDir} -p ${port} -U postgres app`);

    // Writable now, on a new timeline.
    expect(await sql('SELECT pg_is_in_recovery()')).toBe('f');
    await sql("INSERT INTO organizations VALUES (7777, 'written after the promotion')");
    expect(await count(sql, 'SELECT count(*) FROM organizations')).toBe(151);
    // The source is untouched.
    expect(await pitr.source.sql('SELECT count(*) FROM organizations', 'app')).toBe('1');

    // The report, in the repository.
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get('local');
    const report = JSON.parse((await readAll(repo, result.reportKey!)).toString('utf8'));
    expect(result.reportKey).toBe(pitrReportKey(PITR_CLUSTER, new Date(report.startedAt)));
    expect(report).toMatchObject({ outcome: 'promoted', cluster: 'main', baseBackupId: result.baseBackupId, error: null });

    await runPgCtlStop(result.dataDir);
    rmSync(join(result.dataDir, '..'), { recursive: true, force: true });
  });

  it('an LSN target stops exactly there; discard stops the recovered server and removes its directory', async () => {
    await pitr.source.sql("INSERT INTO organizations SELECT g, 'before the LSN' FROM generate_series(2001, 2010) g", 'app');
    // The insert position: with synchronous_commit off, the write position may still be before the commit record.
    const lsn = (await pitr.source.sql('SELECT pg_current_wal_insert_lsn()')).trim();
    await pitr.source.sql("INSERT INTO organizations SELECT g, 'after the LSN' FROM generate_series(2011, 2020) g", 'app');
    await pitr.switchAndArchive();

    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { lsn } });

    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running');
    expect(waiting.details.target).toBe(`LSN ${lsn}`);
    const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
    expect(await count(sql, 'SELECT count(*) FROM organizations WHERE id BETWEEN 2001 AND 2020')).toBe(10);
    const replayed = parseLsn((await sql('SELECT pg_last_wal_replay_lsn()')).trim())!;
    expect(replayed >= parseLsn(lsn)!).toBe(true);

    const refused = await pitr.cli(['pitr', 'discard', handle.workflowId]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--reason is required to discard');
    const discarded = await pitr.cli(['pitr', 'discard', handle.workflowId, '--reason', 'wrong point in time']);
    expect(discarded.code, discarded.stderr).toBe(0);
    const result = await handle.result();
    expect(result.outcome).toBe('discarded');
    expect(result.connect).toBeNull();
    expect(existsSync(join(result.dataDir, '..'))).toBe(false);
    const status = await handle.query(statusQuery);
    expect(status.finished.map((s) => s.step)).toEqual(expect.arrayContaining(['discard', 'undo:remove-recovered-cluster']));
    expect(status.decisions?.[0]).toMatchObject({ decision: 'rejected', step: 'decide', reason: 'wrong point in time' });
  });

  it('a named restore point made by `pgrunbook wal restore-point` is a target; an unknown name is refused listing the known ones', async () => {
    await pitr.source.sql("INSERT INTO organizations SELECT g, 'before the restore point' FROM generate_series(3001, 3005) g", 'app');
    const made = await pitr.cli(['wal', 'restore-point', 'before-cleanup']);
    expect(made.code, made.stderr).toBe(0);
    await pitr.source.sql('DELETE FROM organizations WHERE id > 3000', 'app');
    await pitr.switchAndArchive();

    const unknown = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { restorePoint: 'no-such-point' } });
    const failure = await unknown.result().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    expect(String(((failure as WorkflowFailedError).cause as Error & { cause?: Error }).cause?.message)).toMatch(/no restore point "no-such-point"[\s\S]*HINT: known restore points: before-cleanup/);

    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { restorePoint: 'before-cleanup' } });

    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    const waiting = await waitForStatus(handle, (s) => s.pendingDecision?.step === 'decide' || s.state !== 'running');
    expect(String(waiting.details.target)).toMatch(/^restore point "before-cleanup" \(LSN /);
    const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
    expect(await count(sql, 'SELECT count(*) FROM organizations WHERE id BETWEEN 3001 AND 3005')).toBe(5);
    const promoted = await pitr.cli(['pitr', 'promote', handle.workflowId, '--json']);
    expect(JSON.parse(promoted.stdout)).toMatchObject({ ok: true, action: 'promote', decision: 'approved' });
    const result = await handle.result();
    expect(result.outcome).toBe('promoted');
    await runPgCtlStop(result.dataDir);
    rmSync(join(result.dataDir, '..'), { recursive: true, force: true });
  });

  it('refuses bad input before anything runs, naming the field', async () => {
    await expect(startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: 'yesterday' } })).rejects.toThrow(/target\.time: expected an ISO 8601 time/);
    await expect(startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { latest: true, lsn: '0/1' } as never })).rejects.toThrow(/target: expected exactly one of time, lsn, restorePoint, latest \(got lsn, latest\)/);
    const cli = await pitr.cli(['pitr', '--time', '2026-02-30 10:00']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/--time: "2026-02-30 10:00" is not a time[\s\S]*UTC is assumed/);
    // Straight into Temporal, past the CLI: the workflow refuses it, non-retryable, naming the field.
    const raw = await stack.client.workflow.start('pointInTimeRestore', { taskQueue: pitr.config.temporal.taskQueue, workflowId: `pitr-bad-input-${Date.now()}`, args: [{ cluster: PITR_CLUSTER, target: { lsn: 'zz' } }] });
    const failure = (await raw.result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(failure.cause?.message).toMatch(/^invalid pointInTimeRestore input: target\.lsn: expected an LSN/);
  });

  it('`pgrunbook pitr --latest --wait` follows the recovery, says how to promote and connect, and ends with the promoted cluster', async () => {
    await pitr.source.sql("INSERT INTO organizations VALUES (3500, 'latest')", 'app');
    await pitr.switchAndArchive();
    const { execa } = await import('execa');
    const cli = execa(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'pitr', '--latest', '--wait', '--config', pitr.configPath], { env: pitr.env, reject: false });
    // The CLI's run of pitr-main, not the finished one before it.
    const handle = stack.client.workflow.getHandle('pitr-main');
    const waiting = await waitForStatus(handle, (s) => String(s.details.target).startsWith('latest') && (s.pendingDecision?.step === 'decide' || s.state !== 'running'));
    const sql = recoveredSql(pitr, String(waiting.details.socketDir), Number(waiting.details.port));
    // latest: the whole archive replayed, and already out of recovery (there is no target to pause at).
    expect(await sql("SELECT count(*) FROM organizations WHERE id = 3500")).toBe('1');
    expect(await sql('SELECT pg_is_in_recovery()')).toBe('f');
    expect((await pitr.cli(['pitr', 'promote', 'pitr-main'])).code).toBe(0);
    const done = await cli;
    expect(done.exitCode, done.stderr).toBe(0);
    expect(done.stdout).toContain('waiting for promote or discard the recovered cluster (pgrunbook pitr promote|discard pitr-main); look at it first: psql -h ');
    expect(done.stdout).toMatch(/point-in-time restore of cluster main \(new\): recovered and promoted \(writable\)/);
    expect(done.stdout).toMatch(/connect\s+psql -h \S+ -p \d+ -U postgres app/);
    const result = await handle.result();
    await runPgCtlStop(result.dataDir);
    rmSync(join(result.dataDir, '..'), { recursive: true, force: true });
  });

  it('a WAL gap between the base backup and the target is refused at resolve, before anything is created', async () => {
    await pitr.source.sql("INSERT INTO organizations VALUES (4001, 'before the gap')", 'app');
    await pitr.switchAndArchive();
    await pitr.switchAndArchive();
    const repo = new RepositoryRegistry(pitr.config, pitr.env).get('local');
    const startSegment = segmentOf(parseLsn(base.stopLsn)!);
    const segments = (await listArchivedWal(repo, PITR_CLUSTER)).filter((f) => f.kind === 'segment' && f.segment! > startSegment);
    const victim = segments[Math.floor(segments.length / 2)]!;
    rmSync(join(pitr.dir, 'repo', victim.key));
    await pitr.source.sql("INSERT INTO organizations VALUES (4002, 'after the gap')", 'app');
    await pitr.switchAndArchive();
    const target = await serverNow(pitr);
    await pitr.source.sql("INSERT INTO organizations VALUES (4003, 'after the target')", 'app');
    await pitr.switchAndArchive();
    const before = restoresNow();

    const handle = await startPitr(stack.client, pitr.config, { cluster: PITR_CLUSTER, target: { time: target } });

    onTestFinished(async () => {
      await handle.terminate('test cleanup').catch(() => undefined);
    });
    const failure = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    const message = (failure.cause as Error & { cause?: Error }).cause?.message ?? '';
    expect(message).toContain(victim.name);
    expect(message).toMatch(/^cannot recover cluster main to time .* from base backup main\/\d{8}T\d{6}Z: .*nothing was created\nHINT: /);
    const status = await handle.query(statusQuery);
    expect(status.finished.map((s) => `${s.step}:${s.outcome}`)).toEqual(['resolve:failed', 'report:ok', 'notify:ok']);
    expect(status.undo).toEqual([]);
    expect(restoresNow()).toEqual(before);
  });
});
