// PostgreSQL's WAL names and positions, as the server spells them (xlog_internal.h):
//   segment  TTTTTTTTXXXXXXXXYYYYYYYY   timeline, then the segment number split in "log" and "seg"
//   history  TTTTTTTT.history            a timeline's ancestry, written at promotion
//   backup   <segment>.XXXXXXXX.backup   the label of a base backup, archived at its end
//   partial  <segment>.partial           the last, incomplete segment of an old timeline
// An LSN is "X/Y": the high and low 32 bits of a 64-bit byte position, in hex.

export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;
const BACKUP_LABEL = /^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$/;
const PARTIAL = /^([0-9A-F]{24})\.partial$/;
const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export type WalFileKind = 'segment' | 'history' | 'backup' | 'partial';

export interface WalFileName {
  name: string;
  kind: WalFileKind;
  timeline: number;
  /** The segment number (segment, backup, partial); null for history files. */
  segment: bigint | null;
}

/** Parses a file name PostgreSQL hands to archive_command/restore_command; undefined if it is none. */
export function parseWalFileName(name: string, segmentSize = DEFAULT_SEGMENT_SIZE): WalFileName | undefined {
  let m = SEGMENT.exec(name);
  if (m) return { name, kind: 'segment', timeline: parseInt(m[1]!, 16), segment: segmentNumber(m[2]!, m[3]!, segmentSize) };
  m = HISTORY.exec(name);
  if (m) return { name, kind: 'history', timeline: parseInt(m[1]!, 16), segment: null };
  m = BACKUP_LABEL.exec(name) ?? PARTIAL.exec(name);
  if (m) {
    const seg = SEGMENT.exec(m[1]!)!;
    return { name, kind: name.endsWith('.partial') ? 'partial' : 'backup', timeline: parseInt(seg[1]!, 16), segment: segmentNumber(seg[2]!, seg[3]!, segmentSize) };
  }
  return undefined;
}

function segmentNumber(log: string, seg: string, segmentSize: number): bigint {
  return BigInt(`0x${log}`) * segmentsPerLog(segmentSize) + BigInt(`0x${seg}`);
}

/** Segments per 4 GiB "log file" (0x100000000 / segment size): 256 for 16 MiB segments. */
export function segmentsPerLog(segmentSize = DEFAULT_SEGMENT_SIZE): bigint {
  return 0x100000000n / BigInt(segmentSize);
}

/** The file name of segment `segment` on `timeline` (XLogFileName). */
export function segmentFileName(timeline: number, segment: bigint, segmentSize = DEFAULT_SEGMENT_SIZE): string {
  const perLog = segmentsPerLog(segmentSize);
  return hex8(BigInt(timeline)) + hex8(segment / perLog) + hex8(segment % perLog);
}

/** The segment holding byte position `lsn` (XLByteToSeg). */
export function segmentOf(lsn: bigint, segmentSize = DEFAULT_SEGMENT_SIZE): bigint {
  return lsn / BigInt(segmentSize);
}

export function historyFileName(timeline: number): string {
  return `${hex8(BigInt(timeline))}.history`;
}

export function parseLsn(text: string): bigint | undefined {
  const m = LSN.exec(text.trim());
  if (!m) return undefined;
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

function hex8(value: bigint): string {
  return value.toString(16).toUpperCase().padStart(8, '0');
}

/** One line of a timeline history file: `parent timeline, switch point, reason`. */
export interface TimelineSwitch {
  /** The timeline that ended. */
  timeline: number;
  /** Where it ended: the first LSN that belongs to the next timeline. */
  switchLsn: bigint;
  reason: string;
}

/** Parses a TTTTTTTT.history file (readTimeLineHistory): one entry per ancestor timeline. */
export function parseTimelineHistory(text: string): TimelineSwitch[] {
  const switches: TimelineSwitch[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [tli, lsn, ...reason] = line.split(/\s+/);
    const switchLsn = lsn ? parseLsn(lsn) : undefined;
    if (!tli || !/^\d+$/.test(tli) || switchLsn === undefined) throw new Error(`malformed timeline history line: "${line}"`);
    switches.push({ timeline: Number(tli), switchLsn, reason: reason.join(' ') });
  }
  return switches;
}

/** The folder of a segment's "log" (TTTTTTTTXXXXXXXX): its name's first 16 characters. */
export function segmentLogFolder(segmentName: string): string {
  return segmentName.slice(0, 16);
}

// A WAL segment starts with a long page header (XLogLongPageHeaderData, xlog_internal.h):
//   uint16 xlp_magic @0, uint16 xlp_info @2, uint32 xlp_tli @4, uint64 xlp_pageaddr @8,
//   uint32 xlp_rem_len @16, (pad) @20, uint64 xlp_sysid @24, uint32 xlp_seg_size @32,
//   uint32 xlp_xlog_blcksz @36
// in the server's byte order (little endian on every platform PostgreSQL is packaged for here).
export const LONG_PAGE_HEADER_SIZE = 40;
const XLP_LONG_HEADER = 0x0002;

/** XLOG_PAGE_MAGIC by major version: the WAL format changes with each major release. */
const PAGE_MAGIC: Record<number, number> = {
  0xd097: 10, 0xd098: 11, 0xd101: 12, 0xd106: 13, 0xd10d: 14, 0xd110: 15, 0xd113: 16, 0xd116: 17, 0xd118: 18,
};

export interface SegmentHeader {
  magic: number;
  /** The major version whose WAL format the magic is; null for a magic this table does not know. */
  pgMajor: number | null;
  timeline: number;
  /** LSN of the segment's first byte. */
  pageAddress: bigint;
  /** pg_control_system().system_identifier, as a decimal string (uint64). */
  systemIdentifier: string;
  segmentSize: number;
  blockSize: number;
}

/** Reads a segment's long page header; throws if the bytes do not start like a WAL segment. */
export function parseSegmentHeader(bytes: Uint8Array): SegmentHeader {
  if (bytes.length < LONG_PAGE_HEADER_SIZE) throw new Error(`not a wal segment: ${bytes.length} bytes, shorter than a page header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint16(0, true);
  const info = view.getUint16(2, true);
  // Every magic since PostgreSQL 9.x is 0xD0xx or 0xD1xx; anything else (zeros: a recycled,
  // never written file) is not WAL.
  if ((magic & 0xfe00) !== 0xd000 || (info & XLP_LONG_HEADER) === 0) {
    throw new Error(`not a wal segment: no long page header at its start (magic 0x${magic.toString(16).padStart(4, '0')}, info 0x${info.toString(16)})`);
  }
  const segmentSize = view.getUint32(32, true);
  const blockSize = view.getUint32(36, true);
  // Segment sizes are powers of two from 1 MiB to 1 GiB; block sizes powers of two up to 32 KiB.
  if (segmentSize < 1 << 20 || segmentSize > 1 << 30 || (segmentSize & (segmentSize - 1)) !== 0 || blockSize < 1024 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw new Error(`not a wal segment: implausible segment size ${segmentSize} or block size ${blockSize} in its header`);
  }
  return {
    magic,
    pgMajor: PAGE_MAGIC[magic] ?? null,
    timeline: view.getUint32(4, true),
    pageAddress: view.getBigUint64(8, true),
    systemIdentifier: view.getBigUint64(24, true).toString(),
    segmentSize,
    blockSize,
  };
}

/** pg_control's first field is the system identifier (uint64): readable without a connection. */
export function systemIdentifierOfControlFile(bytes: Uint8Array): string {
  if (bytes.length < 8) throw new Error('pg_control is shorter than 8 bytes');
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true).toString();
}
