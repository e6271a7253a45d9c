import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { parseStoredWalName, walObjectKey, walReachability } from '../../pitr/wal-inventory.js';
import {
  formatLsn,
  historyFileName,
  parseLsn,
  parseSegmentHeader,
  parseTimelineHistory,
  parseWalFileName,
  segmentFileName,
  segmentOf,
  segmentsPerLog,
  systemIdentifierOfControlFile,
} from '../../pitr/wal-names.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { writeAll } from '../../repository/types.js';

const MiB16 = 16 * 1024 * 1024;

describe('wal file names and positions', () => {
  it('parses segment, history, backup label and partial names into timeline and segment number', () => {
    expect(parseWalFileName('00000001000000020000003F')).toEqual({ name: '00000001000000020000003F', kind: 'segment', timeline: 1, segment: 2n * 256n + 0x3fn });
    expect(parseWalFileName('0000000A.history')).toEqual({ name: '0000000A.history', kind: 'history', timeline: 10, segment: null });
    expect(parseWalFileName('000000010000000000000003.00000028.backup')).toMatchObject({ kind: 'backup', timeline: 1, segment: 3n });
    expect(parseWalFileName('000000020000000000000005.partial')).toMatchObject({ kind: 'partial', timeline: 2, segment: 5n });
    for (const bad of ['00000001000000000000003', '000000010000000000000003.gz', 'RECOVERYXLOG', '0000000a.history', '../00000001.history']) expect(parseWalFileName(bad)).toBeUndefined();
    // With 64 MiB segments a log holds 64 segments.
    expect(parseWalFileName('000000010000000100000003', 64 * 1024 * 1024)!.segment).toBe(64n + 3n);
  });

  it('does LSN and segment arithmetic as the server does', () => {
    expect(parseLsn('0/2000028')).toBe(0x2000028n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(parseLsn('not an lsn')).toBeUndefined();
    expect(formatLsn((0x16n << 32n) | 0xb374d848n)).toBe('16/B374D848');
    expect(segmentsPerLog()).toBe(256n);
    // pg_walfile_name('16/B374D848') on timeline 1 is 0000000100000016000000B3.
    expect(segmentFileName(1, segmentOf(parseLsn('16/B374D848')!), MiB16)).toBe('0000000100000016000000B3');
    expect(historyFileName(3)).toBe('00000003.history');
  });

  it('parses timeline history files, skipping comments and blank lines, refusing malformed lines', () => {
    const text = '1\t0/3000000\tno recovery target specified\n\n# comment\n2\t0/5000100\tbefore 2024-01-01 14:30:00+00\n';
    expect(parseTimelineHistory(text)).toEqual([
      { timeline: 1, switchLsn: 0x3000000n, reason: 'no recovery target specified' },
      { timeline: 2, switchLsn: 0x5000100n, reason: 'before 2024-01-01 14:30:00+00' },
    ]);
    expect(() => parseTimelineHistory('x 0/1 y')).toThrow(/malformed timeline history line/);
  });
});

/** The first bytes of a segment as PostgreSQL 15 writes them (XLogLongPageHeaderData). */
function segmentHeader(fields: { magic?: number; info?: number; pageAddress?: bigint; sysid?: bigint; segSize?: number; blockSize?: number } = {}): Buffer {
  const header = Buffer.alloc(8192);
  header.writeUInt16LE(fields.magic ?? 0xd110, 0);
  header.writeUInt16LE(fields.info ?? 0x0006, 2);
  header.writeUInt32LE(1, 4);
  header.writeBigUInt64LE(fields.pageAddress ?? 0x3000000n, 8);
  header.writeBigUInt64LE(fields.sysid ?? 7300000000000000001n, 24);
  header.writeUInt32LE(fields.segSize ?? MiB16, 32);
  header.writeUInt32LE(fields.blockSize ?? 8192, 36);
  return header;
}

describe('the segment header check', () => {
  it('reads magic (the major version), page address, system identifier and segment size', () => {
    expect(parseSegmentHeader(segmentHeader())).toEqual({ magic: 0xd110, pgMajor: 15, timeline: 1, pageAddress: 0x3000000n, systemIdentifier: '7300000000000000001', segmentSize: MiB16, blockSize: 8192 });
    expect(parseSegmentHeader(segmentHeader({ magic: 0xd113 })).pgMajor).toBe(16);
    expect(parseSegmentHeader(segmentHeader({ magic: 0xd1ff })).pgMajor).toBeNull();
  });

  it('refuses bytes that do not start with a long page header', () => {
    expect(() => parseSegmentHeader(Buffer.alloc(MiB16))).toThrow(/not a wal segment: no long page header/);
    expect(() => parseSegmentHeader(segmentHeader({ info: 0x0004 }))).toThrow(/no long page header/);
    expect(() => parseSegmentHeader(segmentHeader({ magic: 0x1234 }))).toThrow(/no long page header/);
    expect(() => parseSegmentHeader(segmentHeader({ segSize: 12345 }))).toThrow(/implausible segment size/);
    expect(() => parseSegmentHeader(Buffer.alloc(20))).toThrow(/shorter than a page header/);
  });

  it('reads the system identifier from pg_control\'s first eight bytes', () => {
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(7300000000000000001n, 0);
    expect(systemIdentifierOfControlFile(control)).toBe('7300000000000000001');
  });
});

describe('stored object names', () => {
  it('round-trip name, sha256, compression and encryption', () => {
    const sha = 'a'.repeat(64);
    const key = walObjectKey('main', parseWalFileName('000000010000000000000003')!, sha, 'zstd', true);
    expect(key).toBe(`pitr/main/wal/0000000100000000/000000010000000000000003-${sha}.zst.age`);
    expect(parseStoredWalName(key.split('/').at(-1)!)).toEqual({ name: '000000010000000000000003', sha256: sha, compression: 'zstd', encrypted: true });
    expect(walObjectKey('main', parseWalFileName('00000002.history')!, sha, 'none', false)).toBe(`pitr/main/wal/timelines/00000002.history-${sha}.raw`);
    expect(parseStoredWalName('.000000010000000000000003-x.zst.0123456789ab.partial')).toBeUndefined();
  });
});

describe('walReachability across timelines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-wal-names-'));
  const repository = new LocalRepository('local', dir);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const put = async (name: string, content = Buffer.from(name)): Promise<string> => {
    const sha = createHash('sha256').update(content).digest('hex');
    const key = walObjectKey('tl', parseWalFileName(name)!, sha, 'zstd', false);
    await writeAll(repository, key, zstdCompressSync(content));
    return key;
  };

  it('follows history files from the base backup\'s timeline to the newest descendant, switching at each switch point', async () => {
    // Timeline 1: segments 1..5 (5 also as the .partial left at promotion); timeline 2 branched
    // at 0/5000100, so segment 5 onwards is read from timeline 2; timeline 3 branched from
    // timeline 1 before the base backup started and is not reachable from it.
    for (let s = 1n; s <= 5n; s++) await put(segmentFileName(1, s));
    await put('000000010000000000000005.partial');
    await put('00000002.history', Buffer.from('1\t0/5000100\tno recovery target specified\n'));
    await put('00000003.history', Buffer.from('1\t0/1800000\tbefore the base backup\n'));
    for (const s of [5n, 6n, 7n]) await put(segmentFileName(2, s));
    await put(segmentFileName(3, 1n));
    const from = { timeline: 1, startLsn: 0x2000028n };

    expect(await walReachability(repository, 'tl', from, { latest: true })).toEqual({ reachable: true, reason: null, gaps: [], timelines: [1, 2], lastSegment: '000000020000000000000007', segmentsNeeded: 6 });
    expect(await walReachability(repository, 'tl', from, { lsn: 0x4000000n + 10n })).toMatchObject({ reachable: true, timelines: [1, 2], lastSegment: '000000010000000000000004', segmentsNeeded: 3 });
    expect(await walReachability(repository, 'tl', from, { lsn: 0x8000000n })).toMatchObject({ reachable: false, lastSegment: '000000020000000000000008', gaps: [{ timeline: 2, from: '000000020000000000000008', to: '000000020000000000000008', missing: 1 }] });
    expect((await walReachability(repository, 'tl', from, { lsn: 0x8000000n })).reason).toMatch(/^wal is archived only up to 000000020000000000000007; recovery needs up to 000000020000000000000008\nHINT: /);
    expect((await walReachability(repository, 'tl', from, { lsn: 0x1000000n })).reason).toMatch(/before the base backup's start/);
    expect((await walReachability(repository, 'tl', from, { time: new Date(Date.now() + 60_000) })).reason).toMatch(/^no wal archived after .* yet\nHINT: pg_switch_wal\(\) or wait for archive_timeout$/);
    expect(await walReachability(repository, 'tl', from, { time: new Date(0) })).toMatchObject({ reachable: true, lastSegment: '000000010000000000000002', segmentsNeeded: 1 });

    // Timeline 2's first segment (the copy of timeline 1's records up to the switch) goes missing.
    await repository.delete(walObjectKey('tl', parseWalFileName('000000020000000000000005')!, createHash('sha256').update('000000020000000000000005').digest('hex'), 'zstd', false));
    const broken = await walReachability(repository, 'tl', from, { latest: true });
    expect(broken).toMatchObject({ reachable: false, gaps: [{ timeline: 2, from: '000000020000000000000005', to: '000000020000000000000005', missing: 1 }], timelines: [1, 2] });
    expect(broken.reason).toMatch(/^the archived wal has a gap: 000000020000000000000005 missing\nHINT: /);
    expect((await walReachability(repository, 'tl', from, { lsn: 0x4ffffffn })).reachable).toBe(true);
  });
});
