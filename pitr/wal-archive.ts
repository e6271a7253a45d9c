import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { constants as zlib, createGunzip, createZstdDecompress, gzip, zstdCompress } from 'node:zlib';
import type { RepositoryKeys } from '../encryption/keys.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import { writeAll, type Repository } from '../repository/types.js';
import { archiveInfoKey, type WalCompression } from './layout.js';
import type { ArchiveInfo } from './manifest.js';
import { parseStoredWalName, readArchiveInfo, walFolderKey, walObjectKey, type StoredWalName } from './wal-inventory.js';
import { parseSegmentHeader, parseWalFileName, segmentFileName, systemIdentifierOfControlFile, type SegmentHeader, type WalFileName } from './wal-names.js';
import { prefetchedFileName, removePrefetchFolder, tidyPrefetchFolder } from './wal-prefetch.js';
import { fileIdentity, markerHolds, readMarker, removeMarker, removeStaleMarkers, segmentsReadyAfter, writeMarker, type ArchiveTarget, type FileIdentity } from './wal-spool.js';

// wal-push and wal-fetch: one WAL file into or out of the archive, as PostgreSQL's
// archive_command and restore_command call them. Stored objects are plain zstd/gzip frames,
// age-encrypted when the repository has recipients, so the stock CLIs read them:
//   age -d -i key.txt OBJECT | zstd -d > FILE
// The sha256 of the original file is in the object's name: a re-push compares names, wal-fetch
// checks what it decompressed against it.

const gzipAsync = promisify(gzip);
const DECOMPRESS_CHUNK = 1 << 20;
const zstdAsync = promisify(zstdCompress);

export interface WalCompressionSetting {
  algorithm: WalCompression;
  /** Level; null: the algorithm's default. */
  level: number | null;
}

/** clusters.<id>.wal.compression ("zstd:3", "gzip:6", "none"; validated by the config schema). */
export function parseWalCompression(text: string): WalCompressionSetting {
  const [algorithm, level] = text.split(':') as [WalCompression, string | undefined];
  return { algorithm, level: level === undefined ? null : Number(level) };
}

async function compress(content: Buffer, setting: WalCompressionSetting): Promise<Buffer> {
  if (setting.algorithm === 'zstd') {
    return zstdAsync(content, { params: { [zlib.ZSTD_c_compressionLevel]: setting.level ?? 3, [zlib.ZSTD_c_checksumFlag]: 1 }, pledgedSrcSize: content.length });
  }
  if (setting.algorithm === 'gzip') return gzipAsync(content, { level: setting.level ?? 6 });
  return content;
}

export type PushOutcome = 'archived' | 'already-archived';

export interface PushResult {
  outcome: PushOutcome;
  name: string;
  key: string;
  sha256: string;
  /** Bytes of the original file. */
  size: number;
  /** Bytes of the stored object. */
  storedSize: number;
  /** The file as it was when read (size, mtime, ctime, inode): what a push-ahead marker records. */
  file: FileIdentity;
}

export interface PushOptions {
  repository: Repository;
  cluster: string;
  /** The file to archive (archive_command's %p, made absolute or relative to the cwd). */
  file: string;
  compression: WalCompressionSetting;
  /** Recipients to encrypt to; null: stored unencrypted. */
  encryptTo: string[] | null;
  /** The server's data directory (archive_command runs in it): its pg_control names the cluster. */
  dataDirectory?: string;
  /** pitr/<cluster>/archive.json when the caller has read it already (a batch of pushes reads it once). */
  archiveInfo?: ArchiveInfo;
  signal?: AbortSignal;
}

/** A refusal wal-push and wal-fetch report as one line and a HINT. */
export class WalArchiveError extends Error {
  override readonly name = 'WalArchiveError';
}

/**
 * Archives one WAL file. Idempotent: a file already archived with the same sha256 is not written
 * again; one archived with other content is refused (two clusters archiving into one place).
 * A segment's header must name the cluster of pitr/<cluster>/archive.json, written by the first push.
 */
export async function pushWalFile(options: PushOptions): Promise<PushResult> {
  const { repository, cluster } = options;
  const name = basename(options.file);
  const parsedName = parseWalFileName(name);
  if (!parsedName) throw new WalArchiveError(`"${name}" is not a wal file name (expected a segment, TTTTTTTT.history, <segment>.XXXXXXXX.backup or <segment>.partial)\nHINT: archive_command must pass %p: pgrunbook wal-push %p`);
  // The identity is taken before the bytes are read: if the file changed in between, a marker
  // recording it never matches the changed file.
  const handle = await open(options.file, 'r');
  let content: Buffer;
  let identity: FileIdentity;
  try {
    identity = fileIdentity(await handle.stat({ bigint: true }));
    content = await handle.readFile();
  } finally {
    await handle.close();
  }
  // Compression runs on libuv's thread pool while the hash runs here.
  const encrypt = options.encryptTo !== null && parsedName.kind !== 'history';
  const compressed = compress(content, options.compression);
  compressed.catch(() => undefined);
  const sha256 = createHash('sha256').update(content).digest('hex');

  const header = parsedName.kind === 'segment' || parsedName.kind === 'partial' ? checkSegment(name, content) : undefined;
  const file = header ? parseWalFileName(name, header.segmentSize)! : parsedName;
  await checkArchiveInfo(repository, cluster, name, header, options.dataDirectory, options.archiveInfo);

  const existing = await archivedCopies(repository, cluster, file);
  const key = walObjectKey(cluster, file, sha256, options.compression.algorithm, encrypt);
  const same = existing.find((copy) => copy.sha256 === sha256);
  if (same) return { outcome: 'already-archived', name, key: same.key, sha256, size: content.length, storedSize: same.size, file: identity };
  const other = existing[0];
  if (other) {
    throw new WalArchiveError(
      `${name} is already archived with different content (archived sha256 ${other.sha256}, this file's sha256 ${sha256}); refusing to overwrite it\nHINT: two clusters archive into one place (give each its own cluster id), or a cluster was restored without a new timeline; investigate before removing ${other.key}`,
    );
  }
  let body: Readable = Readable.from([await compressed]);
  if (encrypt) {
    const { encryptStream } = await import('../encryption/age.js');
    body = await encryptStream(body, options.encryptTo!);
  }
  const { size: storedSize } = await repository.write(key, body, { signal: options.signal });
  return { outcome: 'archived', name, key, sha256, size: content.length, storedSize, file: identity };
}

export interface PushWithAheadOptions extends PushOptions {
  /** clusters.<id>.wal.pushAhead: how many further `.ready` segments to archive with this one. */
  pushAhead: number;
  /** What this invocation targets (config file, --cluster), recorded in each marker; undefined: no markers. */
  target: ArchiveTarget | undefined;
  /** Segments archived at once; default: the number of CPUs, at least 2 (hashing here overlaps compressing on the thread pool). */
  concurrency?: number;
  /** A segment pushed ahead could not be archived: reported, never fatal (PostgreSQL will ask for it). */
  onAheadFailure?: (name: string, error: unknown) => void;
}

export interface PushWithAheadResult {
  requested: PushResult;
  /** Segments archived ahead (a marker each). */
  ahead: PushResult[];
}

/**
 * wal-push with push-ahead (pgBackRest's archive-async idea, without a spool or a daemon):
 * archives `file` and, in parallel, up to `pushAhead` further segments PostgreSQL has marked ready,
 * leaving a marker for each once it is durably stored (pitr/wal-spool.ts). PostgreSQL's next calls
 * then find their segment done and return in milliseconds. Only the requested segment's failure
 * rejects; a segment pushed ahead that fails is reported and left for PostgreSQL to ask again.
 */
export async function pushWalFileWithAhead(options: PushWithAheadOptions): Promise<PushWithAheadResult> {
  const walDirectory = dirname(options.file);
  const candidates = options.pushAhead > 0 && options.target ? segmentsReadyAfter(options.file, options.pushAhead) : [];
  // A segment an earlier call already pushed ahead (and whose marker still holds) is not read again.
  const ahead = candidates.filter((name) => {
    const marker = readMarker(join(walDirectory, name));
    return !(marker && markerHolds(marker, join(walDirectory, name), options.target));
  });
  try {
    if (ahead.length === 0) return { requested: await pushWalFile(options), ahead: [] };
    // archive.json is read once for the batch; the very first push of an archive writes it alone.
    let archiveInfo = options.archiveInfo ?? (await readArchiveInfo(options.repository, options.cluster));
    let requested: PushResult | undefined;
    if (!archiveInfo) {
      requested = await pushWalFile(options);
      archiveInfo = await readArchiveInfo(options.repository, options.cluster);
    }
    const pushOne = (file: string): Promise<PushResult> => pushWalFile({ ...options, file, archiveInfo });
    const pushedAhead: PushResult[] = [];
    const pushAheadOne = async (name: string): Promise<void> => {
      const file = join(walDirectory, name);
      try {
        const result = await pushOne(file);
        // Only now, with the object durable in the repository, may a marker say so.
        const localObject = (await options.repository.localFile?.(result.key)) ?? null;
        writeMarker(file, {
          formatVersion: 1,
          name,
          sha256: result.sha256,
          file: result.file,
          target: options.target!,
          cluster: options.cluster,
          repository: options.repository.id,
          key: result.key,
          storedSize: result.storedSize,
          localObject,
          pushedAt: new Date().toISOString(),
        });
        pushedAhead.push(result);
      } catch (error) {
        options.onAheadFailure?.(name, error);
      }
    };
    const tasks: (() => Promise<unknown>)[] = [];
    let requestedError: unknown;
    if (!requested) {
      tasks.push(() =>
        pushOne(options.file).then(
          (result) => (requested = result),
          (error: unknown) => (requestedError = error ?? new Error('wal-push failed')),
        ),
      );
    }
    for (const name of ahead) tasks.push(() => pushAheadOne(name));
    await runBounded(tasks, options.concurrency ?? Math.max(2, availableParallelism()));
    if (requestedError !== undefined) throw requestedError;
    return { requested: requested!, ahead: pushedAhead };
  } finally {
    // The requested segment's own marker (stale, or consumed already) and markers of segments
    // PostgreSQL no longer waits for would never be read again.
    removeMarker(options.file);
    removeStaleMarkers(walDirectory, new Set(ahead));
  }
}

/** Runs `tasks` in order, at most `limit` at a time; each task handles its own errors. */
async function runBounded(tasks: (() => Promise<unknown>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) await tasks[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

/** The segment's header, checked against its name: a file with another name's content is refused. */
function checkSegment(name: string, content: Buffer): SegmentHeader {
  let header: SegmentHeader;
  try {
    header = parseSegmentHeader(content);
  } catch (error) {
    throw new WalArchiveError(`${name}: ${(error as Error).message}\nHINT: archive_command must pass %p, the segment PostgreSQL asks to archive`);
  }
  if (content.length !== header.segmentSize) {
    throw new WalArchiveError(`${name} is ${content.length} bytes, but its header says segments are ${header.segmentSize} bytes\nHINT: the file was truncated or modified; PostgreSQL archives complete segments only`);
  }
  const expected = parseWalFileName(name, header.segmentSize)!;
  const startsAt = BigInt(header.segmentSize) * expected.segment!;
  if (header.pageAddress !== startsAt) {
    throw new WalArchiveError(`${name} holds the wal of ${segmentFileName(expected.timeline, header.pageAddress / BigInt(header.segmentSize), header.segmentSize)} (page address ${header.pageAddress.toString(16)}), not its own\nHINT: the file was renamed or copied over; archive only what PostgreSQL hands to archive_command`);
  }
  return header;
}

/**
 * Every file of one archive comes from one cluster: the first push records it in archive.json,
 * later pushes compare. Segments carry the system identifier in their header; other files are
 * compared through the data directory's pg_control (archive_command runs in the data directory).
 */
async function checkArchiveInfo(repository: Repository, cluster: string, name: string, header: SegmentHeader | undefined, dataDirectory: string | undefined, known: ArchiveInfo | undefined): Promise<void> {
  const systemIdentifier = header?.systemIdentifier ?? (await controlFileSystemIdentifier(dataDirectory));
  const info = known ?? (await readArchiveInfo(repository, cluster));
  if (!info) {
    if (!systemIdentifier) return; // a history file pushed first, outside a data directory: the next segment records it
    const created: ArchiveInfo = {
      formatVersion: 1,
      cluster,
      systemIdentifier,
      pgMajor: header?.pgMajor ?? null,
      segmentSize: header?.segmentSize ?? 16 * 1024 * 1024,
      createdAt: new Date().toISOString(),
    };
    await writeAll(repository, archiveInfoKey(cluster), `${JSON.stringify(created, null, 2)}\n`);
    return;
  }
  if (systemIdentifier && systemIdentifier !== info.systemIdentifier) {
    throw new WalArchiveError(
      `${name} belongs to the cluster with system identifier ${systemIdentifier}, but this archive (cluster "${cluster}") holds wal of system identifier ${info.systemIdentifier}\nHINT: two clusters archive into one place: give each its own --cluster id; after a pg_upgrade or initdb, start a new archive (a new cluster id)`,
    );
  }
  if (header && header.segmentSize !== info.segmentSize) {
    throw new WalArchiveError(`${name} is a ${header.segmentSize}-byte segment, but this archive holds ${info.segmentSize}-byte segments\nHINT: the cluster was re-initialised with another --wal-segsize; start a new archive (a new cluster id)`);
  }
}

async function controlFileSystemIdentifier(dataDirectory: string | undefined): Promise<string | undefined> {
  if (!dataDirectory) return undefined;
  try {
    return systemIdentifierOfControlFile(await readFile(join(dataDirectory, 'global', 'pg_control')));
  } catch {
    return undefined;
  }
}

/** The archived copies of one WAL file (normally none or one). */
async function archivedCopies(repository: Repository, cluster: string, file: WalFileName): Promise<(StoredWalName & { key: string; size: number })[]> {
  const prefix = `${walFolderKey(cluster, file)}${file.name}-`;
  const copies: (StoredWalName & { key: string; size: number })[] = [];
  for (const object of await repository.list(prefix)) {
    const stored = parseStoredWalName(object.key.slice(object.key.lastIndexOf('/') + 1));
    if (stored && stored.name === file.name) copies.push({ ...stored, key: object.key, size: object.size });
  }
  return copies;
}

export interface FetchOptions {
  repository: Repository;
  cluster: string;
  /** The WAL file's name (restore_command's %f). */
  name: string;
  /** Where to put it (restore_command's %p); written atomically. */
  destination: string;
  keys: RepositoryKeys;
  /** fdatasync the file before it takes its name (a file kept for later, not one PostgreSQL reads at once). */
  sync?: boolean;
  signal?: AbortSignal;
}

/**
 * Fetches one archived WAL file to `destination`: read, decrypt, decompress into a temporary file
 * beside it, check the sha256 in its name, rename. 'missing' when the archive does not hold it
 * (PostgreSQL asks for files that do not exist, e.g. the next timeline's history). Nothing is
 * left at `destination` unless the whole file checked out.
 */
export async function fetchWalFile(options: FetchOptions): Promise<'fetched' | 'missing'> {
  const file = parseWalFileName(options.name);
  if (!file) throw new WalArchiveError(`"${options.name}" is not a wal file name\nHINT: restore_command must pass %f and %p: pgrunbook wal-fetch %f %p`);
  const copies = await archivedCopies(options.repository, options.cluster, file);
  const copy = copies[0];
  if (!copy) return 'missing';
  if (copies.some((c) => c.sha256 !== copy.sha256)) {
    throw new WalArchiveError(`${file.name} is archived twice with different content (${copies.map((c) => c.key).join(', ')})\nHINT: two clusters archived into one place; keep the copy of the cluster being recovered and remove the other`);
  }
  // The writer's pid in the name: housekeeping of the prefetch folder removes those of dead writers only.
  const temp = join(dirname(options.destination), `.${basename(options.destination)}.${process.pid}-${randomBytes(6).toString('hex')}.pgrunbook-tmp`);
  try {
    const hash = new ChecksumStream();
    const stages: NodeJS.ReadWriteStream[] = [];
    if (copy.encrypted) {
      if (!options.keys.identities) {
        throw new WalArchiveError(`${file.name} is encrypted and this process holds no identity for repository "${options.keys.repository}"\nHINT: set ${options.keys.identityField} (readable by the server's user) in the config restore_command uses`);
      }
      const { ageDecrypter } = await import('../encryption/age.js');
      stages.push(ageDecrypter(options.keys.identities));
    }
    // 1 MiB output chunks too: with the default 16 KiB, a segment takes a thousand round trips.
    if (copy.compression === 'zstd') stages.push(createZstdDecompress({ chunkSize: DECOMPRESS_CHUNK }));
    else if (copy.compression === 'gzip') stages.push(createGunzip({ chunkSize: DECOMPRESS_CHUNK }));
    // A stored object that is a local file is read in 1 MiB chunks: each chunk is a round trip
    // of the decompressor to the thread pool, and the default 64 KiB makes that most of the cost.
    const localObject = await options.repository.localFile?.(copy.key);
    const source = localObject ? createReadStream(localObject, { highWaterMark: DECOMPRESS_CHUNK }) : await options.repository.read(copy.key, { signal: options.signal });
    try {
      await pipeline([source, ...stages, hash, createWriteStream(temp, { flags: 'wx', mode: 0o600 })], { signal: options.signal });
    } catch (error) {
      throw new WalArchiveError(`${file.name} could not be read back from ${copy.key}: ${(error as Error).message.split('\n')[0]}\nHINT: the stored object is damaged, or was encrypted to another key; copy it again from a replica of the repository if you have one`);
    }
    const sha256 = hash.digest();
    if (sha256 !== copy.sha256) {
      throw new WalArchiveError(`${file.name} does not match its checksum: sha256 ${sha256} after decompression, ${copy.sha256} when archived\nHINT: the stored object ${copy.key} is corrupt; copy it again from a replica of the repository if you have one`);
    }
    if (options.sync) {
      const handle = await open(temp, 'r+');
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
    await rename(temp, options.destination);
    return 'fetched';
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

export interface FetchWithAheadOptions extends FetchOptions {
  /** clusters.<id>.wal.fetchAhead: how many following segments of the timeline to fetch with this one. */
  fetchAhead: number;
  /** The prefetch folder (pitr/wal-prefetch.ts) and the tag naming this archive; undefined: nothing is fetched ahead, nothing tidied. */
  prefetch: { folder: string; tag: string } | undefined;
  /** Files fetched at once; default: the number of CPUs, at least 2 (hashing here overlaps decompressing on the thread pool). */
  concurrency?: number;
  /** A segment fetched ahead failed its check or could not be read: reported, never fatal (PostgreSQL asks for it, and that call fails). */
  onAheadFailure?: (name: string, error: unknown) => void;
}

export interface FetchWithAheadResult {
  outcome: 'fetched' | 'missing';
  /** Segments stored in the prefetch folder by this call. */
  ahead: string[];
}

/**
 * wal-fetch with fetch-ahead (pgBackRest's archive-get queue, without a daemon): fetches `name`
 * and, in parallel, the next `fetchAhead` segments of its timeline into the prefetch folder, each
 * checked as fetchWalFile checks it and fsynced before it takes its final name
 * (pitr/wal-prefetch.ts); PostgreSQL's next calls then take them from there. Resolves only when
 * every fetch has settled: no fetch outlives the call, nothing is left half-written. Only the
 * requested file decides the outcome: a segment fetched ahead that is missing (the end of the
 * archive) is not stored, one that fails is reported and left for PostgreSQL to ask for. When the
 * requested file is missing, PostgreSQL is about to end recovery or switch timelines: the whole
 * prefetch folder goes.
 */
export async function fetchWalFileWithAhead(options: FetchWithAheadOptions): Promise<FetchWithAheadResult> {
  const { prefetch } = options;
  if (!prefetch) return { outcome: await fetchWalFile(options), ahead: [] };
  const requested = parseWalFileName(options.name);
  // History files (and backup labels, partial segments) are asked for once, and never fetched ahead.
  const waiting = requested?.kind === 'segment' ? tidyPrefetchFolder(prefetch.folder, requested.name, prefetch.tag) : new Set<string>();
  const info = requested?.kind === 'segment' && options.fetchAhead > 0 ? await readArchiveInfo(options.repository, options.cluster) : undefined;
  const ahead: string[] = [];
  if (info && requested) {
    const file = parseWalFileName(requested.name, info.segmentSize)!;
    for (let i = 1n; i <= BigInt(options.fetchAhead); i++) {
      const name = segmentFileName(file.timeline, file.segment! + i, info.segmentSize);
      if (!waiting.has(name)) ahead.push(name);
    }
  }
  if (ahead.length === 0) {
    const outcome = await fetchWalFile(options);
    if (outcome === 'missing') removePrefetchFolder(prefetch.folder);
    return { outcome, ahead: [] };
  }

  await mkdir(prefetch.folder, { recursive: true, mode: 0o700 });
  // Aborted when the requested file is missing or fails: what is fetched ahead would never be used.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  let outcome: 'fetched' | 'missing' | undefined;
  let requestedError: unknown;
  /** Position of the first segment ahead found missing: the archive ends there, later ones are not tried. */
  let end = Infinity;
  const stored: string[] = [];
  const tasks: (() => Promise<unknown>)[] = [
    () =>
      fetchWalFile({ ...options, signal }).then(
        (result) => {
          outcome = result;
          if (result === 'missing') stop.abort();
        },
        (error: unknown) => {
          requestedError = error ?? new Error('wal-fetch failed');
          stop.abort();
        },
      ),
  ];
  ahead.forEach((name, index) =>
    tasks.push(async () => {
      if (index > end || stop.signal.aborted) return;
      try {
        const result = await fetchWalFile({ ...options, name, destination: join(prefetch.folder, prefetchedFileName(name, prefetch.tag)), sync: true, signal });
        if (result === 'fetched') stored.push(name);
        else end = Math.min(end, index);
      } catch (error) {
        if (!stop.signal.aborted) options.onAheadFailure?.(name, error);
      }
    }),
  );
  await runBounded(tasks, options.concurrency ?? Math.max(2, availableParallelism()));
  if (requestedError !== undefined) throw requestedError;
  if (outcome === 'missing') removePrefetchFolder(prefetch.folder);
  return { outcome: outcome!, ahead: stored.sort() };
}
