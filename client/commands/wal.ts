import pg from 'pg';
import type { LoadedConfig } from '../../config/load.js';
import { chooseClusterId, clusterRepositoryId, type Config } from '../../config/schema.js';
import { pgClientConfig, resolveConnection } from '../../postgres/connection.js';
import { baseBackupsPrefix, isRestorePointName, restorePointKey } from '../../pitr/layout.js';
import { BaseBackupManifest, RestorePointRecord } from '../../pitr/manifest.js';
import { listArchivedWal, readArchiveInfo, reachabilityOf, timelineOfSegment, timelinePath, type ArchivedWalFile, type WalGap } from '../../pitr/wal-inventory.js';
import { DEFAULT_SEGMENT_SIZE, formatLsn, parseLsn, segmentFileName, segmentOf } from '../../pitr/wal-names.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { readAll, writeAll, type Repository } from '../../repository/types.js';
import { scrubSecrets } from '../../process/secrets.js';
import { formatBytes } from '../../report/units.js';
import type { CliValues } from '../cli.js';
import { EXIT, table, UsageError, type Output } from '../output.js';

// `pgrunbook wal verify | list | restore-point NAME`: the archive as an operator inspects it.
// None of them needs the Temporal server; verify and restore-point talk to the cluster's server.

export async function walCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, arg: string | undefined, values: CliValues): Promise<number> {
  const { config } = loaded;
  const cluster = chooseClusterId(config, values.cluster);
  const repository = new RepositoryRegistry(config).get(clusterRepositoryId(config, cluster));
  switch (sub) {
    case 'verify':
      return verifyCommand(config, cluster, repository, out);
    case 'list':
      return listCommand(cluster, repository, out);
    case 'restore-point':
      return restorePointCommand(config, cluster, repository, out, arg);
    default:
      throw new UsageError(`unknown subcommand "wal ${sub ?? ''}"`, 'pgrunbook wal verify|list|restore-point NAME [--cluster C]');
  }
}

interface TimelineSummary {
  timeline: number;
  segments: number;
  firstSegment: string | null;
  lastSegment: string | null;
  /** Stored bytes of everything of this timeline (segments, history, backup labels, partials). */
  bytes: number;
  history: boolean;
  backupLabels: number;
  partials: number;
}

async function listCommand(cluster: string, repository: Repository, out: Output): Promise<number> {
  const files = await listArchivedWal(repository, cluster);
  const timelines = new Map<number, TimelineSummary>();
  for (const file of files) {
    let t = timelines.get(file.timeline);
    if (!t) timelines.set(file.timeline, (t = { timeline: file.timeline, segments: 0, firstSegment: null, lastSegment: null, bytes: 0, history: false, backupLabels: 0, partials: 0 }));
    t.bytes += file.size;
    if (file.kind === 'segment') {
      t.segments++;
      t.firstSegment ??= file.name;
      t.lastSegment = file.name;
    } else if (file.kind === 'history') t.history = true;
    else if (file.kind === 'backup') t.backupLabels++;
    else t.partials++;
  }
  const summaries = [...timelines.values()];
  out.result({ cluster, repository: repository.location, timelines: summaries, files: files.length }, () =>
    summaries.length === 0
      ? `no wal archived for cluster "${cluster}" in ${repository.location}`
      : table(
          ['TIMELINE', 'FIRST', 'LAST', 'SEGMENTS', 'STORED', 'HISTORY', 'LABELS', 'PARTIAL'],
          summaries.map((t) => [String(t.timeline), t.firstSegment ?? '-', t.lastSegment ?? '-', String(t.segments), formatBytes(t.bytes), t.history ? 'yes' : '-', String(t.backupLabels), String(t.partials)]),
        ),
  );
  return EXIT.ok;
}

interface WalRange {
  timeline: number;
  /** archived; missing: lost from the archive; pending: not archived yet (after the server's last archived segment). */
  status: 'archived' | 'missing' | 'pending';
  from: string;
  to: string;
  count: number;
}

interface ServerPosition {
  timeline: number;
  lsn: string;
  /** The segment being written: not archivable yet. */
  currentSegment: string;
  lastArchived: string | null;
}

/** WAL-G's wal-verify: from the oldest base backup (or the first archived segment) to the server's current position, per timeline. */
async function verifyCommand(config: Config, cluster: string, repository: Repository, out: Output): Promise<number> {
  const [files, info, bases] = await Promise.all([listArchivedWal(repository, cluster), readArchiveInfo(repository, cluster), readBaseManifests(repository, cluster)]);
  const segmentSize = info?.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  const segments = files.filter((f) => f.kind === 'segment');
  const oldest = bases.filter((b) => b.status === 'verified').sort((a, b) => (a.startedAt < b.startedAt ? -1 : 1))[0];
  const firstArchived = segments[0];
  const server = await serverPosition(config, cluster).catch((error: Error) => ({ error: scrubSecrets(error.message.split('\n')[0] ?? '') }));

  let from: { timeline: number; startLsn: bigint; source: string };
  if (oldest) from = { timeline: oldest.timeline, startLsn: parseLsn(oldest.startLsn)!, source: `base backup ${oldest.id}` };
  else if (firstArchived) from = { timeline: firstArchived.timeline, startLsn: firstArchived.segment! * BigInt(segmentSize), source: 'first archived segment (no base backup)' };
  else {
    const result = { cluster, ok: false, reason: 'no wal is archived and there is no base backup', server };
    out.result(result, () => `cluster "${cluster}": no wal archived in ${repository.location}\nHINT: set archive_command to pgrunbook wal-push %p and check pg_stat_archiver`);
    return EXIT.failed;
  }
  const startSegment = segmentOf(from.startLsn, segmentSize);
  const toTimeline = 'error' in server ? undefined : server.timeline;
  const path = await timelinePath(repository, files, from, toTimeline);
  const onPath = (f: ArchivedWalFile): boolean => f.segment! >= startSegment && f.name === segmentFileName(timelineOfSegment(path, f.segment!, segmentSize), f.segment!, segmentSize);
  // Up to the segment before the one the server writes now, or (server unreachable) the last archived one.
  let endSegment: bigint | undefined;
  if (!('error' in server)) endSegment = segmentOf(parseLsn(server.lsn)!, segmentSize) - 1n;
  else endSegment = segments.filter(onPath).at(-1)?.segment ?? undefined;

  const reach = endSegment !== undefined && endSegment >= startSegment ? await reachabilityOf(repository, files, from, { segment: endSegment }, segmentSize, toTimeline) : undefined;
  const archived = new Set(segments.map((f) => f.name));
  const lastArchived = 'error' in server ? null : server.lastArchived;
  const ranges: WalRange[] = [];
  if (endSegment !== undefined) {
    for (let segment = startSegment; segment <= endSegment; segment++) {
      const timeline = timelineOfSegment(path, segment, segmentSize);
      const name = segmentFileName(timeline, segment, segmentSize);
      // Missing after the server's last archived segment: the archiver has not got there yet.
      const status: WalRange['status'] = archived.has(name) ? 'archived' : lastArchived !== null && name > lastArchived.slice(0, 24) ? 'pending' : 'missing';
      const last = ranges.at(-1);
      if (last && last.timeline === timeline && last.status === status) {
        last.to = name;
        last.count++;
      } else ranges.push({ timeline, status, from: name, to: name, count: 1 });
    }
  }
  const gaps: WalGap[] = ranges.filter((r) => r.status === 'missing').map((r) => ({ timeline: r.timeline, from: r.from, to: r.to, missing: r.count }));
  const pending = ranges.filter((r) => r.status === 'pending');
  const historyProblems = path.problems;
  const ok = gaps.length === 0 && historyProblems.length === 0;
  const result = {
    cluster,
    ok,
    from: { source: from.source, timeline: from.timeline, lsn: formatLsn(from.startLsn), segment: segmentFileName(from.timeline, startSegment, segmentSize) },
    to: endSegment === undefined ? null : { source: 'error' in server ? 'last archived segment' : 'server', segment: reach?.lastSegment ?? null },
    server,
    timelines: path.steps.map((s) => ({ timeline: s.timeline, switchLsn: s.switchLsn === null ? null : formatLsn(s.switchLsn), ranges: ranges.filter((r) => r.timeline === s.timeline) })),
    gaps,
    pending: pending.map((r) => ({ timeline: r.timeline, from: r.from, to: r.to, segments: r.count })),
    problems: historyProblems,
  };
  out.result(result, () => {
    const lines = [`cluster "${cluster}", ${repository.location}`, `from ${from.source}: ${result.from.segment} (${result.from.lsn}, timeline ${from.timeline})`];
    if ('error' in server) lines.push(`server unreachable (${server.error}): verified up to the last archived segment`);
    else lines.push(`to the server's current position ${server.lsn} on timeline ${server.timeline} (writing ${server.currentSegment}; last archived ${server.lastArchived ?? 'none'})`);
    for (const t of result.timelines) {
      lines.push(`timeline ${t.timeline}${t.switchLsn ? ` (ends at ${t.switchLsn})` : ''}:`);
      for (const r of t.ranges) lines.push(`  ${r.status.padEnd(8)} ${r.from}..${r.to}  ${r.count} segment${r.count === 1 ? '' : 's'}`);
      if (t.ranges.length === 0) lines.push('  (no segments in range)');
    }
    for (const problem of historyProblems) lines.push(`problem: ${problem}`);
    if (ok) lines.push(pending.length ? `OK, no gaps; ${pending.reduce((n, r) => n + r.count, 0)} segment(s) not archived yet (the archiver is behind)` : 'OK: no gaps');
    else if (gaps.length) lines.push(`GAP: ${gaps.map((g) => (g.missing === 1 ? g.from : `${g.from}..${g.to} (${g.missing})`)).join(', ')} missing from the archive\nHINT: recovery cannot pass a gap: take a new base backup now, and find out how the segments were lost (retention, a second cluster, manual deletion)`);
    else lines.push('the timeline history is incomplete\nHINT: archive the missing history files from the server\'s pg_wal');
    return lines.join('\n');
  });
  return ok ? EXIT.ok : EXIT.failed;
}

async function readBaseManifests(repository: Repository, cluster: string): Promise<BaseBackupManifest[]> {
  const manifests: BaseBackupManifest[] = [];
  for (const object of await repository.list(baseBackupsPrefix(cluster))) {
    if (!object.key.endsWith('/manifest.json')) continue;
    const parsed = BaseBackupManifest.safeParse(JSON.parse((await readAll(repository, object.key)).toString('utf8')));
    if (parsed.success) manifests.push(parsed.data);
  }
  return manifests;
}

async function connect(config: Config, cluster: string): Promise<pg.Client> {
  const databaseId = config.clusters[cluster]!.database;
  const client = new pg.Client(pgClientConfig(resolveConnection(databaseId, config.databases[databaseId]!)));
  await client.connect();
  return client;
}

async function serverPosition(config: Config, cluster: string): Promise<ServerPosition> {
  const client = await connect(config, cluster);
  try {
    const { rows } = await client.query<{ in_recovery: boolean }>('SELECT pg_is_in_recovery() AS in_recovery');
    if (rows[0]!.in_recovery) throw new Error('the server is in recovery (a standby): its current wal position is not being archived by it');
    const position = await client.query<{ walfile: string; lsn: string; last_archived: string | null }>(
      'SELECT pg_walfile_name(pg_current_wal_lsn()) AS walfile, pg_current_wal_lsn()::text AS lsn, (SELECT last_archived_wal FROM pg_stat_archiver) AS last_archived',
    );
    const row = position.rows[0]!;
    // The timeline WAL is written on now: pg_walfile_name's first eight digits (the checkpoint's
    // timeline lags behind a promotion until the next checkpoint).
    return { timeline: parseInt(row.walfile.slice(0, 8), 16), lsn: row.lsn, currentSegment: row.walfile, lastArchived: row.last_archived };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function restorePointCommand(config: Config, cluster: string, repository: Repository, out: Output, name: string | undefined): Promise<number> {
  if (!name || !isRestorePointName(name)) {
    throw new UsageError(name ? `invalid restore point name "${name}": expected letters, digits, ".", "_" and "-", starting with a letter or digit, at most 63 characters` : 'expected a restore point NAME', 'pgrunbook wal restore-point before-migration-42');
  }
  const key = restorePointKey(cluster, name);
  if (await repository.stat(key)) {
    const existing = RestorePointRecord.safeParse(JSON.parse((await readAll(repository, key)).toString('utf8')));
    throw new UsageError(`restore point "${name}" already exists for cluster "${cluster}"${existing.success ? ` (${existing.data.lsn}, created ${existing.data.createdAt})` : ''}`, 'choose another name: a recovery to a name must mean one position');
  }
  const client = await connect(config, cluster);
  let record: RestorePointRecord;
  let segment: string;
  try {
    const created = await client.query<{ lsn: string; walfile: string }>('SELECT lsn::text AS lsn, pg_walfile_name(lsn) AS walfile FROM pg_create_restore_point($1) AS lsn', [name]);
    const row = created.rows[0]!;
    segment = row.walfile;
    record = { name, lsn: row.lsn, timeline: parseInt(row.walfile.slice(0, 8), 16), createdAt: new Date().toISOString() };
    await writeAll(repository, key, `${JSON.stringify(RestorePointRecord.parse(record), null, 2)}\n`);
    // Close the segment holding the restore point so it is archived now, not at the next
    // archive_timeout: a recovery to the name is possible as soon as the archiver has it.
    await client.query('SELECT pg_switch_wal()');
  } finally {
    await client.end().catch(() => undefined);
  }
  out.result({ cluster, ...record, segment, key }, () => `restore point "${name}" at ${record.lsn} on timeline ${record.timeline} (segment ${segment}, switched for archiving); recorded in ${key}`);
  return EXIT.ok;
}
