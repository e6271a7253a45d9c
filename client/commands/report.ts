import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { LoadedConfig } from '../../config/load.js';
import { defaultRepositoryId } from '../../config/schema.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { listDrillReports } from '../../repository/reports.js';
import { collectReport } from '../../report/collect.js';
import { renderReport } from '../../report/html.js';
import { formatDuration, formatTimestamp } from '../../report/units.js';
import { EXIT, table, UsageError, type Output } from '../output.js';

const REPORT_USAGE = 'pgrunbook report --out DIR [--database ID]';
const DRILLS_USAGE = 'pgrunbook drills list --database ID [--limit N] [--repository R]';

/** `report --out DIR`: writes DIR/index.html, a static report that needs no server to view. */
export async function reportCommand(loaded: LoadedConfig, out: Output, flags: { out?: string; database?: string }): Promise<number> {
  if (!flags.out) throw new UsageError('--out is required', REPORT_USAGE);
  const databases = flags.database ? [knownDatabase(loaded, flags.database)] : undefined;
  const data = await collectReport(loaded.config, { databases });
  const html = renderReport(data);

  // Written to a temporary name and renamed: a browser or a web server never sees half a report.
  const dir = resolve(flags.out);
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'index.html');
  const temporary = join(dir, `.index.html.${process.pid}.tmp`);
  try {
    await writeFile(temporary, html, 'utf8');
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }

  const summary = data.databases.map((db) => ({
    database: db.database,
    repository: db.repository.id,
    backups: db.backups.length,
    drills: db.drills.length,
    restores: db.restores.length,
    problems: db.problems,
  }));
  // An unreadable repository does not stop the report (its section says why), but it is said here too.
  for (const db of summary) for (const problem of db.problems) if (!out.json) process.stderr.write(`warning: ${db.database}: ${problem}\n`);
  out.result({ ok: true, path, generatedAt: data.generatedAt, databases: summary }, () =>
    [
      `wrote ${path}`,
      ...summary.map((db) => `  ${db.database}: ${db.backups} backups, ${db.drills} drills, ${db.restores} restores${db.problems.length ? ' (repository unreadable, see the report)' : ''}`),
    ].join('\n'),
  );
  return EXIT.ok;
}

/** `drills list --database ID`: past drills, newest first, with their result, RTO and RPO. */
export async function drillsListCommand(loaded: LoadedConfig, out: Output, flags: { database?: string; limit?: string; repository?: string }): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', DRILLS_USAGE);
  const database = knownDatabase(loaded, flags.database);
  const limit = flags.limit === undefined ? 20 : Number(flags.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: expected a whole number of at least 1, got "${flags.limit}"`, DRILLS_USAGE);
  const repositoryId = flags.repository ?? defaultRepositoryId(loaded.config, database);
  const repository = new RepositoryRegistry(loaded.config).get(repositoryId);
  const drills = (await listDrillReports(repository, database)).slice(0, limit);
  out.result({ ok: true, database, repository: repositoryId, location: repository.location, drills }, () =>
    drills.length === 0
      ? `no drills of ${database} in ${repository.location} yet`
      : table(
          ['STARTED', 'OUTCOME', 'BACKUP', 'RTO', 'RPO', 'FAILED CHECKS'],
          drills.map((d) => {
            const failed = (d.checks ?? []).filter((c) => c.outcome === 'fail').map((c) => c.name);
            return [
              formatTimestamp(d.started_at),
              d.outcome,
              d.backup_id ?? '-',
              d.rto_seconds !== null ? formatDuration(d.rto_seconds) : '-',
              d.rpo_seconds !== null ? formatDuration(d.rpo_seconds) : '-',
              failed.length ? failed.join(', ') : d.error ? `- (${d.error.step}: ${d.error.message.split('\n')[0]})` : '-',
            ];
          }),
        ),
  );
  return EXIT.ok;
}

function knownDatabase(loaded: LoadedConfig, database: string): string {
  if (loaded.config.databases[database]) return database;
  throw new UsageError(`unknown database "${database}"`, `databases in the config: ${Object.keys(loaded.config.databases).join(', ') || 'none'}`);
}
