import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startFleetBackup } from '../../client/fleet.js';
import type { Config } from '../../config/schema.js';
import { latestGoodBackup, listBackups } from '../../repository/catalog.js';
import { compactTimestamp } from '../../repository/layout.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import type { FleetResult } from '../../workflows/fleet-input.js';
import { statusQuery } from '../../workflows/runbook.js';
import { runCli } from '../support/cli.js';
import { procStat } from '../support/processes.js';
import { startTestStack, type TestStack } from '../support/stack.js';

// A fleet of 50 small databases and one broken one, on the real stack: every database is a
// backupDatabase child workflow, at most `concurrency` run at once, pg_dumps are bounded by the
// worker's dump slots, the broken database is reported and the other 50 complete.

const FLEET_SIZE = 50;
const CONCURRENCY = 4;
const DUMP_SLOTS = 2;
const ids = Array.from({ length: FLEET_SIZE }, (_, i) => `fleet-${String(i + 1).padStart(2, '0')}`);
const dbname = (id: string): string => id.replace('-', '_');

let stack: TestStack;
let config: Config;
let configPath: string;
let stopWorker: () => Promise<void>;

beforeAll(async () => {
  stack = await startTestStack();
  const admin = new pg.Client({ connectionString: stack.cluster.url('postgres') });
  await admin.connect();
  try {
    for (const id of [...ids, 'outsider']) await admin.query(`CREATE DATABASE ${dbname(id)}`);
  } finally {
    await admin.end();
  }
  // Small, but each with rows of its own, so each dump is of a real, different database.
  await Promise.all(
    [...ids, 'outsider'].map(async (id, n) => {
      const client = new pg.Client({ connectionString: stack.cluster.url(dbname(id)) });
      await client.connect();
      try {
        await client.query(`CREATE TABLE items AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, ${1000 + n}) g`);
      } finally {
        await client.end();
      }
    }),
  );
  stack.workerEnv.TEST_FLEET_PASSWORD = stack.cluster.password;
  const connection = (database: string) => ({ host: stack.cluster.host, port: stack.cluster.port, user: 'postgres', dbname: database, passwordEnv: 'TEST_FLEET_PASSWORD' });
  const databases: Record<string, object> = Object.fromEntries(ids.map((id) => [id, { ...connection(dbname(id)), labels: { tier: 'test' } }]));
  // Deliberately broken: its database does not exist.
  databases.broken = { ...connection('no_such_database'), labels: { tier: 'test' } };
  databases.outsider = { ...connection('outsider'), labels: { tier: 'other' } };
  const overrides = {
    fleets: { everything: { select: { labels: { tier: 'test' } }, concurrency: CONCURRENCY } },
    worker: { maxConcurrentDumps: DUMP_SLOTS, maxConcurrentActivities: 8 },
  };
  config = stack.config(databases, overrides);
  configPath = stack.writeConfig(databases, overrides);
  ({ stop: stopWorker } = await stack.startWorker(config));
}, 180_000);

afterAll(async () => {
  await stopWorker?.();
  await stack?.teardown();
});

/** pg_dump and pg_dumpall dumps whose parent is this process. */
function dumpChildren(): number {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      const stat = procStat(pid);
      if (!stat || stat.ppid !== process.pid || (stat.comm !== 'pg_dump' && stat.comm !== 'pg_dumpall')) return false;
      // `pg_dump --version` (choosing the client tools) is not a dump.
      try {
        return !readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--version');
      } catch {
        return false; // ended between the listing and the read
      }
    }).length;
}

/** The most intervals open at one instant. */
function maxOverlap(intervals: { start: number; end: number }[]): number {
  const edges = intervals.flatMap((i) => [{ at: i.start, delta: 1 }, { at: i.end, delta: -1 }]).sort((a, b) => a.at - b.at || a.delta - b.delta);
  let open = 0;
  let most = 0;
  for (const edge of edges) most = Math.max(most, (open += edge.delta));
  return most;
}

describe('backupFleet over 50 databases and a broken one', () => {
  it('backs up all 50 with bounded concurrency, reports the broken one, and dumps the server globals once', async () => {
    // pg_dump/pg_dumpall processes this test process (its in-process worker) runs, sampled from
    // /proc while the fleet runs. Other test files' dumps have other parents.
    let mostDumps = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        mostDumps = Math.max(mostDumps, dumpChildren());
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let result: FleetResult;
    try {
      const handle = await startFleetBackup(stack.client, config, { fleet: 'everything', requestedBy: 'cli' });
      result = await handle.result();
    } finally {
      sampling = false;
      await sampler;
    }

    expect(result.fleet).toBe('everything');
    expect(result.databases.map((d) => d.database).sort()).toEqual([...ids, 'broken'].sort());
    const broken = result.databases.find((d) => d.database === 'broken')!;
    expect(broken.status).toBe('failed');
    expect(broken.error).toMatch(/no_such_database.*does not exist/);
    expect(broken.error).not.toContain(stack.cluster.password);
    expect(result.databases.filter((d) => d.status === 'succeeded')).toHaveLength(FLEET_SIZE);
    expect(result.succeeded).toBe(FLEET_SIZE);
    expect(result.failed).toBe(1);

    // One server, so one globals dump.
    expect(result.globals).toHaveLength(1);
    expect(result.globals[0]).toMatchObject({ server: `${stack.cluster.host}:${stack.cluster.port}`, status: 'succeeded' });
    expect(result.globals[0]!.roles).toBeGreaterThan(0);

    // Every selected database has a verified backup; the unselected one has none.
    const repository = new RepositoryRegistry(config, stack.workerEnv).get('local');
    for (const outcome of result.databases.filter((d) => d.status === 'succeeded')) {
      const latest = await latestGoodBackup(repository, outcome.database);
      expect(latest?.id).toBe(outcome.backupId);
    }
    expect(await latestGoodBackup(repository, 'outsider')).toBeUndefined();

    // Bounded concurrency, from Temporal's own record of the child workflows.
    const intervals = await Promise.all(
      result.databases.map(async (d) => {
        const description = await stack.client.workflow.getHandle(d.workflowId).describe();
        return { start: description.startTime.getTime(), end: description.closeTime!.getTime() };
      }),
    );
    const overlap = maxOverlap(intervals);
    console.log(`fleet of ${FLEET_SIZE + 1}: ${overlap} child backups at once at most (concurrency ${CONCURRENCY}), ${mostDumps} pg_dumps at once at most (dump slots ${DUMP_SLOTS})`);
    expect(overlap).toBeLessThanOrEqual(CONCURRENCY);
    expect(overlap).toBeGreaterThan(1);
    // And never more pg_dumps at once than the worker's dump slots.
    expect(mostDumps).toBeLessThanOrEqual(DUMP_SLOTS);
    expect(mostDumps).toBeGreaterThan(0);
  }, 600_000);

  it('backs up a selection from the CLI, lists fleets, and refuses an unknown fleet before starting anything', async () => {
    const selected = await runCli(['fleet', 'backup', '--select', 'tier=test', '--databases', 'fleet-0*', '--no-globals', '--concurrency', '3', '--wait', '--json', '--config', configPath], stack.workerEnv);
    expect(selected.code, selected.stderr).toBe(0);
    const result = JSON.parse(selected.stdout) as FleetResult & { ok: boolean; workflowId: string };
    expect(result.ok).toBe(true);
    expect(result.workflowId).toMatch(/^backup-fleet-adhoc-\d{8}T\d{6}Z$/);
    expect(result.databases.map((d) => d.database)).toEqual(ids.slice(0, 9));
    expect(result.databases.every((d) => d.status === 'succeeded' && d.backupId?.startsWith(`${d.database}/`))).toBe(true);
    expect(result.globals).toEqual([]);

    const listed = await runCli(['fleet', 'list', '--json', '--config', configPath], stack.workerEnv);
    expect(listed.code).toBe(0);
    const fleets = (JSON.parse(listed.stdout) as { fleets: { fleet: string; databases: { database: string }[] }[] }).fleets;
    expect(fleets.map((f) => [f.fleet, f.databases.length])).toEqual([['everything', FLEET_SIZE + 1]]);

    // The first test's fleet dumped this server's globals: listed, with counts from its manifest.
    const globals = await runCli(['globals', 'list', '--json', '--config', configPath], stack.workerEnv);
    expect(globals.code, globals.stderr).toBe(0);
    const listedGlobals = (JSON.parse(globals.stdout) as { globals: { id: string; server: string; roles: number; rolePasswords: boolean; encrypted: boolean }[] }).globals;
    expect(listedGlobals).toHaveLength(1);
    expect(listedGlobals[0]).toMatchObject({ server: `${stack.cluster.host}:${stack.cluster.port}`, rolePasswords: false, encrypted: false });
    expect(listedGlobals[0]!.id).toMatch(/^globals\/127\.0\.0\.1-\d+\/\d{8}T\d{6}Z$/);
    expect(listedGlobals[0]!.roles).toBeGreaterThan(0);

    const unknown = await runCli(['fleet', 'backup', 'nightly', '--config', configPath], stack.workerEnv);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown fleet "nightly"');
    expect(unknown.stderr).toContain('HINT: fleets in the config: everything');
  }, 300_000);

  it('skips a server\'s globals when none of its databases could be backed up, and says why', async () => {
    const handle = await startFleetBackup(stack.client, config, { select: { databases: ['broken'] }, requestedBy: 'api' });
    const result = await handle.result();
    expect(result.databases.map((d) => [d.database, d.status])).toEqual([['broken', 'failed']]);
    expect(result.globals).toEqual([
      expect.objectContaining({ database: 'broken', status: 'failed', error: `no database on ${stack.cluster.host}:${stack.cluster.port} was backed up, so none is known to connect; globals not dumped` }),
    ]);
    expect(result).toMatchObject({ succeeded: 0, failed: 2 });
  }, 120_000);

  it('cancelled mid-run, cancels its running backups, starts no more, and leaves no backup half-written', async () => {
    const handle = await startFleetBackup(stack.client, config, { fleet: 'everything', globals: false, label: 'cancelled-fleet', requestedBy: 'api' });
    // Wait until a few backups have finished and others run, then cancel the fleet.
    await vi.waitFor(async () => {
      const status = await handle.query(statusQuery);
      expect(Number(status.details.done)).toBeGreaterThanOrEqual(3);
    }, { timeout: 60_000, interval: 100 });
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow(WorkflowFailedError);
    expect((await handle.describe()).status.name).toBe('CANCELLED');

    const repository = new RepositoryRegistry(config, stack.workerEnv).get('local');
    const states: Record<string, number> = {};
    for (const id of [...ids, 'broken']) {
      for (const backup of await listBackups(repository, id)) {
        if (backup.label !== 'cancelled-fleet') continue;
        states[backup.state] = (states[backup.state] ?? 0) + 1;
      }
    }
    // Finished ones verified, running ones recorded as cancelled, the rest never started.
    expect(states.incomplete).toBeUndefined();
    expect(states.verified).toBeGreaterThanOrEqual(3);
    expect((states.verified ?? 0) + (states.cancelled ?? 0) + (states.failed ?? 0)).toBeLessThan(FLEET_SIZE);
    // Temporal agrees: every child that started has closed (completed, or cancelled by the fleet).
    const stamp = compactTimestamp((await handle.describe()).startTime);
    const closed: Record<string, number> = {};
    for (const id of [...ids, 'broken']) {
      try {
        const child = await stack.client.workflow.getHandle(`backup-${id}-${stamp}-everything`).describe();
        closed[child.status.name] = (closed[child.status.name] ?? 0) + 1;
      } catch (error) {
        if (!(error instanceof WorkflowNotFoundError)) throw error;
      }
    }
    console.log(`cancelled fleet: backups by state ${JSON.stringify(states)}, children by status ${JSON.stringify(closed)}`);
    expect(closed.RUNNING).toBeUndefined();
    expect(closed.CANCELLED).toBeGreaterThan(0);
  }, 180_000);
});

