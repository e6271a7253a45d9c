import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { PGRUNBOOK_VERSION } from '../activities/version.js';
import { startWorker } from '../worker/run.js';
import { backupCommand, backupsListCommand, backupsVerifyCommand } from './commands/backup.js';
import { devCommand } from './commands/dev.js';
import { drillCommand } from './commands/drill.js';
import { backupsPruneCommand } from './commands/prune.js';
import { drillsListCommand, reportCommand } from './commands/report.js';
import { approvalCommand, preRestoreCommand, restoreCommand, statusCommand, stepCommand } from './commands/restore.js';
import { schedulesCommand } from './commands/schedules.js';
import { basebackupCommand, basebackupsCommand } from './commands/basebackup.js';
import { pitrCommand } from './commands/pitr.js';
import { walCommand } from './commands/wal.js';
import { fleetCommand, globalsCommand } from './commands/fleet.js';
import { EXIT, Output, UsageError } from './output.js';

const USAGE = `pgrunbook ${PGRUNBOOK_VERSION}: PostgreSQL backup and restore runbooks as durable Temporal workflows

usage: pgrunbook <command> [options]

commands:
  dev [--demo]                          embedded default: Temporal dev server + worker + local
                                        repository ./backups, on $DATABASE_URL or a throwaway
                                        cluster with sample data; --demo backs up, verifies, exits
  worker [--task-queue Q]...            run a worker for the task queues in worker.taskQueues (default:
                                        temporal.taskQueue); --task-queue overrides, e.g. one site's
  backup --database ID [--label L] [--repository R] [--wait]
                                        start backupDatabase; --wait follows it with progress
  fleet backup [FLEET] [--select KEY=VALUE]... [--databases GLOB,...] [--concurrency N]
               [--no-globals] [--label L] [--wait]
                                        start backupFleet: every database of a fleet (fleets: in the
                                        config) or of a selection, as child backups on their sites'
                                        task queues, N at once, plus each server's roles and
                                        tablespaces; exits 1 when any failed
  fleet list                            configured fleets, their databases and task queues
  globals list [--repository R]         servers' roles and tablespaces dumped by fleets, newest first
  backups list --database ID [--repository R]
  backups verify BACKUP_ID [--repository R]
                                        re-check a stored backup: sha256, pg_restore -l, metadata
  backups prune --database ID [--repository R] [--dry-run] [--wait]
                                        start pruneBackups (retention); --dry-run prints what
                                        would go and which rule decided it, deleting nothing
  restore --database ID [--backup ID|latest] [--target-database NAME] [--strategy swap|in-place]
          [--jobs N] [--no-owner] [--no-privileges] [--role R] [--yes]
          [--safety-backup|--no-safety-backup] [--wait]
                                        start restoreDatabase (workflow restore-<ID>); --yes
                                        skips the approval gate; --wait follows it
  drill --database ID [--backup ID|latest] [--canary|--no-canary] [--wait]
                                        start runRestoreDrill: restore into a disposable target,
                                        check, report RTO/RPO, tear down; --wait follows it
  status WORKFLOW_ID                    current step, finished steps, what it waits for
  approve|reject WORKFLOW_ID --reason TEXT
                                        decide a restore waiting for approval
  step retry|skip|abort WORKFLOW_ID [--step NAME] [--reason TEXT]
                                        decide a step that failed after its retries
  pre-restore list|prune --database ID [--older-than-days N]
  pre-restore drop NAME --database ID   old databases kept by swap restores
  drills list --database ID [--limit N] [--repository R]
                                        past drills: outcome, backup, RTO, RPO, failed checks
  report --out DIR [--database ID]      write DIR/index.html: backups, drills (RTO/RPO trends)
                                        and the latest restore's or drill's steps; no server needed
  schedules apply [--dry-run]           make the Temporal Schedules match the config (nightly
                                        backups, monthly drills); twice changes nothing
  schedules list|describe ID            pgrunbook's schedules, next run times, recent runs
  schedules pause ID [--reason TEXT]|unpause ID|trigger ID|delete ID
  config check [--task-queue Q]...      validate the config file and the worker environment (of the
                                        databases on the worker's task queues)

point-in-time recovery (clusters: in the config; --cluster may be omitted when there is one):
  wal-push %p [--cluster C]             archive_command: compress, checksum, (encrypt), store one
                                        WAL file; idempotent; needs no Temporal server
  wal-fetch %f %p [--cluster C]         restore_command: fetch, check, decompress one WAL file
  wal verify [--cluster C]              gaps in the archived WAL per timeline, from the oldest
                                        base backup to now (WAL-G's wal-verify)
  wal list [--cluster C]                archived timelines and segment ranges
  wal restore-point NAME [--cluster C]  pg_create_restore_point(NAME), recorded for pitr
  basebackup [--cluster C] [--wait]     start basebackupCluster: pg_basebackup (tar, WAL) streamed
                                        into the repository, checksummed, pg_verifybackup-checked
  basebackups list [--cluster C]
  basebackups prune [--cluster C] [--dry-run] [--wait]
                                        retention: old base backups and the WAL only they need
  pitr [--cluster C] --time T|--lsn L|--restore-point N|--latest [--mode new|replace]
       [--base-backup ID] [--yes] [--wait]
                                        start pointInTimeRestore: a new data directory and port
                                        (default) or replace the cluster (approval, app down)
  pitr promote|discard WORKFLOW_ID [--reason TEXT]
                                        keep (promote) or throw away a recovered cluster

options:
  --config FILE     config file (default: $PGRUNBOOK_CONFIG, then ./pgrunbook.yaml)
  --json            machine-readable output on stdout
  -h, --help        this help;   --version   print the version

exit codes: 0 ok, 1 the operation failed, 2 bad usage or configuration`;

const CLI_OPTIONS = {
  config: { type: 'string' },
  json: { type: 'boolean', default: false },
  database: { type: 'string' },
  label: { type: 'string' },
  repository: { type: 'string' },
  wait: { type: 'boolean', default: false },
  backup: { type: 'string' },
  'target-database': { type: 'string' },
  strategy: { type: 'string' },
  jobs: { type: 'string' },
  'no-owner': { type: 'boolean', default: false },
  'no-privileges': { type: 'boolean', default: false },
  role: { type: 'string' },
  yes: { type: 'boolean', default: false },
  'safety-backup': { type: 'boolean', default: false },
  'no-safety-backup': { type: 'boolean', default: false },
  reason: { type: 'string' },
  step: { type: 'string' },
  'older-than-days': { type: 'string' },
  'dry-run': { type: 'boolean', default: false },
  demo: { type: 'boolean', default: false },
  canary: { type: 'boolean', default: false },
  'no-canary': { type: 'boolean', default: false },
  out: { type: 'string' },
  limit: { type: 'string' },
  cluster: { type: 'string' },
  time: { type: 'string' },
  lsn: { type: 'string' },
  'restore-point': { type: 'string' },
  latest: { type: 'boolean', default: false },
  mode: { type: 'string' },
  'base-backup': { type: 'string' },
  'task-queue': { type: 'string', multiple: true },
  select: { type: 'string', multiple: true },
  databases: { type: 'string' },
  concurrency: { type: 'string' },
  'no-globals': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', default: false },
} as const;

/** The parsed command-line flags every command receives. */
export type CliValues = ReturnType<typeof parseCli>['values'];

function parseCli(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: CLI_OPTIONS,
  });
}

export async function main(argv: string[]): Promise<number> {
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseCli(argv));
  } catch (error) {
    return new Output(argv.includes('--json')).error(new UsageError((error as Error).message, 'pgrunbook --help'));
  }
  const out = new Output(values.json);
  const [command, sub, arg] = positionals;
  if (values.version) {
    out.result({ version: PGRUNBOOK_VERSION }, () => PGRUNBOOK_VERSION);
    return EXIT.ok;
  }
  if (values.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return command || values.help ? EXIT.ok : EXIT.usage;
  }
  try {
    switch (command) {
      case 'dev':
        return await devCommand(out, { demo: values.demo });
      case 'worker': {
        const { config, path } = loadConfig(values.config);
        const running = await startWorker(config, { configPath: path, taskQueues: values['task-queue'] ?? [] });
        for (const taskQueue of running.taskQueues) out.info(`worker for task queue "${taskQueue}" on ${config.temporal.address} (config ${path}); Ctrl-C stops it`);
        out.info(`up to ${config.worker.maxConcurrentActivities} steps per task queue and ${config.worker.maxConcurrentDumps} pg_dumps at once; on SIGTERM running steps get ${config.worker.shutdownGraceSeconds} s before Temporal retries them elsewhere`);
        if (running.metricsUrl) out.info(`metrics on ${running.metricsUrl}/metrics`);
        await running.done;
        return EXIT.ok;
      }
      case 'backup':
        return await backupCommand(loadConfig(values.config), out, values);
      case 'fleet':
        return await fleetCommand(loadConfig(values.config), out, sub, arg, values);
      case 'globals':
        return await globalsCommand(loadConfig(values.config), out, sub, values);
      case 'backups':
        if (sub === 'list') return await backupsListCommand(loadConfig(values.config), out, values);
        if (sub === 'verify') return await backupsVerifyCommand(loadConfig(values.config), out, arg, values);
        if (sub === 'prune') return await backupsPruneCommand(loadConfig(values.config), out, values);
        throw new UsageError(`unknown subcommand "backups ${sub ?? ''}"`, 'pgrunbook backups list|verify|prune');
      case 'restore':
        return await restoreCommand(loadConfig(values.config), out, values);
      case 'drill':
        return await drillCommand(loadConfig(values.config), out, values);
      case 'status':
        return await statusCommand(loadConfig(values.config), out, sub);
      case 'approve':
      case 'reject':
        return await approvalCommand(loadConfig(values.config), out, command, sub, values.reason);
      case 'step':
        return await stepCommand(loadConfig(values.config), out, sub, arg, values);
      case 'pre-restore':
        return await preRestoreCommand(loadConfig(values.config), out, sub, arg, values);
      case 'drills':
        if (sub === 'list') return await drillsListCommand(loadConfig(values.config), out, values);
        throw new UsageError(`unknown subcommand "drills ${sub ?? ''}"`, 'pgrunbook drills list --database <id>');
      case 'report':
        return await reportCommand(loadConfig(values.config), out, values);
      case 'schedules':
        return await schedulesCommand(loadConfig(values.config), out, sub, arg, values);
      case 'wal':
        return await walCommand(loadConfig(values.config), out, sub, arg, values);
      case 'basebackup':
        return await basebackupCommand(loadConfig(values.config), out, values);
      case 'basebackups':
        return await basebackupsCommand(loadConfig(values.config), out, sub, arg, values);
      case 'pitr':
        return await pitrCommand(loadConfig(values.config), out, sub, arg, values);
      case 'config': {
        if (sub !== 'check') throw new UsageError(`unknown subcommand "config ${sub ?? ''}"`, 'pgrunbook config check');
        const { config, path } = loadConfig(values.config);
        // What `pgrunbook worker` with the same options would start with: its task queues' databases.
        const { checkWorkerEnvironment, servedDatabases, servedRepositories, workerTaskQueues } = await import('../worker/run.js');
        const taskQueues = workerTaskQueues(config, values['task-queue'] ?? []);
        checkWorkerEnvironment(config, process.env, taskQueues);
        await (await import('../encryption/keys.js')).checkEncryptionKeys(config, process.env, servedRepositories(config, taskQueues));
        const served = servedDatabases(config, taskQueues);
        out.result({ ok: true, path, taskQueues, databases: served, repositories: Object.keys(config.repositories) }, () =>
          `${path}: OK (${Object.keys(config.databases).length} databases, ${Object.keys(config.repositories).length} repositories; worker environment complete for task queue${taskQueues.length > 1 ? 's' : ''} ${taskQueues.join(', ')}: ${served.length} database(s))`,
        );
        return EXIT.ok;
      }
      default:
        throw new UsageError(`unknown command "${command}"`, 'pgrunbook --help');
    }
  } catch (error) {
    return out.error(error);
  }
}
