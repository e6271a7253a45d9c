import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listArchivedWal } from '../../pitr/wal-inventory.js';
import { parseTimelineHistory, segmentFileName } from '../../pitr/wal-names.js';
import { PREFETCH_DIRECTORY, prefetchedFileName, prefetchTag } from '../../pitr/wal-prefetch.js';
import { archiveTarget } from '../../pitr/wal-spool.js';
import { asServerUser, isRoot } from '../../postgres/server-user.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { projectRoot } from '../../stack/binaries.js';
import { plainBaseBackup, recoverToLatest, startArchivingCluster, startWalTestStack, type PitrSetup, type WalTestStack } from '../support/pitr.js';

// Fetch-ahead (clusters.main.wal.fetchAhead = 4): wal-fetch, as PostgreSQL's restore_command,
// also fetches the next segments of the timeline into pg_wal/.pgrunbook-prefetch, and the next
// calls hand them over without loading the config. Real PostgreSQL 15 recovers through it.

const FETCH_AHEAD = 4;
const SEGMENT_SIZE = 16 * 1024 * 1024;
const run = promisify(execFile);

let stack: WalTestStack;
let setup: PitrSetup;
let repository: LocalRepository;
/** A stock base backup (-X none) taken before the rows below: every later segment comes from the archive. */
let baseBackup: string;
/** The segments written after the base backup, each holding rows (no mostly-empty switch segments). */
const written: string[] = [];

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const mainMjs = join(projectRoot, 'dist', 'client', 'main.js');
const fetchCommand = (): string => `${process.execPath} ${mainMjs} wal-fetch "%f" "%p" --cluster main --config ${setup.configPath}`;
const tag = (): string => prefetchTag(archiveTarget({ config: setup.configPath, cluster: 'main' }, process.env)!);
const checksumQuery = "SELECT count(*), md5(string_agg(id::text || ':' || note, ',' ORDER BY id)) FROM events";

async function archivedObject(name: string): Promise<{ key: string; path: string; sha256: string }> {
  const file = (await listArchivedWal(repository, 'main')).find((f) => f.name === name);
  if (!file) throw new Error(`${name} is not archived`);
  return { key: file.key, path: join(setup.dir, 'repo', file.key), sha256: file.sha256 };
}

const original = (path: string): Buffer => execFileSync('zstd', ['-d', '-q', '-c', path], { maxBuffer: 64 << 20 });

/** A copy of the base backup that no server runs: a data directory for wal-fetch calls made by hand. */
function copyOfBaseBackup(name: string): string {
  const dir = join(setup.dir, 'restores', name);
  execFileSync('cp', ['-a', baseBackup, dir]);
  return dir;
}

/** restore_command as PostgreSQL runs it: the server user, in the data directory, %p = pg_wal/RECOVERYXLOG. */
async function restoreCommand(dataDir: string, name: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  const [file, args] = asServerUser(isRoot(), process.execPath, [mainMjs, 'wal-fetch', name, 'pg_wal/RECOVERYXLOG', '--cluster', 'main', '--config', setup.configPath]);
  try {
    const { stderr } = await run(file, args, { cwd: dataDir, env: { ...process.env, ...env }, maxBuffer: 256 << 20 });
    return { code: 0, stderr };
  } catch (error) {
    const failed = error as { code?: number; stderr?: string };
    return { code: failed.code ?? 1, stderr: failed.stderr ?? '' };
  }
}

const prefetched = (dataDir: string): string[] => (existsSync(join(dataDir, 'pg_wal', PREFETCH_DIRECTORY)) ? readdirSync(join(dataDir, 'pg_wal', PREFETCH_DIRECTORY)).sort() : []);
const next = (segment: string, by = 1): string => segmentFileName(1, BigInt(`0x${segment.slice(8, 16)}`) * 256n + BigInt(`0x${segment.slice(16)}`) + BigInt(by));

beforeAll(async () => {
  stack = await startWalTestStack();
  setup = await startArchivingCluster(stack, { cluster: { wal: { fetchAhead: FETCH_AHEAD } } });
  repository = new LocalRepository('local', join(setup.dir, 'repo'));
  await setup.source.sql('CREATE TABLE events (id int PRIMARY KEY, note text)', 'app');
  await setup.source.sql("INSERT INTO events SELECT g, 'in base backup' FROM generate_series(1, 1000) g", 'app');
  await setup.switchAndArchive();
  baseBackup = await plainBaseBackup(setup, 'base');
  // About a segment of WAL per round, every segment full of records.
  const first = (await setup.source.sql('SELECT pg_walfile_name(pg_current_wal_insert_lsn())')).trim();
  for (let round = 0; round < 12; round++) {
    await setup.source.sql(`INSERT INTO events SELECT g, md5(g::text) FROM generate_series(${1001 + round * 100_000}, ${1000 + (round + 1) * 100_000}) g`, 'app');
  }
  const last = await setup.switchAndArchive();
  for (let name = first; name <= last; name = next(name)) written.push(name);
  // Enough for the windows below (the test in the middle needs 11 segments after the base backup).
  if (written.length < 12) throw new Error(`only ${written.length} segments were written after the base backup`);
}, 300_000);

afterAll(async () => {
  await setup?.stop();
  await stack?.teardown();
});

describe('wal-fetch with fetchAhead as restore_command', () => {
  it(`recovers exactly the source's data, most segments handed over from the prefetch folder, and leaves no prefetch folder`, async () => {
    const dataDir = copyOfBaseBackup('recovered');
    // Before each call: was the segment waiting in the prefetch folder?
    const calls = join(setup.dir, 'restores', 'calls.log');
    const wrapped = `if ls pg_wal/${PREFETCH_DIRECTORY} 2>/dev/null | grep -q "^%f[.]"; then echo "hit %f" >> ${calls}; else echo "miss %f" >> ${calls}; fi; ${fetchCommand()}`;
    const recovered = await recoverToLatest(setup, dataDir, wrapped);
    try {
      expect(await recovered.sql(checksumQuery, 'app')).toBe(await setup.source.sql(checksumQuery, 'app'));
      const requests = readFileSync(calls, 'utf8').trim().split('\n').map((line) => line.split(' ') as ['hit' | 'miss', string]);
      const archived = new Set((await listArchivedWal(repository, 'main')).map((f) => f.name));
      const segments = requests.filter(([, name]) => /^[0-9A-F]{24}$/.test(name) && archived.has(name));
      for (const name of written) expect(segments.map(([, n]) => n), name).toContain(name);
      // One call in FETCH_AHEAD + 1 fetches; the others find their segment waiting.
      const misses = segments.filter(([outcome]) => outcome === 'miss').length;
      expect(misses).toBeLessThanOrEqual(Math.ceil(segments.length / (FETCH_AHEAD + 1)) + 1);
      // History files are never fetched ahead.
      expect(requests.filter(([outcome, name]) => name.endsWith('.history') && outcome === 'hit')).toEqual([]);
      expect(recovered.log()).not.toMatch(/could not fetch .* ahead/);
      // The end of the archive (a missing answer) removed what was fetched past it.
      expect(existsSync(join(dataDir, 'pg_wal', PREFETCH_DIRECTORY))).toBe(false);
    } finally {
      await recovered.stop();
    }
  });

  it('hands over a prefetched segment without loading the config, and never trusts a file of another config, another cluster, or a truncated one', async () => {
    const dataDir = copyOfBaseBackup('by-hand');
    const [x, y] = [written[2]!, written[3]!];
    // The normal path for x fetches the next FETCH_AHEAD segments, named for this config and cluster.
    const slow = await restoreCommand(dataDir, x, { NODE_DEBUG: 'esm' });
    expect(slow.code).toBe(0);
    expect(slow.stderr).toContain('config/load.js');
    expect(sha256(readFileSync(join(dataDir, 'pg_wal', 'RECOVERYXLOG')))).toBe((await archivedObject(x)).sha256);
    const ahead = [1, 2, 3, 4].map((by) => next(x, by));
    expect(prefetched(dataDir)).toEqual(ahead.map((name) => prefetchedFileName(name, tag())));

    // y: handed over by the fast path (the module log shows neither the config loader nor zod).
    const fast = await restoreCommand(dataDir, y, { NODE_DEBUG: 'esm' });
    expect(fast.code).toBe(0);
    expect(fast.stderr).toContain('pitr/wal-prefetch.js');
    expect(fast.stderr).not.toContain('config/load.js');
    expect(fast.stderr).not.toMatch(/node_modules\/zod\//);
    expect(sha256(readFileSync(join(dataDir, 'pg_wal', 'RECOVERYXLOG')))).toBe((await archivedObject(y)).sha256);
    expect(prefetched(dataDir)).toEqual(ahead.slice(1).map((name) => prefetchedFileName(name, tag())));

    // Replace the three waiting files with untrustworthy ones under the names the fast path looks for:
    const folder = join(dataDir, 'pg_wal', PREFETCH_DIRECTORY);
    const [foreignConfig, foreignCluster, truncated] = ahead.slice(1) as [string, string, string];
    // - written for another config file (its tag), with other bytes than the archive's;
    const otherConfig = join(setup.dir, 'other.yaml');
    writeFileSync(otherConfig, readFileSync(setup.configPath));
    const otherTag = prefetchTag(archiveTarget({ config: otherConfig, cluster: 'main' }, process.env)!);
    const changed = Buffer.from(readFileSync(join(folder, prefetchedFileName(foreignConfig, tag()))));
    changed[changed.length - 1000]! ^= 0xff;
    rmSync(join(folder, prefetchedFileName(foreignConfig, tag())));
    writeFileSync(join(folder, prefetchedFileName(foreignConfig, otherTag)), changed);
    // - this config's tag, but the segment of another cluster (another system identifier in its header);
    const foreign = Buffer.from(readFileSync(join(folder, prefetchedFileName(foreignCluster, tag()))));
    foreign.writeBigUInt64LE(foreign.readBigUInt64LE(24) ^ 0x5a5a5a5an, 24);
    writeFileSync(join(folder, prefetchedFileName(foreignCluster, tag())), foreign);
    // - this config's tag, cut short.
    writeFileSync(join(folder, prefetchedFileName(truncated, tag())), readFileSync(join(folder, prefetchedFileName(truncated, tag()))).subarray(0, SEGMENT_SIZE / 2));
    // A stale temporary file of a wal-fetch that died, and a segment PostgreSQL has already passed.
    writeFileSync(join(folder, `.${prefetchedFileName(ahead[3]!, tag())}.999999999-0a1b.pgrunbook-tmp`), 'partial');
    writeFileSync(join(folder, prefetchedFileName(written[0]!, tag())), readFileSync(join(dataDir, 'pg_wal', 'RECOVERYXLOG')));

    for (const name of [foreignConfig, foreignCluster, truncated]) {
      const result = await restoreCommand(dataDir, name, { NODE_DEBUG: 'esm' });
      expect(result.code, name).toBe(0);
      // Not trusted: the normal path ran and %p holds the archive's bytes.
      expect(result.stderr, name).toContain('config/load.js');
      expect(sha256(readFileSync(join(dataDir, 'pg_wal', 'RECOVERYXLOG'))), name).toBe((await archivedObject(name)).sha256);
      expect(prefetched(dataDir).filter((entry) => entry.startsWith(name)), name).toEqual([]);
    }
    // Housekeeping removed the foreign file, the temporary file and the passed segment; the last
    // normal call fetched the next ones ahead.
    expect(prefetched(dataDir).every((entry) => entry.endsWith(`.${tag()}`) && entry > truncated)).toBe(true);
    expect(prefetched(dataDir)).toHaveLength(FETCH_AHEAD);

    // The end of the archive: the whole folder goes; a history file is never fetched ahead.
    const missing = await restoreCommand(dataDir, '00000002.history');
    expect(missing.code).toBe(1);
    expect(existsSync(folder)).toBe(false);
  });

  it('never hands a corrupted segment to PostgreSQL: the fetch ahead and the call for it fail, and recovery ends before its first byte', async () => {
    // The stored object of a segment in the middle of a fetch-ahead window, replaced by a valid
    // zstd frame of other bytes: only the sha256 in its name tells them apart.
    const backupLabel = readFileSync(join(baseBackup, 'backup_label'), 'utf8');
    const start = /\(file ([0-9A-F]{24})\)/.exec(backupLabel)![1]!;
    const corrupt = written.find((name) => name > next(start, 2) && (parseInt(name.slice(16), 16) - parseInt(start.slice(16), 16)) % (FETCH_AHEAD + 1) === 2)!;
    const object = await archivedObject(corrupt);
    const stored = readFileSync(object.path);
    const bytes = original(object.path);
    bytes[SEGMENT_SIZE / 2 + 4321]! ^= 0x10;
    writeFileSync(object.path, execFileSync('zstd', ['-3', '-q', '-c'], { input: bytes, maxBuffer: 64 << 20 }));
    const dataDir = copyOfBaseBackup('corrupt');
    try {
      const recovered = await recoverToLatest(setup, dataDir, fetchCommand());
      try {
        const log = recovered.log();
        expect(log).toContain(`pgrunbook wal-fetch: could not fetch ${corrupt} ahead`);
        expect(log).toMatch(new RegExp(`pgrunbook wal-fetch: ${corrupt} does not match its checksum: sha256 ${sha256(bytes)} after decompression, ${object.sha256} when archived\nHINT: `));
        // Recovery ended at the corrupt segment: the new timeline starts at or before its first
        // byte, so nothing of it was replayed (had its bytes been used, replay would have gone on to the flipped byte).
        const history = parseTimelineHistory(readFileSync(join(dataDir, 'pg_wal', '00000002.history'), 'utf8'));
        const corruptStart = BigInt(parseInt(corrupt.slice(8, 16), 16) * 256 + parseInt(corrupt.slice(16), 16)) * BigInt(SEGMENT_SIZE);
        expect(history[0]!.switchLsn).toBeLessThanOrEqual(corruptStart);
        expect(history[0]!.switchLsn).toBeGreaterThan(corruptStart - BigInt(SEGMENT_SIZE));
        // Fewer rows than the source: the rows after the corrupt segment were not recovered.
        const [rows] = (await recovered.sql(checksumQuery, 'app')).split('|');
        expect(Number(rows)).toBeLessThan(Number((await setup.source.sql(checksumQuery, 'app')).split('|')[0]));
        expect(existsSync(join(dataDir, 'pg_wal', PREFETCH_DIRECTORY))).toBe(false);
      } finally {
        await recovered.stop();
      }
    } finally {
      writeFileSync(object.path, stored);
    }
  });
});
