import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/errors.js';
import type { RepositoryConfig } from '../config/schema.js';
import type { RepositoryKeys } from '../encryption/keys.js';
import { prefetchFolderOf, prefetchTag, takePrefetchedSegment } from '../pitr/wal-prefetch.js';
import { acknowledgePushedSegment, archiveTarget } from '../pitr/wal-spool.js';
import { scrubSecrets } from '../process/secrets.js';
import type { Repository } from '../repository/types.js';

// `pgrunbook wal-push %p` (archive_command) and `pgrunbook wal-fetch %f %p` (restore_command).
// PostgreSQL runs one process per WAL file, so start-up is most of the cost: this entry point
// loads the config (yaml, zod) and one repository driver, never Temporal or the rest of the CLI;
// the S3 SDK and the age library load only when the repository needs them. Its static imports
// are node built-ins and small modules without dependencies (wal-spool, wal-prefetch, wal-names,
// errors, secrets): a segment an earlier call pushed ahead (clusters.<id>.wal.pushAhead) is
// acknowledged from its marker, and one an earlier call fetched ahead (clusters.<id>.wal.fetchAhead)
// is handed over from the prefetch folder, before anything else loads.
//
// Exit status: 0 done; 1 failed (PostgreSQL retries) or, for wal-fetch, not in the archive;
// 2 bad usage or configuration. Errors are one line prefixed with the command, then a HINT.

const USAGE = {
  'wal-push': 'usage: pgrunbook wal-push %p [--cluster C] [--config FILE]',
  'wal-fetch': 'usage: pgrunbook wal-fetch %f %p [--cluster C] [--config FILE]',
} as const;

type WalCommand = keyof typeof USAGE;

class WalUsageError extends Error {}

export async function walMain(argv: string[]): Promise<number> {
  const command = argv[0] as WalCommand;
  if (command === 'wal-push' && acknowledgePushedSegment(argv.slice(1), process.env)) return 0;
  if (command === 'wal-fetch' && takePrefetchedSegment(argv.slice(1), process.env)) return 0;
  try {
    const { values, positionals } = parseArgs({
      args: argv.slice(1),
      allowPositionals: true,
      strict: true,
      options: { cluster: { type: 'string' }, config: { type: 'string' } },
    });
    const expected = command === 'wal-push' ? 1 : 2;
    if (positionals.length !== expected) throw new WalUsageError(`expected ${expected === 1 ? 'one argument (%p)' : 'two arguments (%f %p)'}, got ${positionals.length}\nHINT: ${USAGE[command]}`);
    // Identified before the config is read: a config edited meanwhile never matches the markers
    // and prefetched files written here.
    const target = archiveTarget(values, process.env);
    const archive = await openArchive(values);
    const { fetchWalFileWithAhead, parseWalCompression, pushWalFileWithAhead } = await import('../pitr/wal-archive.js');
    if (command === 'wal-push') {
      const setting = parseWalCompression(archive.compression);
      const encryptTo = archive.spec.encryption ? (await resolveKeys(archive.repositoryId, archive.spec, false)).encryptTo : null;
      await pushWalFileWithAhead({
        repository: archive.repository,
        cluster: archive.cluster,
        file: positionals[0]!,
        compression: setting,
        encryptTo,
        dataDirectory: process.cwd(),
        pushAhead: archive.pushAhead,
        target,
        onAheadFailure: (name, error) => {
          // One line in the server log; PostgreSQL asks for this segment next and retries it then.
          process.stderr.write(`pgrunbook wal-push: could not push ${name} ahead (it is archived when PostgreSQL asks for it): ${describe(error, command).message}\n`);
        },
      });
      return 0;
    }
    const [name, destination] = positionals as [string, string];
    const keys = await resolveKeys(archive.repositoryId, archive.spec, true);
    // restore_command runs in the data directory: segments fetched ahead wait in its pg_wal.
    const folder = target ? prefetchFolderOf(process.cwd()) : undefined;
    const { outcome } = await fetchWalFileWithAhead({
      repository: archive.repository,
      cluster: archive.cluster,
      name,
      destination: isAbsolute(destination) ? destination : resolve(destination),
      keys,
      fetchAhead: archive.fetchAhead,
      prefetch: folder && target ? { folder, tag: prefetchTag(target) } : undefined,
      onAheadFailure: (segment, error) => {
        // One line in the server log; PostgreSQL asks for this segment next, and that call fails the same way.
        process.stderr.write(`pgrunbook wal-fetch: could not fetch ${segment} ahead (it is fetched again when PostgreSQL asks for it): ${describe(error, command).message}\n`);
      },
    });
    if (outcome === 'missing') {
      // PostgreSQL asks for files that may not exist at every recovery (the next timeline's
      // history, the segment after the last one): one short line in the server log is enough.
      process.stderr.write(`${command}: ${name} is not in the archive\n`);
      return 1;
    }
    return 0;
  } catch (error) {
    const { message, hint, usage } = describe(error, command);
    process.stderr.write(`pgrunbook ${command}: ${message}\nHINT: ${hint}\n`);
    return usage ? 2 : 1;
  }
}

interface OpenArchive {
  cluster: string;
  repositoryId: string;
  spec: RepositoryConfig;
  repository: Repository;
  compression: string;
  pushAhead: number;
  fetchAhead: number;
}

async function openArchive(values: { cluster?: string; config?: string }): Promise<OpenArchive> {
  const [{ loadConfig }, { chooseClusterId, clusterRepositoryId }] = await Promise.all([import('../config/load.js'), import('../config/schema.js')]);
  const { config } = loadConfig(values.config);
  let cluster: string;
  try {
    cluster = chooseClusterId(config, values.cluster);
  } catch (error) {
    throw new WalUsageError((error as Error).message);
  }
  const repositoryId = clusterRepositoryId(config, cluster);
  const spec = config.repositories[repositoryId]!;
  // Built here rather than through repository/registry.ts, which loads the S3 SDK for every
  // process: a local archive never pays for it.
  const repository: Repository =
    spec.type === 'local'
      ? new (await import('../repository/local/local-repository.js')).LocalRepository(repositoryId, spec.path)
      : new (await import('../repository/s3/s3-repository.js')).S3Repository(repositoryId, spec, process.env);
  const { compression, pushAhead, fetchAhead } = config.clusters[cluster]!.wal;
  return { cluster, repositoryId, spec, repository, compression, pushAhead, fetchAhead };
}

/**
 * The repository's keys. wal-push needs only the recipients: the identity (which the server's
 * user may be unable to read, and should not need) is left out.
 */
async function resolveKeys(repositoryId: string, spec: RepositoryConfig, withIdentity: boolean): Promise<RepositoryKeys> {
  if (!spec.encryption) return { repository: repositoryId, encryptTo: null, identities: null, identityRecipients: [], identityField: `repositories.${repositoryId}.encryption.identityFile` };
  const { resolveRepositoryKeys } = await import('../encryption/keys.js');
  const encryption = withIdentity ? spec.encryption : { ...spec.encryption, identityFile: undefined, identityEnv: undefined };
  return resolveRepositoryKeys(repositoryId, { ...spec, encryption } as RepositoryConfig, process.env);
}

function describe(error: unknown, command: WalCommand): { message: string; hint: string; usage: boolean } {
  const retry = command === 'wal-push' ? 'PostgreSQL retries archive_command: fix the cause, then watch pg_stat_archiver' : 'PostgreSQL retries restore_command: fix the cause, then watch the server log';
  if (error instanceof ConfigError) {
    const first = error.problems[0];
    const message = first ? `invalid ${error.source}: ${first.path ? `${first.path}: ` : ''}${first.message}` : error.message;
    return { message: scrubSecrets(message), hint: scrubSecrets(first?.hint ?? retry), usage: true };
  }
  const errno = error as NodeJS.ErrnoException;
  let text = errno?.message ?? String(error);
  if (errno?.code === 'ENOENT' && errno.path) text = `cannot read ${errno.path}: no such file\nHINT: ${command === 'wal-push' ? 'archive_command runs in the data directory and passes %p (pg_wal/...)' : retry}`;
  else if (errno?.code === 'EACCES' && errno.path) text = `permission denied: ${errno.path}\nHINT: the server runs ${command} as its own user (postgres), which must read the config, the repository and the key files`;
  const [message = '', ...hint] = scrubSecrets(text).split('\nHINT: ');
  return { message: message.split('\n').join(' '), hint: hint.length ? hint.join(' ') : retry, usage: error instanceof WalUsageError || (errno?.code?.startsWith('ERR_PARSE_ARGS') ?? false) };
}
