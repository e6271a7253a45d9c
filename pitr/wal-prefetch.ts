import { createHash, randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, fdatasyncSync, fstatSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseSegmentHeader, parseWalFileName, systemIdentifierOfControlFile, LONG_PAGE_HEADER_SIZE } from './wal-names.js';
import { archiveTarget, type ArchiveTarget } from './wal-spool.js';

// Fetch-ahead (clusters.<id>.wal.fetchAhead): a wal-fetch for segment X also fetches the next N
// segments of X's timeline, each checked exactly as X is (sha256 of the archived original,
// decryption, decompression), into pg_wal/.pgrunbook-prefetch/<segment>.<tag>. PostgreSQL's
// next calls then find their segment there and wal-fetch renames it to %p in a few milliseconds,
// before loading the config, zod or yaml (pgBackRest's archive-get queue, without a daemon: the
// call that fetches ahead waits for every segment before it exits).
//
// This module is that fast path: node built-ins and the dependency-free wal-names/wal-spool only.
//
// Why pg_wal/.pgrunbook-prefetch: restore_command runs in the data directory of the server that
// recovers, as its user, so the folder is writable and on the filesystem of %p (pg_wal/RECOVERYXLOG):
// handing a segment over is one rename. The server only touches names that parse as WAL files,
// and pg_basebackup sends pg_wal empty, so the folder never travels into a base backup.
//
// A prefetched file is a cache of "the archive holds this segment with these bytes", never a
// source of truth. The fast path uses one only when all of this holds:
// - complete and verified: a file gets its final name only after its sha256 matched the archive
//   and its bytes were fsynced (temp file + fdatasync + rename), so neither a killed wal-fetch nor
//   a crash of the machine leaves a partial file under a final name;
// - fetched for this archive: <tag> is a hash of what the invocation targets, the config file
//   (path, size, mtime, ctime, inode) and the --cluster argument, as a push-ahead marker records
//   it: a folder left by a recovery from another config or cluster id, or a config edited since,
//   never matches (and the next slow call deletes what does not match);
// - of this cluster, and the named segment: its long page header names the system identifier of
//   the recovering data directory's pg_control, the page address of the segment its name says,
//   and a segment size equal to the file's size (a truncated or foreign file is refused even if
//   it somehow got the right name).
// Anything else is deleted and the normal path fetches the segment from the archive.

export const PREFETCH_DIRECTORY = '.pgrunbook-prefetch';
const SEGMENT_NAME = /^[0-9A-F]{24}$/;
const PREFETCHED = /^([0-9A-F]{24})\.([0-9a-f]{16})$/;
/** Temporary files of a fetch in progress: `.<segment>.<tag>.<pid>-<random>.pgrunbook-tmp` (fetchWalFile's naming). */
const TEMPORARY = /\.(\d+)-[0-9a-f]+\.pgrunbook-tmp$/;

/** Names the archive an invocation targets (config file identity, --cluster): part of every prefetched file's name. */
export function prefetchTag(target: ArchiveTarget): string {
  return createHash('sha256').update(JSON.stringify(['pgrunbook-prefetch/1', target.config, target.configFile, target.clusterArgument])).digest('hex').slice(0, 16);
}

/** The final name of a prefetched segment. */
export function prefetchedFileName(segment: string, tag: string): string {
  return `${segment}.${tag}`;
}

/**
 * The prefetch folder of `dataDirectory` when it is a data directory (global/pg_control, pg_wal/):
 * restore_command's cwd. A wal-fetch run by hand elsewhere fetches only what it is asked for.
 */
export function prefetchFolderOf(dataDirectory: string): string | undefined {
  try {
    if (!statSync(join(dataDirectory, 'global', 'pg_control')).isFile() || !statSync(join(dataDirectory, 'pg_wal')).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  return join(dataDirectory, 'pg_wal', PREFETCH_DIRECTORY);
}

/**
 * The fast path of `wal-fetch %f %p`: when a segment fetched ahead for this archive is waiting in
 * the prefetch folder and checks out (see above), it becomes %p and true is returned. Otherwise
 * false, and the caller takes the normal path. Synchronous and built-ins only: it runs before
 * anything else is loaded. `dataDirectory`: restore_command's cwd, where %p is relative to.
 */
export function takePrefetchedSegment(args: string[], env: NodeJS.ProcessEnv, dataDirectory = process.cwd()): boolean {
  let segment: string;
  let destination: string;
  let options: { config?: string; cluster?: string };
  try {
    const parsed = parseArgs({ args, allowPositionals: true, strict: true, options: { cluster: { type: 'string' }, config: { type: 'string' } } });
    if (parsed.positionals.length !== 2) return false;
    [segment, destination] = parsed.positionals as [string, string];
    options = parsed.values;
  } catch {
    return false; // the normal path reports bad usage
  }
  if (!SEGMENT_NAME.test(segment)) return false;
  const folder = join(dataDirectory, 'pg_wal', PREFETCH_DIRECTORY);
  let entries: string[];
  try {
    entries = readdirSync(folder);
  } catch {
    return false; // no prefetch folder: fetchAhead 0, or the first call of a recovery
  }
  const target = archiveTarget(options, env);
  if (!target) return false;
  const tag = prefetchTag(target);
  const wanted = prefetchedFileName(segment, tag);
  removeStalePrefetched(folder, entries, segment, tag, wanted, false);
  if (!entries.includes(wanted)) return false;
  const path = join(folder, wanted);
  try {
    if (prefetchedSegmentHolds(path, segment, dataDirectory)) {
      moveInto(path, resolve(dataDirectory, destination));
      return true;
    }
  } catch {
    // Unreadable, or %p's folder refused the rename: the normal path fetches it.
  }
  unlinkQuietly(path);
  return false;
}

/**
 * Whether the file at `path` is the complete segment `segment` of the cluster whose data
 * directory is `dataDirectory`: its header's system identifier is pg_control's, its page address
 * is the one its name says, and it is exactly one segment long.
 */
export function prefetchedSegmentHolds(path: string, segment: string, dataDirectory: string): boolean {
  let header: ReturnType<typeof parseSegmentHeader>;
  let size: number;
  const handle = openSync(path, 'r');
  try {
    const stats = fstatSync(handle);
    if (!stats.isFile()) return false;
    size = stats.size;
    const bytes = Buffer.alloc(LONG_PAGE_HEADER_SIZE);
    if (readSync(handle, bytes, 0, bytes.length, 0) !== bytes.length) return false;
    header = parseSegmentHeader(bytes);
  } catch {
    return false;
  } finally {
    closeSync(handle);
  }
  if (header.segmentSize !== size) return false;
  const name = parseWalFileName(segment, header.segmentSize);
  if (name?.kind !== 'segment' || header.pageAddress !== name.segment! * BigInt(header.segmentSize)) return false;
  return header.systemIdentifier === controlFileSystemIdentifier(dataDirectory);
}

function controlFileSystemIdentifier(dataDirectory: string): string | undefined {
  try {
    const handle = openSync(join(dataDirectory, 'global', 'pg_control'), 'r');
    try {
      const bytes = Buffer.alloc(8);
      return readSync(handle, bytes, 0, 8, 0) === 8 ? systemIdentifierOfControlFile(bytes) : undefined;
    } finally {
      closeSync(handle);
    }
  } catch {
    return undefined;
  }
}

/** Renames `source` to `destination`; across filesystems, a copy fsynced before it takes the final name. */
function moveInto(source: string, destination: string): void {
  try {
    renameSync(source, destination);
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
  }
  const temp = join(dirname(destination), `.${basename(destination)}.${process.pid}-${randomBytes(6).toString('hex')}.pgrunbook-tmp`);
  try {
    copyFileSync(source, temp);
    const handle = openSync(temp, 'r+');
    try {
      fdatasyncSync(handle);
    } finally {
      closeSync(handle);
    }
    renameSync(temp, destination);
  } catch (error) {
    unlinkQuietly(temp);
    throw error;
  }
  unlinkQuietly(source);
}

/**
 * Housekeeping of the prefetch folder when PostgreSQL asks for `requested` (a segment): removes
 * what it will never ask for again, i.e. segments up to and including `requested` on its
 * timeline (replay only moves forward), segments of other timelines (after a switch replay never
 * returns to an older one), files of another archive or an edited config (another tag), and
 * temporary files whose writer is gone. Returns the segments left, which a fetch ahead need not fetch again.
 */
export function tidyPrefetchFolder(folder: string, requested: string, tag: string): Set<string> {
  let entries: string[];
  try {
    entries = readdirSync(folder);
  } catch {
    return new Set();
  }
  return removeStalePrefetched(folder, entries, requested, tag, undefined, true);
}

/** `keep`: the file the fast path hands over now; `temporaries`: also remove temporary files of dead writers. */
function removeStalePrefetched(folder: string, entries: string[], requested: string, tag: string, keep: string | undefined, temporaries: boolean): Set<string> {
  const timeline = requested.slice(0, 8);
  const left = new Set<string>();
  for (const entry of entries) {
    if (entry === keep) continue;
    const temp = TEMPORARY.exec(entry);
    if (temp) {
      // The calls of one recovery never overlap (PostgreSQL waits for each), so a temporary file
      // is either this process's own or left by a wal-fetch that was killed.
      if (temporaries && !processAlive(Number(temp[1]))) unlinkQuietly(join(folder, entry));
      continue;
    }
    const file = PREFETCHED.exec(entry);
    // Segment names of one timeline sort like their positions.
    if (file && file[2] === tag && file[1]!.startsWith(timeline) && file[1]! > requested) {
      left.add(file[1]!);
      continue;
    }
    unlinkQuietly(join(folder, entry));
  }
  return left;
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the prefetch folder: the archive ended (recovery is about to end or switch timeline), or the server was promoted. */
export function removePrefetchFolder(folder: string): void {
  rmSync(folder, { recursive: true, force: true });
}

/** Removes the prefetch folder of a data directory, if any: once its server left recovery, nothing in it is asked for again. */
export function removePrefetchedSegments(dataDirectory: string): void {
  removePrefetchFolder(join(dataDirectory, 'pg_wal', PREFETCH_DIRECTORY));
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already, or a folder (never ours)
  }
}
