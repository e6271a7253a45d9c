import { createHash } from 'node:crypto';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';
import type { Repository } from '../repository/types.js';
import { archiveInfoKey, walPrefix, type WalCompression } from './layout.js';
import { ArchiveInfo } from './manifest.js';
import {
  DEFAULT_SEGMENT_SIZE,
  formatLsn,
  historyFileName,
  parseTimelineHistory,
  parseWalFileName,
  segmentFileName,
  segmentLogFolder,
  segmentOf,
  type TimelineSwitch,
  type WalFileKind,
  type WalFileName,
} from './wal-names.js';

// What WAL an archive holds, and whether a recovery can get from a base backup to a target with
// it. Everything here is derived from object names alone (name, sha256, compression are in each
// key), so one listing answers every question: no per-segment metadata to read.
//
// Object names (pitr/layout.ts):
//   pitr/<cluster>/wal/<TTTTTTTTXXXXXXXX>/<segment>-<sha256>.<zst|gz|raw>[.age]
//   pitr/<cluster>/wal/timelines/<history|backup|partial name>-<sha256>.<zst|gz|raw>[.age]

const TIMELINES_FOLDER = 'timelines';
const STORED_NAME = /^(.+)-([0-9a-f]{64})\.(zst|gz|raw)(\.age)?$/;
const EXTENSION: Record<WalCompression, string> = { zstd: 'zst', gzip: 'gz', none: 'raw' };
const COMPRESSION_OF: Record<string, WalCompression> = { zst: 'zstd', gz: 'gzip', raw: 'none' };

/** The folder (key prefix ending in "/") an archived WAL file lives in. */
export function walFolderKey(cluster: string, file: WalFileName): string {
  return `${walPrefix(cluster)}${file.kind === 'segment' ? segmentLogFolder(file.name) : TIMELINES_FOLDER}/`;
}

/** The key a WAL file is stored under: its name, the sha256 of its original bytes, how it is stored. */
export function walObjectKey(cluster: string, file: WalFileName, sha256: string, compression: WalCompression, encrypted: boolean): string {
  return `${walFolderKey(cluster, file)}${file.name}-${sha256}.${EXTENSION[compression]}${encrypted ? '.age' : ''}`;
}

export interface StoredWalName {
  name: string;
  sha256: string;
  compression: WalCompression;
  encrypted: boolean;
}

/** Parses the last path element of a stored WAL object's key; undefined for anything else. */
export function parseStoredWalName(basename: string): StoredWalName | undefined {
  const m = STORED_NAME.exec(basename);
  if (!m) return undefined;
  return { name: m[1]!, sha256: m[2]!, compression: COMPRESSION_OF[m[3]!]!, encrypted: m[4] !== undefined };
}

export interface ArchivedWalFile {
  name: string;
  kind: WalFileKind;
  timeline: number;
  segment: bigint | null;
  key: string;
  sha256: string;
  /** Stored (compressed, encrypted) bytes. */
  size: number;
  /** When the object was written: a segment archived after time T holds the records up to T. */
  modified: Date;
}

/** pitr/<cluster>/archive.json, or undefined before the first wal-push. */
export async function readArchiveInfo(repository: Repository, cluster: string): Promise<ArchiveInfo | undefined> {
  const key = archiveInfoKey(cluster);
  let text: string;
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await repository.read(key)) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    if (await repository.stat(key)) throw error;
    return undefined;
  }
  const parsed = ArchiveInfo.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${key} is not a valid archive description: ${parsed.error.issues[0]?.message ?? 'invalid'}\nHINT: it is written by the first wal-push; restore it from a copy, or remove it to let the next wal-push write it again`);
  return parsed.data;
}

/** Every archived WAL file of a cluster, sorted by (timeline, segment, name); history files first in their timeline. */
export async function listArchivedWal(repository: Repository, cluster: string): Promise<ArchivedWalFile[]> {
  const [objects, info] = await Promise.all([repository.list(walPrefix(cluster)), readArchiveInfo(repository, cluster)]);
  const segmentSize = info?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  const files: ArchivedWalFile[] = [];
  for (const object of objects) {
    const stored = parseStoredWalName(object.key.slice(object.key.lastIndexOf('/') + 1));
    const parsed = stored && parseWalFileName(stored.name, segmentSize);
    if (!stored || !parsed) continue;
    files.push({ name: parsed.name, kind: parsed.kind, timeline: parsed.timeline, segment: parsed.segment, key: object.key, sha256: stored.sha256, size: object.size, modified: object.modified });
  }
  return files.sort(compareWalFiles);
}

function compareWalFiles(a: ArchivedWalFile, b: ArchivedWalFile): number {
  if (a.timeline !== b.timeline) return a.timeline - b.timeline;
  const sa = a.segment ?? -1n;
  const sb = b.segment ?? -1n;
  if (sa !== sb) return sa < sb ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export interface WalGap {
  timeline: number;
  /** First and last missing segment names. */
  from: string;
  to: string;
  missing: number;
}

export interface WalReachability {
  reachable: boolean;
  /** Why not, with a HINT line; null when reachable. */
  reason: string | null;
  gaps: WalGap[];
  /** The timelines recovery goes through, oldest first. */
  timelines: number[];
  /** The last segment recovery needs (when the target is known), else the last archived one on the path; null if none. */
  lastSegment: string | null;
  /** Segments from the base backup's start segment to lastSegment. */
  segmentsNeeded: number;
}

export type WalTarget = { lsn: bigint } | { time: Date } | { latest: true };

/** The timelines a recovery replays, oldest first; each but the last ends at its switch point. */
export interface TimelinePath {
  steps: { timeline: number; beginsAt: bigint; switchLsn: bigint | null }[];
  /** History files that could not be read (named in a reason, never fatal on their own). */
  problems: string[];
}

/**
 * The newest timeline that descends from `from` (it branched after the base backup started), as
 * recovery_target_timeline = 'latest' picks it, and the path of timelines to it. `toTimeline`
 * pins the end (wal verify: the server's current timeline).
 */
export async function timelinePath(
  repository: Repository,
  files: ArchivedWalFile[],
  from: { timeline: number; startLsn: bigint },
  toTimeline?: number,
): Promise<TimelinePath> {
  const problems: string[] = [];
  const histories = new Map<number, TimelineSwitch[]>();
  const historyFiles = files.filter((f) => f.kind === 'history' && f.timeline > from.timeline && (toTimeline === undefined || f.timeline <= toTimeline));
  for (const file of historyFiles) {
    if (histories.has(file.timeline)) continue;
    try {
      histories.set(file.timeline, parseTimelineHistory(await readWalText(repository, file)));
    } catch (error) {
      problems.push(`${file.name}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  // A timeline descends from the base backup's if its history has the base backup's timeline
  // ending after the backup started (PostgreSQL's "requested timeline is not a child" check).
  const descends = (tli: number): boolean => {
    const history = histories.get(tli);
    const entry = history?.find((s) => s.timeline === from.timeline);
    return entry !== undefined && entry.switchLsn > from.startLsn;
  };
  let target = from.timeline;
  if (toTimeline !== undefined) {
    if (toTimeline !== from.timeline && !histories.has(toTimeline)) {
      problems.push(`${historyFileName(toTimeline)} is not archived: the path from timeline ${from.timeline} to ${toTimeline} is unknown`);
      return { steps: [{ timeline: from.timeline, beginsAt: from.startLsn, switchLsn: null }], problems };
    }
    target = toTimeline;
  } else {
    for (const tli of histories.keys()) if (tli > target && descends(tli)) target = tli;
  }
  if (target === from.timeline) return { steps: [{ timeline: from.timeline, beginsAt: from.startLsn, switchLsn: null }], problems };
  if (!descends(target)) {
    problems.push(`timeline ${target} does not descend from timeline ${from.timeline} after ${formatLsn(from.startLsn)} (per ${historyFileName(target)})`);
    return { steps: [{ timeline: from.timeline, beginsAt: from.startLsn, switchLsn: null }], problems };
  }
  const history = histories.get(target)!;
  const steps: TimelinePath['steps'] = [];
  let beginsAt = from.startLsn;
  for (const entry of history.slice(history.findIndex((s) => s.timeline === from.timeline))) {
    steps.push({ timeline: entry.timeline, beginsAt, switchLsn: entry.switchLsn });
    beginsAt = entry.switchLsn;
  }
  steps.push({ timeline: target, beginsAt, switchLsn: null });
  return { steps, problems };
}

/**
 * The timeline recovery reads segment `segment` from: the newest timeline on the path that began
 * at or before that segment (XLogFileReadAnyTLI). The segment holding a switch point is read from
 * the new timeline, which starts with a copy of the old one's records up to the switch.
 */
export function timelineOfSegment(path: TimelinePath, segment: bigint, segmentSize: number): number {
  let timeline = path.steps[0]!.timeline;
  for (const step of path.steps.slice(1)) if (segmentOf(step.beginsAt, segmentSize) <= segment) timeline = step.timeline;
  return timeline;
}

/**
 * Can recovery from a base backup (timeline, startLsn) reach `until` with the archived WAL?
 * - { lsn }: every segment from the start segment through the one holding the LSN;
 * - { time }: through the first archived segment written at or after the time (it holds every
 *   record up to the time); none yet means unreachable;
 * - { latest: true }: through the last archived segment.
 * Timeline history files are followed from the base backup's timeline to the newest one that
 * descends from it, switching timelines at each switch point.
 */
export async function walReachability(
  repository: Repository,
  cluster: string,
  from: { timeline: number; startLsn: bigint },
  until: WalTarget,
  segmentSize?: number,
): Promise<WalReachability> {
  const files = await listArchivedWal(repository, cluster);
  const size = segmentSize ?? (await readArchiveInfo(repository, cluster))?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  return reachabilityOf(repository, files, from, until, size);
}

/** walReachability over a listing already made (wal verify lists once). `toTimeline` pins the last timeline. */
export async function reachabilityOf(
  repository: Repository,
  files: ArchivedWalFile[],
  from: { timeline: number; startLsn: bigint },
  until: WalTarget | { segment: bigint },
  segmentSize: number,
  toTimeline?: number,
): Promise<WalReachability> {
  const path = await timelinePath(repository, files, from, toTimeline);
  const timelines = path.steps.map((s) => s.timeline);
  const startSegment = segmentOf(from.startLsn, segmentSize);
  const segments = new Map<string, ArchivedWalFile>();
  for (const file of files) if (file.kind === 'segment' && !segments.has(file.name)) segments.set(file.name, file);
  const nameAt = (segment: bigint): string => segmentFileName(timelineOfSegment(path, segment, segmentSize), segment, segmentSize);
  const archivedAt = (segment: bigint): ArchivedWalFile | undefined => segments.get(nameAt(segment));
  const onPath = [...segments.values()].filter((f) => f.segment! >= startSegment && f.name === nameAt(f.segment!)).sort((a, b) => (a.segment! < b.segment! ? -1 : 1));
  const lastOnPath = onPath.at(-1);
  // Unreadable history files explain a surprising path: named in the reason, before its HINT.
  const withProblems = (reason: string): string => {
    if (path.problems.length === 0) return reason;
    const [head, ...hint] = reason.split('\nHINT: ');
    return `${head} (${path.problems.join('; ')})${hint.length ? `\nHINT: ${hint.join(' ')}` : ''}`;
  };
  const unreachable = (reason: string, lastSegment: string | null, gaps: WalGap[] = [], needed = 0): WalReachability => ({ reachable: false, reason: withProblems(reason), gaps, timelines, lastSegment, segmentsNeeded: needed });

  let endSegment: bigint;
  if ('segment' in until) {
    endSegment = until.segment;
  } else if ('lsn' in until) {
    if (until.lsn < from.startLsn) return unreachable(`the target ${formatLsn(until.lsn)} is before the base backup's start ${formatLsn(from.startLsn)}\nHINT: choose an older base backup`, null);
    endSegment = segmentOf(until.lsn, segmentSize);
  } else if ('time' in until) {
    // S3 keeps LastModified in whole seconds (truncated): a segment archived 0.3 s after T in
    // the same second looks older than T. At the repository's resolution, a segment of T's
    // second counts as "after"; should it still end before T, recovery says so (the recover
    // step fails with the server's "recovery ended before the target" log).
    const resolution = repository.modifiedResolutionMs ?? 1;
    const targetTick = Math.floor(until.time.getTime() / resolution) * resolution;
    const after = onPath.find((f) => f.modified.getTime() >= targetTick);
    if (!after) return unreachable(`no wal archived after ${until.time.toISOString()} yet\nHINT: pg_switch_wal() or wait for archive_timeout`, lastOnPath?.name ?? null);
    endSegment = after.segment!;
  } else {
    if (!lastOnPath) return unreachable(`no wal archived from ${nameAt(startSegment)} (the base backup's start segment) on\nHINT: check that archive_command runs pgrunbook wal-push and succeeds (pg_stat_archiver)`, null);
    endSegment = lastOnPath.segment!;
  }

  const gaps: WalGap[] = [];
  let open: { timeline: number; from: bigint; to: bigint } | undefined;
  const close = (): void => {
    if (!open) return;
    gaps.push({ timeline: open.timeline, from: segmentFileName(open.timeline, open.from, segmentSize), to: segmentFileName(open.timeline, open.to, segmentSize), missing: Number(open.to - open.from + 1n) });
    open = undefined;
  };
  for (let segment = startSegment; segment <= endSegment; segment++) {
    if (archivedAt(segment)) {
      close();
      continue;
    }
    const timeline = timelineOfSegment(path, segment, segmentSize);
    if (open && open.timeline === timeline) open.to = segment;
    else {
      close();
      open = { timeline, from: segment, to: segment };
    }
  }
  close();
  const needed = Number(endSegment - startSegment + 1n);
  const lastSegment = endSegment >= startSegment ? nameAt(endSegment) : null;
  if (gaps.length > 0) {
    const last = gaps.at(-1)!;
    // A gap that runs to the end is WAL not archived yet, not a hole in the middle.
    const atEnd = last.to === lastSegment && (!lastOnPath || lastOnPath.segment! < endSegment);
    const described = gaps.map((g) => (g.missing === 1 ? g.from : `${g.from}..${g.to}`)).join(', ');
    return unreachable(
      atEnd && gaps.length === 1
        ? `wal is archived only up to ${lastOnPath?.name ?? '(none)'}; recovery needs up to ${lastSegment}\nHINT: wait for the archiver (pg_stat_archiver), pg_switch_wal(), or choose an earlier target`
        : `the archived wal has ${gaps.length === 1 ? 'a gap' : `${gaps.length} gaps`}: ${described} missing\nHINT: these segments are lost from the archive; recover to a target before the gap, or take a new base backup after it`,
      lastSegment,
      gaps,
      needed,
    );
  }
  if (path.problems.length > 0 && toTimeline !== undefined) return unreachable('the timeline history is incomplete\nHINT: archive the missing history files (they are in the server\'s pg_wal)', lastSegment, [], needed);
  return { reachable: true, reason: null, gaps: [], timelines, lastSegment, segmentsNeeded: needed };
}

/**
 * The text of an archived timeline history file. History files are stored compressed but never
 * encrypted (wal-push): a few lines of timeline ids and LSNs, which reachability must read
 * without an identity.
 */
async function readWalText(repository: Repository, file: ArchivedWalFile): Promise<string> {
  const stored = parseStoredWalName(file.key.slice(file.key.lastIndexOf('/') + 1))!;
  if (stored.encrypted) throw new Error(`${file.name} is stored encrypted; its timeline switches cannot be read without the identity`);
  const chunks: Buffer[] = [];
  for await (const chunk of await repository.read(file.key)) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  const plain = stored.compression === 'zstd' ? zstdDecompressSync(raw) : stored.compression === 'gzip' ? gunzipSync(raw) : raw;
  if (createHash('sha256').update(plain).digest('hex') !== stored.sha256) throw new Error(`${file.name} does not match its sha256 ${stored.sha256}: the archived copy is corrupt`);
  return plain.toString('utf8');
}
