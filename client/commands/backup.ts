import { Client } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import { listBackups } from '../../repository/catalog.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { defaultRepositoryId } from '../../config/schema.js';
import { parseBackupId } from '../../repository/layout.js';
import { verifyStoredBackup } from '../../repository/verify-stored.js';
import { resolveRepositoryKeys } from '../../encryption/keys.js';
import { newestClientTools } from '../../postgres/tools.js';
import type { BackupResult } from '../../workflows/backup-database.js';
import { connectClient } from '../temporal-connection.js';
import { describeProgress, follow, startBackup } from '../backup.js';
import { formatBytes, formatDuration } from '../../report/units.js';
import { EXIT, table, UsageError, type Output } from '../output.js';
import { clientDataConverter } from '../../encryption/payload-codec.js';

export async function backupCommand(loaded: LoadedConfig, out: Output, flags: { database?: string; label?: string; repository?: string; wait?: boolean }): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', 'pgrunbook backup --database <id> [--label L] [--wait]');
  const connection = await connectClient(loaded.config.temporal);
  try {
    const client = new Client({ connection, namespace: loaded.config.temporal.namespace, dataConverter: clientDataConverter(loaded.config.temporal) });
    const handle = await startBackup(client, loaded.config, { database: flags.database, label: flags.label, repository: flags.repository });
    out.info(`started ${handle.workflowId}`);
    if (!flags.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () =>
        `follow it with: temporal workflow describe --workflow-id ${handle.workflowId}  (or pass --wait)`,
      );
      return EXIT.ok;
    }
    const result = await follow<BackupResult>(handle, (p) => out.progress(describeProgress(p)));
    out.result({ ok: true, workflowId: handle.workflowId, ...result }, () => describeBackupResult(result));
    return EXIT.ok;
  } finally {
    await connection.close();
  }
}

export function describeBackupResult(r: BackupResult): string {
  return [
    `backup ${r.backupId}: ${r.status}`,
    `  repository  ${r.repository}`,
    `  format      ${r.format}`,
    `  size        ${formatBytes(r.size)} (database ${formatBytes(r.databaseSizeBytes)})`,
    `  sha256      ${r.sha256}`,
    `  duration    ${formatDuration(r.durationSeconds)}`,
    `  verified    sha256 ${r.verification.sha256Matches ? 'matches' : 'DIFFERS'}${r.verification.decrypted ? ', decrypted (age)' : ''}${r.verification.tocEntries !== null ? `, pg_restore -l lists ${r.verification.tocEntries} entries` : ''}${r.verification.decrypted === false ? ' (encrypted, and this worker holds no key: checksum only)' : ''}`,
  ].join('\n');
}

export async function backupsListCommand(loaded: LoadedConfig, out: Output, flags: { database?: string; repository?: string }): Promise<number> {
  if (!flags.database) throw new UsageError('--database is required', 'pgrunbook backups list --database <id>');
  const repositoryId = flags.repository ?? defaultRepositoryId(loaded.config, flags.database);
  const repository = new RepositoryRegistry(loaded.config).get(repositoryId);
  const backups = await listBackups(repository, flags.database);
  const rows = backups.map((b) => ({
    id: b.id,
    state: b.state,
    label: b.label,
    size: b.manifest?.dump?.size ?? null,
    sha256: b.manifest?.dump?.sha256 ?? null,
    finishedAt: b.manifest?.finishedAt ?? null,
    durationSeconds: b.manifest?.durationSeconds ?? null,
    error: b.manifest?.error?.message ?? null,
  }));
  const latestGood = backups.find((b) => b.state === 'verified')?.id ?? null;
  out.result({ ok: true, database: flags.database, repository: repositoryId, location: repository.location, latestGood, backups: rows }, () =>
    rows.length === 0
      ? `no backups of ${flags.database} in ${repository.location}`
      : table(
          ['BACKUP', 'STATE', 'SIZE', 'DURATION', 'FINISHED'],
          rows.map((r) => [
            r.id + (r.id === latestGood ? ' (latest good)' : ''),
            r.state,
            r.size !== null ? formatBytes(r.size) : '-',
            r.durationSeconds !== null ? formatDuration(r.durationSeconds) : '-',
            r.finishedAt ?? '-',
          ]),
        ),
  );
  return EXIT.ok;
}

export async function backupsVerifyCommand(loaded: LoadedConfig, out: Output, backupId: string | undefined, flags: { repository?: string }): Promise<number> {
  const parsed = backupId ? parseBackupId(backupId) : undefined;
  if (!backupId || !parsed) throw new UsageError(`expected a backup id like app/20261121T020000Z${backupId ? `, got "${backupId}"` : ''}`, 'list them with `pgrunbook backups list --database <id>`');
  const repositoryId = flags.repository ?? defaultRepositoryId(loaded.config, parsed.database);
  const repository = new RepositoryRegistry(loaded.config).get(repositoryId);
  const tools = await newestClientTools();
  // An encrypted backup is decrypted in-stream with the identity this process is configured with.
  const keys = await resolveRepositoryKeys(repositoryId, loaded.config.repositories[repositoryId]!);
  const check = await verifyStoredBackup(repository, backupId, tools.pgRestore, (bytes) => out.progress(`verifying ${backupId}: ${formatBytes(bytes)} read`), keys);
  const { manifest, ...report } = check;
  const how = check.dump?.decrypted === false
    ? `sha256 ${check.dump.sha256Matches ? 'matches' : '-'}; encrypted and no identity configured here: checksum only`
    : `sha256 ${check.dump?.sha256Matches ? 'matches' : '-'}, ${check.dump?.decrypted ? 'decrypted, ' : ''}${check.dump?.tocEntries ?? 0} TOC entries`;
  out.result({ ...report, encryption: manifest?.encryption ?? null, manifestSha256: manifest?.dump?.sha256 ?? null }, () =>
    check.ok
      ? `backup ${backupId}: OK (${how}, ${Object.keys(manifest?.files ?? {}).length} files checked)`
      : `backup ${backupId}: FAILED\n${check.problems.map((p) => `  - ${p}`).join('\n')}`,
  );
  return check.ok ? EXIT.ok : EXIT.failed;
}
