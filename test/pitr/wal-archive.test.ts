import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArchiveInfo, RestorePointRecord } from '../../pitr/manifest.js';
import { fetchWalFile } from '../../pitr/wal-archive.js';
import { listArchivedWal, walReachability } from '../../pitr/wal-inventory.js';
import { parseLsn, parseSegmentHeader } from '../../pitr/wal-names.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { projectRoot } from '../../stack/binaries.js';
import { plainBaseBackup, recoverToLatest, startArchivingCluster, startWalTestStack, type PitrSetup, type WalTestStack } from '../support/pitr.js';

// WAL archiving into a local repository with the default zstd compression, as PostgreSQL's
// archive_command and restore_command run it: one process per file, no Temporal server.

const noKeys = { repository: 'local', encryptTo: null, identities: null, identityRecipients: [], identityField: 'repositories.local.encryption.identityFile' };

let stack: WalTestStack;
let setup: PitrSetup;
let repository: LocalRepository;
let work: string;

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** The stored object of an archived segment, decompressed with the stock zstd CLI. */
function zstdDecompress(path: string): Buffer {
  return execFileSync('zstd', ['-d', '-q', '-c', path], { maxBuffer: 64 << 20 });
}

async function storedObject(segment: string): Promise<{ key: string; path: string }> {
  const file = (await listArchivedWal(repository, 'main')).find((f) => f.name === segment);
  if (!file) throw new Error(`${segment} is not archived`);
  return { key: file.key, path: join(setup.dir, 'repo', file.key) };
}

beforeAll(async () => {
  stack = await startWalTestStack();
  setup = await startArchivingCluster(stack);
  repository = new LocalRepository('local', join(setup.dir, 'repo'));
  work = join(setup.dir, 'work');
  mkdirSync(work);
  await setup.source.sql('CREATE TABLE events (id int PRIMARY KEY, note text)', 'app');
});

afterAll(async () => {
  await setup?.stop();
  await stack?.teardown();
});

describe('wal-push as archive_command (local repository, zstd)', () => {
  it('stores each segment zstd-compressed in its log folder, named with the sha256 of the original, and records the cluster in archive.json', async () => {
    await setup.source.sql("INSERT INTO events SELECT g, 'before' FROM generate_series(1, 1000) g", 'app');
    const segment = await setup.switchAndArchive();
    const { key, path } = await storedObject(segment);
    expect(key).toMatch(new RegExp(`^pitr/main/wal/${segment.slice(0, 16)}/${segment}-[0-9a-f]{64}\\.zst$`));
    const original = zstdDecompress(path);
    expect(original.length).toBe(16 * 1024 * 1024);
    expect(key).toContain(`${segment}-${sha256(original)}.zst`);
    // Compressed: a mostly empty segment shrinks a lot.
    expect(statSync(path).size).toBeLessThan(original.length / 4);

    const systemIdentifier = await setup.source.sql('SELECT system_identifier FROM pg_control_system()');
    const header = parseSegmentHeader(original);
    expect(header.systemIdentifier).toBe(systemIdentifier);
    expect(header.pgMajor).toBe(15);
    const info = ArchiveInfo.parse(JSON.parse(readFileSync(join(setup.dir, 'repo', 'pitr', 'main', 'archive.json'), 'utf8')));
    expect(info).toMatchObject({ cluster: 'main', systemIdentifier, pgMajor: 15, segmentSize: 16 * 1024 * 1024 });
  });

  it('succeeds without rewriting when the same segment is pushed again', async () => {
    const segment = await setup.switchAndArchive();
    const { path } = await storedObject(segment);
    const copy = join(work, segment);
    writeFileSync(copy, zstdDecompress(path));
    const before = statSync(path).mtimeMs;
    const result = await setup.cli(['wal-push', copy, '--cluster', 'main']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(statSync(path).mtimeMs).toBe(before);
  });

  it('refuses a segment with an archived name but different content, naming it and both checksums', async () => {
    const segment = await setup.switchAndArchive();
    const { path } = await storedObject(segment);
    const original = zstdDecompress(path);
    const changed = Buffer.from(original);
    changed[changed.length - 100]! ^= 0xff;
    const copy = join(work, segment);
    writeFileSync(copy, changed);
    const result = await setup.cli(['wal-push', copy, '--cluster', 'main']);
    expect(result.code).toBe(1);
    const [line, hint, ...rest] = result.stderr.trim().split('\n');
    expect(rest).toEqual([]);
    expect(line).toMatch(/^pgrunbook wal-push: /);
    expect(line).toContain(segment);
    expect(line).toContain(sha256(original));
    expect(line).toContain(sha256(changed));
    expect(hint).toMatch(/^HINT: .*two clusters.*new timeline/);
    // The archived copy is untouched.
    expect(sha256(zstdDecompress(path))).toBe(sha256(original));
  });

  it('refuses a segment of another cluster (another system identifier in its header)', async () => {
    const segment = await setup.switchAndArchive();
    const original = zstdDecompress((await storedObject(segment)).path);
    // The next segment name, with this segment's bytes re-addressed and another system identifier:
    // what a second cluster archiving into the same place would push.
    const next = `${segment.slice(0, 16)}${(parseInt(segment.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`;
    const foreign = Buffer.from(original);
    foreign.writeBigUInt64LE(foreign.readBigUInt64LE(8) + 16n * 1024n * 1024n, 8);
    foreign.writeBigUInt64LE(foreign.readBigUInt64LE(24) ^ 0x5a5a5a5an, 24);
    const copy = join(work, next);
    writeFileSync(copy, foreign);
    const result = await setup.cli(['wal-push', copy, '--cluster', 'main']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`^pgrunbook wal-push: ${next} belongs to the cluster with system identifier ${foreign.readBigUInt64LE(24)}, but .* ${original.readBigUInt64LE(24)}\nHINT: `));
    expect(existsSync(join(setup.dir, 'repo', 'pitr', 'main', 'wal', next.slice(0, 16))) && readdirSync(join(setup.dir, 'repo', 'pitr', 'main', 'wal', next.slice(0, 16))).some((n) => n.startsWith(next))).toBe(false);
  });

  it('refuses a file that is not a wal segment under a segment name', async () => {
    const copy = join(work, '0000000100000000000000F0');
    writeFileSync(copy, Buffer.alloc(16 * 1024 * 1024));
    const result = await setup.cli(['wal-push', copy, '--cluster', 'main']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^pgrunbook wal-push: 0000000100000000000000F0: not a wal segment: no long page header.*\nHINT: /);
  });
});

describe('wal verify, wal list and wal restore-point', () => {
  it('wal verify finds no gap from the first archived segment to the server\'s position, and wal list shows the timeline', async () => {
    const segment = await setup.switchAndArchive();
    const verify = await setup.cli(['wal', 'verify', '--cluster', 'main', '--json']);
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);
    const report = JSON.parse(verify.stdout) as { ok: boolean; gaps: unknown[]; from: { source: string; segment: string }; timelines: { timeline: number; ranges: { status: string; from: string; to: string }[] }[] };
    expect(report).toMatchObject({ ok: true, gaps: [], from: { source: expect.stringContaining('first archived segment'), segment: '000000010000000000000001' } });
    expect(report.timelines).toEqual([{ timeline: 1, switchLsn: null, ranges: [{ timeline: 1, status: 'archived', from: '000000010000000000000001', to: segment, count: parseInt(segment.slice(16), 16) }] }]);
    const human = await setup.cli(['wal', 'verify', '--cluster', 'main']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('OK: no gaps');

    const list = await setup.cli(['wal', 'list', '--json']);
    expect(list.code).toBe(0);
    const listed = JSON.parse(list.stdout) as { timelines: { timeline: number; segments: number; firstSegment: string; lastSegment: string; bytes: number }[] };
    const files = await listArchivedWal(repository, 'main');
    expect(listed.timelines).toEqual([expect.objectContaining({ timeline: 1, segments: files.filter((f) => f.kind === 'segment').length, firstSegment: '000000010000000000000001', lastSegment: segment, bytes: files.reduce((n, f) => n + f.size, 0) })]);
    expect((await setup.cli(['wal', 'list'])).stdout).toMatch(new RegExp(`^TIMELINE.*\n1 +000000010000000000000001 +${segment} `));
  });

  it('wal restore-point creates the point on the server, records it, switches WAL so it is archived, and refuses a name twice or a bad name', async () => {
    const result = await setup.cli(['wal', 'restore-point', 'before-cleanup', '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const created = JSON.parse(result.stdout) as { lsn: string; timeline: number; segment: string };
    const record = RestorePointRecord.parse(JSON.parse(readFileSync(join(setup.dir, 'repo', 'pitr', 'main', 'restore-points', 'before-cleanup.json'), 'utf8')));
    expect(record).toMatchObject({ name: 'before-cleanup', lsn: created.lsn, timeline: 1 });
    await setup.waitArchived(created.segment);
    // The segment holding the point is archived, and pg_waldump finds the restore point record in it.
    const fetched = join(work, created.segment);
    expect((await setup.cli(['wal-fetch', created.segment, fetched])).code).toBe(0);
    const dump = execFileSync(join(setup.source.binDir, 'pg_waldump'), ['-r', 'XLOG', fetched], { encoding: 'utf8' });
    expect(dump).toMatch(new RegExp(`RESTORE_POINT.*before-cleanup`));

    const again = await setup.cli(['wal', 'restore-point', 'before-cleanup']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/restore point "before-cleanup" already exists/);
    const bad = await setup.cli(['wal', 'restore-point', 'no spaces']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid restore point name "no spaces"/);
  });
});

describe('wal-fetch as restore_command (local repository, zstd)', () => {
  it('fetches an archived segment: the bytes whose sha256 its name records', async () => {
    const segment = await setup.switchAndArchive();
    const { key } = await storedObject(segment);
    const destination = join(work, 'RECOVERYXLOG');
    const result = await setup.cli(['wal-fetch', segment, destination, '--cluster', 'main']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(key).toContain(`${segment}-${sha256(readFileSync(destination))}.zst`);
  });

  it('exits 1 with one short line for a file the archive does not hold', async () => {
    const destination = join(work, 'RECOVERYHISTORY');
    const result = await setup.cli(['wal-fetch', '00000002.history', destination, '--cluster', 'main']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('wal-fetch: 00000002.history is not in the archive\n');
    expect(existsSync(destination)).toBe(false);
  });

  it('fails with a checksum error on a corrupted stored object and leaves nothing at %p', async () => {
    const segment = await setup.switchAndArchive();
    const { path } = await storedObject(segment);
    const stored = readFileSync(path);
    // zstd frames here carry their own checksum too; flip a byte inside the compressed payload.
    const corrupt = Buffer.from(stored);
    corrupt[Math.floor(corrupt.length / 2)]! ^= 0x01;
    writeFileSync(path, corrupt);
    try {
      const destination = join(work, 'corrupt-target');
      const result = await setup.cli(['wal-fetch', segment, destination, '--cluster', 'main']);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^pgrunbook wal-fetch: ${segment} (could not be read back|does not match its checksum).*\nHINT: `));
      expect(existsSync(destination)).toBe(false);
      expect(readdirSync(work).filter((n) => n.includes('corrupt-target'))).toEqual([]);
      // The library call reports it the same way.
      await expect(fetchWalFile({ repository, cluster: 'main', name: segment, destination, keys: noKeys })).rejects.toThrow(segment);
    } finally {
      writeFileSync(path, stored);
    }
  });
});

describe('recovery from the archive', () => {
  it('recovers a stock pg_basebackup (-X none) to the latest WAL with a plain restore_command of stock shell tools, and with pgrunbook wal-fetch', async () => {
    await setup.source.sql("INSERT INTO events SELECT g, 'in base backup' FROM generate_series(1001, 2000) g", 'app');
    const plainDir = await plainBaseBackup(setup, 'plain');
    const fetchDir = await plainBaseBackup(setup, 'fetch');
    await setup.source.sql("INSERT INTO events SELECT g, 'after base backup' FROM generate_series(2001, 3000) g", 'app');
    await setup.switchAndArchive();
    const expected = await setup.source.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base backup') FROM events", 'app');
    expect(expected).toBe('3000|4501500|1000');

    // The documented plain restore_command: stock shell tools only, no pgrunbook.
    const repo = join(setup.dir, 'repo');
    const plain = `f=$(ls ${repo}/pitr/main/wal/*/%f-* 2>/dev/null | head -n 1); [ -n "$f" ] && zstd -d -q -c "$f" > "%p"`;
    const byPlain = await recoverToLatest(setup, plainDir, plain);
    try {
      expect(await byPlain.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base backup') FROM events", 'app')).toBe(expected);
    } finally {
      await byPlain.stop();
    }

    const pgrunbook = `${process.execPath} ${join(projectRoot, 'dist', 'client', 'main.js')} wal-fetch "%f" "%p" --cluster main --config ${setup.configPath}`;
    const byFetch = await recoverToLatest(setup, fetchDir, pgrunbook);
    try {
      expect(await byFetch.sql("SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'after base backup') FROM events", 'app')).toBe(expected);
      // PostgreSQL asked for files the archive does not hold (the next timeline's history): one short line each.
      expect(byFetch.log()).toMatch(/wal-fetch: 0000000[0-9A-F]\.history is not in the archive/);
    } finally {
      await byFetch.stop();
    }
  });
});

describe('a gap in the archive', () => {
  it('makes walReachability unreachable past the missing segment and reachable before it', async () => {
    const startLsn = parseLsn(await setup.source.sql('SELECT pg_current_wal_lsn()'))!;
    const timeline = Number(await setup.source.sql('SELECT timeline_id FROM pg_control_checkpoint()'));
    const first = await setup.switchAndArchive();
    await setup.source.sql("INSERT INTO events SELECT g, 'gap' FROM generate_series(3001, 3100) g", 'app');
    const beforeGap = new Date();
    await new Promise((r) => setTimeout(r, 1100));
    const missing = await setup.switchAndArchive();
    const last = await setup.switchAndArchive();
    expect(await walReachability(repository, 'main', { timeline, startLsn }, { latest: true })).toMatchObject({ reachable: true, gaps: [], lastSegment: last });

    await repository.delete((await storedObject(missing)).key);
    const latest = await walReachability(repository, 'main', { timeline, startLsn }, { latest: true });
    expect(latest).toMatchObject({ reachable: false, gaps: [{ timeline, from: missing, to: missing, missing: 1 }], lastSegment: last });
    expect(latest.reason).toContain(missing);
    const verify = await setup.cli(['wal', 'verify', '--json']);
    expect(verify.code).toBe(1);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: false, gaps: [{ timeline, from: missing, to: missing, missing: 1 }] });
    const human = await setup.cli(['wal', 'verify']);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(`GAP: ${missing} missing from the archive`);
    const lsnPastGap = parseLsn(formatSegmentStart(last))!;
    expect((await walReachability(repository, 'main', { timeline, startLsn }, { lsn: lsnPastGap })).reachable).toBe(false);
    // Before the gap: the first segment archived after `beforeGap` is `missing` itself.
    expect((await walReachability(repository, 'main', { timeline, startLsn }, { time: beforeGap })).reachable).toBe(false);
    const firstFile = (await listArchivedWal(repository, 'main')).find((f) => f.name === first)!;
    const reachable = await walReachability(repository, 'main', { timeline, startLsn }, { time: new Date(firstFile.modified.getTime() - 1) });
    expect(reachable).toMatchObject({ reachable: true, gaps: [], lastSegment: first });
    expect((await walReachability(repository, 'main', { timeline, startLsn }, { lsn: startLsn })).reachable).toBe(true);
  });
});

/** The LSN text of a segment's first byte (16 MiB segments). */
function formatSegmentStart(segment: string): string {
  const log = parseInt(segment.slice(8, 16), 16);
  const seg = parseInt(segment.slice(16), 16);
  return `${log.toString(16).toUpperCase()}/${(seg * 16 * 1024 * 1024).toString(16).toUpperCase()}`;
}
