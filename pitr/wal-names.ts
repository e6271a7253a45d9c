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
