import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchWalFile } from '../../pitr/wal-archive.js';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { archiveTarget, markerHolds, PUSHED_DIRECTORY, readMarker, type PushedMarker } from '../../pitr/wal-spool.js';
import { asServerUser, isRoot } from '../../postgres/server-user.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { projectRoot } from '../../stack/binaries.js';
import { plainBaseBackup, startArchivingCluster, startWalTestStack, type PitrSetup, type WalTestStack } from '../support/pitr.js';

// Push-ahead (clusters.main.wal.pushAhead = 4): a wal-push also archives the next ready segments
// and leaves a marker for each, so PostgreSQL's next calls return at once. Real PostgreSQL 15
// drives it; archiving is paused (archive_command = '') where a test needs ready segments to stay put.

const PUSH_AHEAD = 4;
const noKeys = { repository: 'local', encryptTo: null, identities: null, identityRecipients: [], identityField: 'repositories.local.encryption.identityFile' };
const run = promisify(execFile);

let stack: WalTestStack;
let setup: PitrSetup;
let repository: LocalRepository;
let walDir: string;
/** The paused batch: segment names in order, and the sha256 each had in pg_wal. */
let segments: string[] = [];
const original = new Map<string, string>();

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const markers = (): string[] => (existsSync(join(walDir, PUSHED_DIRECTORY)) ? readdirSync(join(walDir, PUSHED_DIRECTORY)) : []);
const copiesOf = async (name: string) => (await listArchivedWal(repository, 'main')).filter((f) => f.name === name);
const target = (cluster = 'main') => archiveTarget({ config: setup.configPath, cluster }, process.env);

/** archive_command as PostgreSQL runs it: the server user, in the data directory, %p = pg_wal/<name>. */
async function archiveCommand(name: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  const [file, args] = asServerUser(isRoot(), process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'wal-push', `pg_wal/${name}`, '--cluster', 'main', '--config', setup.configPath]);
  try {
    const { stderr } = await run(file, args, { cwd: setup.source.dataDir, env: { ...process.env, ...env }, maxBuffer: 256 << 20 });
    return { code: 0, stderr };
  } catch (error) {
    const failed = error as { code?: number; stderr?: string };
    return { code: failed.code ?? 1, stderr: failed.stderr ?? '' };
  }
}

async function setArchiveCommand(command: string | null): Promise<void> {
  await setup.source.sql(command === null ? 'ALTER SYSTEM RESET archive_command' : `ALTER SYSTEM SET archive_command = '${command}'`);
  await setup.source.sql('SELECT pg_reload_conf()');
  // The archiver applies the reload at its next loop; give it that moment.
  await sleep(1000);
}

/** Writes rows and closes `count` segments; returns their names. */
async function closeSegments(count: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    await setup.source.sql(`INSERT INTO events SELECT g, md5(g::text) FROM generate_series(1, 20000) g`, 'app');
    names.push((await setup.source.sql('SELECT pg_walfile_name(pg_switch_wal())')).trim());
  }
  return names;
}

beforeAll(async () => {
  stack = await startWalTestStack();
  setup = await startArchivingCluster(stack, { cluster: { wal: { pushAhead: PUSH_AHEAD } } });
  repository = new LocalRepository('local', join(setup.dir, 'repo'));
  walDir = join(setup.source.dataDir, 'pg_wal');
  await setup.source.sql('CREATE TABLE events (id int, note text)', 'app');
  // The first push of an archive writes archive.json on its own.
  await setup.switchAndArchive();
});

afterAll(async () => {
  await setup?.stop();
  await stack?.teardown();
});

describe('wal-push with pushAhead', () => {
  it(`archives the requested segment and the next ${PUSH_AHEAD} ready ones, leaves a marker for each stored one, and reports one that fails without failing the call`, async () => {
    await setArchiveCommand('');
    segments = await closeSegments(PUSH_AHEAD + 3);
    for (const name of segments) {
      expect(existsSync(join(walDir, 'archive_status', `${name}.ready`))).toBe(true);
      original.set(name, sha256(readFileSync(join(walDir, name))));
    }
    // The server user cannot read the fourth segment ahead: it is reported and left for later.
    const unreadable = segments[PUSH_AHEAD]!;
    chmodSync(join(walDir, unreadable), 0o000);
    let result: { code: number; stderr: string };
    try {
      result = await archiveCommand(segments[0]!);
    } finally {
      chmodSync(join(walDir, unreadable), 0o600);
    }
    expect(result.code).toBe(0);
    expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^pgrunbook wal-push: could not push ${unreadable} ahead .*permission denied`))]);

    for (const name of segments.slice(0, PUSH_AHEAD)) {
      const copies = await copiesOf(name);
      expect(copies.map((c) => c.sha256), name).toEqual([original.get(name)]);
    }
    for (const name of segments.slice(PUSH_AHEAD)) expect(await copiesOf(name), name).toEqual([]);
    // Markers for the segments pushed ahead that were stored, none for the requested one.
    expect(markers().sort()).toEqual(segments.slice(1, PUSH_AHEAD));
    for (const name of segments.slice(1, PUSH_AHEAD)) {
      const marker = readMarker(join(walDir, name))!;
      const [copy] = await copiesOf(name);
      expect(marker).toMatchObject({ name, sha256: original.get(name), cluster: 'main', key: copy!.key, localObject: join(setup.dir, 'repo', copy!.key), target: { config: setup.configPath, clusterArgument: 'main' } });
      expect(marker.storedSize).toBe(statSync(marker.localObject!).size);
      expect(markerHolds(marker, join(walDir, name), target())).toBe(true);
    }
  });

  it('trusts a marker only for the same unchanged file, the same config and cluster argument, and a stored object that still exists', async () => {
    const [, valid, stale, unstored] = segments as [string, string, string, string];
    const marker = readMarker(join(walDir, valid))!;
    const file = join(walDir, valid);
    expect(markerHolds(marker, file, target())).toBe(true);
    expect(markerHolds(marker, file, target('other'))).toBe(false);
    expect(markerHolds({ ...marker, file: { ...marker.file, size: marker.file.size - 1 } }, file, target())).toBe(false);
    expect(markerHolds({ ...marker, file: { ...marker.file, mtimeNs: (BigInt(marker.file.mtimeNs) + 1n).toString() } }, file, target())).toBe(false);
    expect(markerHolds({ ...marker, target: { ...marker.target, configFile: { ...marker.target.configFile, size: 1 } } } satisfies PushedMarker, file, target())).toBe(false);
    expect(markerHolds(marker, join(walDir, stale), target())).toBe(false);

    // A segment touched after it was pushed ahead: its marker no longer describes it.
    const touched = new Date(Date.now() - 60_000);
    utimesSync(join(walDir, stale), touched, touched);
    expect(markerHolds(readMarker(join(walDir, stale))!, join(walDir, stale), target())).toBe(false);
    // A stored object removed after its marker was written: the marker must not vouch for it.
    await repository.delete((await copiesOf(unstored))[0]!.key);
    expect(markerHolds(readMarker(join(walDir, unstored))!, join(walDir, unstored), target())).toBe(false);

    // The fast path loads neither the config nor zod (Node's module debug log lists what loads),
    // and consumes the marker; a stale marker sends the call down the normal, idempotent path.
    const fast = await archiveCommand(valid, { NODE_DEBUG: 'esm' });
    expect(fast.code).toBe(0);
    expect(fast.stderr).toContain('pitr/wal-spool.js');
    expect(fast.stderr).not.toContain('config/load.js');
    expect(fast.stderr).not.toMatch(/node_modules\/zod\//);
    expect(existsSync(join(walDir, PUSHED_DIRECTORY, valid))).toBe(false);
    const normal = await archiveCommand(stale, { NODE_DEBUG: 'esm' });
    expect(normal.code).toBe(0);
    expect(normal.stderr).toContain('config/load.js');
    expect(existsSync(join(walDir, PUSHED_DIRECTORY, stale))).toBe(false);
    expect((await copiesOf(stale)).map((c) => c.sha256)).toEqual([original.get(stale)]);
  });

  it('once PostgreSQL archives again, every segment is in the archive exactly once with the bytes pg_wal had (the removed one archived again), and no marker is left', async () => {
    await setArchiveCommand(null);
    await setup.waitArchived(segments.at(-1)!);
    for (const name of segments) {
      const copies = await copiesOf(name);
      expect(copies.map((c) => c.sha256), name).toEqual([original.get(name)]);
      const destination = join(setup.dir, `fetched-${name}`);
      expect(await fetchWalFile({ repository, cluster: 'main', name, destination, keys: noKeys })).toBe('fetched');
      expect(sha256(readFileSync(destination)), name).toBe(original.get(name));
    }
    expect(markers()).toEqual([]);
  });

  it('keeps up with a burst of segments while archiving live: no gap, no duplicate, markers consumed', async () => {
    const burst = await closeSegments(12);
    await setup.waitArchived(burst.at(-1)!);
    const archived = (await listArchivedWal(repository, 'main')).filter((f) => f.kind === 'segment');
    const names = archived.map((f) => f.name);
    expect(new Set(names).size).toBe(names.length);
    for (const name of burst) expect(names, name).toContain(name);
    const verify = await setup.cli(['wal', 'verify', '--cluster', 'main', '--json']);
    expect(verify.stderr).toBe('');
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, gaps: [] });
    // PostgreSQL asked for each segment pushed ahead and consumed its marker; give the last call a moment to exit.
    const deadline = Date.now() + 10_000;
    while (markers().length > 0 && Date.now() < deadline) await sleep(100);
    expect(markers()).toEqual([]);
  });

  it('leaves the marker folder out of base backups: pg_basebackup sends pg_wal empty', async () => {
    // A folder inside the marker folder: no wal-push removes it while the backup runs.
    const probe = join(walDir, PUSHED_DIRECTORY, 'probe');
    mkdirSync(probe, { recursive: true });
    writeFileSync(join(probe, 'marker'), '{}');
    try {
      const backup = await plainBaseBackup(setup, 'with-markers');
      expect(existsSync(join(probe, 'marker'))).toBe(true);
      expect(existsSync(join(backup, 'pg_wal', 'archive_status'))).toBe(true);
      expect(existsSync(join(backup, 'pg_wal', PUSHED_DIRECTORY))).toBe(false);
    } finally {
      rmSync(probe, { recursive: true, force: true });
    }
  });
});
