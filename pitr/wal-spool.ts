import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, type BigIntStats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { configPath } from '../config/path.js';

// Push-ahead markers (clusters.<id>.wal.pushAhead): a wal-push that archived, besides the segment
// PostgreSQL asked for, further completed segments (pg_wal/archive_status/*.ready) leaves a marker
// for each in pg_wal/.pgrunbook-pushed/<name>. When PostgreSQL then asks for that segment, wal-push
// acknowledges it from the marker in a few milliseconds, before loading the config, zod or yaml.
//
// This module is that fast path: node built-ins only, nothing else may be imported here.
//
// Why pg_wal/.pgrunbook-pushed: PostgreSQL's server user can write there (archive_command runs in
// the data directory), the server ignores it (it only touches names that parse as WAL files and
// archive_status/), and pg_basebackup never recurses into pg_wal (basebackup.c sends pg_wal and
// pg_wal/archive_status as empty directories), so markers never travel into a base backup.
//
// A marker is a cache of "this exact file is in that archive", never a source of truth:
// - it is written only after the repository write was durable (local: fsync + rename; S3: the
//   PUT or multipart completion returned);
// - it names the file by size, mtime, ctime and inode: a recycled, rewritten or copied segment
//   (pg_rewind, a file-level copy of the data directory) never matches;
// - it names the archive by the config file (path, size, mtime, ctime, inode) and the --cluster
//   argument: another config or another cluster id ignores it;
// - for a repository on a local filesystem, the stored object (whose name carries the segment's
//   sha256) must still exist with the size written; for S3 the completed PUT is trusted (a HEAD
//   would need the SDK, which is the start-up cost this avoids);
// - anything that does not match is deleted and the normal, idempotent path runs.

export const PUSHED_DIRECTORY = '.pgrunbook-pushed';
const SEGMENT_NAME = /^[0-9A-F]{24}$/;

export interface FileIdentity {
  size: number;
  /** Nanoseconds, as decimal strings: a bigint survives JSON that way. */
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
}

export interface PushedMarker {
  formatVersion: 1;
  /** The segment's file name. */
  name: string;
  /** sha256 of the segment's bytes (also in the stored object's key). */
  sha256: string;
  /** The file in pg_wal when it was read. */
  file: FileIdentity;
  /** What wal-push was pointed at: the config file and the --cluster argument as given. */
  target: ArchiveTarget;
  /** The archive it went to. */
  cluster: string;
  repository: string;
  key: string;
  storedSize: number;
  /** The stored object's path when the repository is a local filesystem: checked by the fast path. */
  localObject: string | null;
  pushedAt: string;
}

export interface ArchiveTarget {
  config: string;
  configFile: FileIdentity;
  /** --cluster as given; null: chosen by the config (its only cluster). */
  clusterArgument: string | null;
}

export function fileIdentity(stats: BigIntStats): FileIdentity {
  return { size: Number(stats.size), mtimeNs: stats.mtimeNs.toString(), ctimeNs: stats.ctimeNs.toString(), ino: stats.ino.toString() };
}

function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}


/** The archive a wal-push invocation targets, identified without reading the config; undefined when the config file cannot be stat'ed. */
export function archiveTarget(options: { config?: string; cluster?: string }, env: NodeJS.ProcessEnv): ArchiveTarget | undefined {
  const config = configPath(options.config, env);
  try {
    return { config, configFile: fileIdentity(statSync(config, { bigint: true })), clusterArgument: options.cluster ?? null };
  } catch {
    return undefined;
  }
}

export function markerPath(walFile: string): string {
  return join(dirname(walFile), PUSHED_DIRECTORY, basename(walFile));
}

/**
 * The fast path of `wal-push %p`: true when a marker proves this exact file is already in the
 * archive this invocation targets. The marker is consumed either way; false sends the caller down
 * the normal path. Synchronous and built-ins only: it runs before anything else is loaded.
 */
export function acknowledgePushedSegment(args: string[], env: NodeJS.ProcessEnv): boolean {
  let walFile: string;
  let options: { config?: string; cluster?: string };
  try {
    const parsed = parseArgs({ args, allowPositionals: true, strict: true, options: { cluster: { type: 'string' }, config: { type: 'string' } } });
    if (parsed.positionals.length !== 1) return false;
    walFile = parsed.positionals[0]!;
    options = parsed.values;
  } catch {
    return false; // the normal path reports bad usage
  }
  if (!SEGMENT_NAME.test(basename(walFile))) return false;
  const path = markerPath(walFile);
  let marker: PushedMarker;
  try {
    marker = JSON.parse(readFileSync(path, 'utf8')) as PushedMarker;
  } catch {
    return false; // no marker (the common case), or an unreadable one the normal path replaces
  }
  const valid = markerHolds(marker, walFile, archiveTarget(options, env));
  try {
    unlinkSync(path);
  } catch {
    // Already consumed, or pg_wal is read-only to this user: harmless either way.
  }
  return valid;
}

/** Whether `marker` still proves that `walFile` is archived where `target` points. */
export function markerHolds(marker: PushedMarker, walFile: string, target: ArchiveTarget | undefined): boolean {
  if (marker.formatVersion !== 1 || marker.name !== basename(walFile) || !target) return false;
  if (marker.target.config !== target.config || marker.target.clusterArgument !== target.clusterArgument || !sameIdentity(marker.target.configFile, target.configFile)) return false;
  try {
    if (!sameIdentity(marker.file, fileIdentity(statSync(walFile, { bigint: true })))) return false;
    if (marker.localObject !== null) {
      const stored = statSync(marker.localObject);
      if (!stored.isFile() || stored.size !== marker.storedSize) return false;
    }
  } catch {
    return false;
  }
  return true;
}

/** Writes a marker atomically (temp file + rename). Call only once the repository write is durable. */
export function writeMarker(walFile: string, marker: PushedMarker): void {
  const directory = join(dirname(walFile), PUSHED_DIRECTORY);
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  const temp = join(directory, `.${marker.name}.${randomBytes(6).toString('hex')}.tmp`);
  writeFileSync(temp, `${JSON.stringify(marker)}\n`, { mode: 0o600 });
  renameSync(temp, join(directory, marker.name));
}

/** Deletes the marker of `walFile`, if any. */
export function removeMarker(walFile: string): void {
  try {
    unlinkSync(markerPath(walFile));
  } catch {
    // none
  }
}

/** The marker of a segment beside `walFile`, if one exists and parses. */
export function readMarker(walFile: string): PushedMarker | undefined {
  try {
    return JSON.parse(readFileSync(markerPath(walFile), 'utf8')) as PushedMarker;
  } catch {
    return undefined;
  }
}

/**
 * The completed segments PostgreSQL will ask to archive after `walFile`: the `.ready` ones in
 * pg_wal/archive_status, in the order the archiver takes them (oldest name first, any timeline),
 * at most `limit`. Only plain segments: history, backup-label and .partial files are rare and tiny.
 * Empty when `walFile` is not in a pg_wal with an archive_status folder (a manual push of a copy).
 */
export function segmentsReadyAfter(walFile: string, limit: number): string[] {
  const status = readyNames(dirname(walFile));
  if (!status) return [];
  const requested = basename(walFile);
  return status.filter((name) => name !== requested && SEGMENT_NAME.test(name)).sort().slice(0, limit);
}

function readyNames(walDirectory: string): string[] | undefined {
  try {
    return readdirSync(join(walDirectory, 'archive_status'))
      .filter((entry) => entry.endsWith('.ready'))
      .map((entry) => entry.slice(0, -'.ready'.length));
  } catch {
    return undefined;
  }
}

/**
 * Removes markers PostgreSQL will never consume: those of segments no longer waiting to be
 * archived (no .ready), and leftovers of interrupted marker writes. `keep`: names being written now.
 */
export function removeStaleMarkers(walDirectory: string, keep: Set<string>): void {
  let markers: string[];
  try {
    markers = readdirSync(join(walDirectory, PUSHED_DIRECTORY));
  } catch {
    return;
  }
  if (markers.length === 0) return;
  const ready = new Set(readyNames(walDirectory) ?? []);
  for (const name of markers) {
    if (keep.has(name) || ready.has(name)) continue;
    try {
      unlinkSync(join(walDirectory, PUSHED_DIRECTORY, name));
    } catch {
      // gone already
    }
  }
}
