import type { LoadedConfig } from '../../config/load.js';
import { listGlobals } from '../../repository/globals.js';
import { RepositoryRegistry } from '../../repository/registry.js';
import { formatBytes, formatDuration } from '../../report/units.js';
import type { FleetInput, FleetResult } from '../../workflows/fleet-input.js';
import { follow } from '../backup.js';
import type { CliValues } from '../cli.js';
import { describeFleets, FLEET_USAGE, GLOBALS_USAGE, startFleetBackup } from '../fleet.js';
import { EXIT, table, UsageError, type Output } from '../output.js';
import { withTemporalClient } from '../temporal-connection.js';

/** `pgrunbook fleet backup|list`. */
export async function fleetCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, arg: string | undefined, values: CliValues): Promise<number> {
  if (sub === 'list') return fleetList(loaded, out);
  if (sub !== 'backup') throw new UsageError(`unknown subcommand "fleet ${sub ?? ''}"`, FLEET_USAGE);
  const input = fleetRequest(arg, values);
  return withTemporalClient(loaded.config.temporal, async (client) => {
    const handle = await startFleetBackup(client, loaded.config, input);
    out.info(`started ${handle.workflowId}`);
    if (!values.wait) {
      out.result({ ok: true, workflowId: handle.workflowId, runId: handle.firstExecutionRunId }, () => `follow it with: pgrunbook status ${handle.workflowId}  (or pass --wait)`);
      return EXIT.ok;
    }
    const result = await follow<FleetResult>(handle, (p) => {
      const d = p.status.details;
      if (d.databases !== undefined) out.progress(`${d.done}/${Number(d.databases) + (values['no-globals'] ? 0 : Number(d.servers ?? 0))} done, ${d.failed} failed; running: ${d.running || '-'}`);
    });
    out.result({ ok: result.failed === 0, workflowId: handle.workflowId, ...result }, () => describeFleetResult(result));
    return result.failed === 0 ? EXIT.ok : EXIT.failed;
  });
}

/** The workflow input from the command line; KEY=VALUE selects on labels, --databases on ids. */
export function fleetRequest(fleet: string | undefined, values: CliValues): FleetInput {
  const labels: Record<string, string> = {};
  for (const pair of values.select ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new UsageError(`--select ${pair}: expected KEY=VALUE, e.g. tier=prod`, FLEET_USAGE);
    labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const databases = values.databases?.split(',').map((g) => g.trim()).filter(Boolean);
  const select = Object.keys(labels).length > 0 || databases?.length ? { ...(databases?.length ? { databases } : {}), ...(Object.keys(labels).length ? { labels } : {}) } : undefined;
  let concurrency: number | undefined;
  if (values.concurrency !== undefined) {
    concurrency = Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100) throw new UsageError(`--concurrency ${values.concurrency}: expected a whole number from 1 to 100`, FLEET_USAGE);
  }
  return {
    ...(fleet ? { fleet } : {}),
    ...(select ? { select } : {}),
    ...(concurrency !== undefined ? { concurrency } : {}),
    ...(values['no-globals'] ? { globals: false } : {}),
    ...(values.label ? { label: values.label } : {}),
    requestedBy: 'cli',
  };
}

/** `pgrunbook globals list [--repository R]`: the servers' roles and tablespaces dumps, newest first. */
export async function globalsCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, values: CliValues): Promise<number> {
  if (sub !== 'list') throw new UsageError(`unknown subcommand "globals ${sub ?? ''}"`, GLOBALS_USAGE);
  const config = loaded.config;
  const repositoryId = values.repository ?? config.defaults.repository ?? Object.keys(config.repositories)[0]!;
  if (!config.repositories[repositoryId]) throw new UsageError(`unknown repository "${repositoryId}"`, `repositories in the config: ${Object.keys(config.repositories).join(', ')}`);
  const repository = new RepositoryRegistry(config).get(repositoryId);
  const entries = await listGlobals(repository);
  const rows = entries.map((e) => ({ id: e.id, server: e.manifest.server, serverVersion: e.manifest.serverVersion, roles: e.manifest.roles, tablespaces: e.manifest.tablespaces, rolePasswords: e.manifest.rolePasswords, bytes: e.manifest.bytes, sha256: e.manifest.sha256, encrypted: e.manifest.encrypted, file: e.manifest.file, startedAt: e.manifest.startedAt }));
  out.result({ ok: true, repository: repositoryId, location: repository.location, globals: rows }, () =>
    rows.length === 0
      ? `no globals in ${repository.location} (a fleet backup dumps them: pgrunbook fleet backup)`
      : table(
          ['GLOBALS', 'SERVER', 'ROLES', 'TABLESPACES', 'SIZE', 'PASSWORDS', 'ENCRYPTED'],
          rows.map((r) => [r.id, r.server, String(r.roles), String(r.tablespaces), formatBytes(r.bytes), r.rolePasswords ? 'hashes' : 'none', r.encrypted ? 'age' : 'no']),
        ) + `\nrestore one with stock psql on the new server, before its databases: psql -f <${rows[0]!.id}/${rows[0]!.file}> (decrypt .age files with age -d first)`,
  );
  return EXIT.ok;
}

function fleetList(loaded: LoadedConfig, out: Output): number {
  const fleets = describeFleets(loaded.config);
  out.result({ ok: true, fleets }, () =>
    fleets.length === 0
      ? 'no fleets configured (fleets: in the config); `pgrunbook fleet backup --select KEY=VALUE` backs up a selection anyway'
      : fleets
          .map((f) => `${f.fleet}: ${f.databases.length} database(s), ${f.concurrency} at once, globals ${f.globals ? 'on' : 'off'}, ${f.schedule ? 'scheduled' : 'on demand'}\n${table(['DATABASE', 'TASK QUEUE'], f.databases.map((d) => [d.database, d.taskQueue]))}`)
          .join('\n\n'),
  );
  return EXIT.ok;
}

export function describeFleetResult(r: FleetResult): string {
  const rows = r.databases.map((d) => [d.database, d.taskQueue, d.status, d.backupId ?? '-', d.bytes !== undefined ? formatBytes(d.bytes) : '-', formatDuration(d.durationMs / 1000), d.error ? oneLine(d.error) : '']);
  const globals = r.globals.map((g) => [`globals ${g.server}`, g.taskQueue, g.status, g.key ?? '-', g.roles !== undefined ? `${g.roles} roles, ${g.tablespaces} tablespaces` : '-', '', g.error ? oneLine(g.error) : '']);
  return [
    `fleet ${r.fleet ?? '(selection)'}: ${r.succeeded} of ${r.databases.length} database(s) backed up, ${r.failed} failed, in ${formatDuration(r.durationMs / 1000)}`,
    table(['DATABASE', 'TASK QUEUE', 'STATUS', 'BACKUP', 'SIZE', 'DURATION', 'ERROR'], [...globals, ...rows]),
  ].join('\n');
}

function oneLine(text: string): string {
  const first = text.split('\n')[0] ?? '';
  return first.length > 100 ? `${first.slice(0, 97)}...` : first;
}
