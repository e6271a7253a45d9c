import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { defaultRepositoryId } from '../config/schema.js';
import { decryptStream, DecryptionError } from '../encryption/age.js';
import { describeConnection } from '../postgres/connection.js';
import { classifyPostgresError, classifyToolError, failure } from '../postgres/errors.js';
import { dumpGlobalsToRepository, pgDumpallOf, scanGlobals, type GlobalsContent } from '../postgres/globals.js';
import { probeServer } from '../postgres/probe.js';
import type { VerifyRequest } from '../postgres/verify.js';
import { clientToolsFor } from '../postgres/tools.js';
import { ToolError } from '../process/run.js';
import { digestStream } from '../repository/checksum-stream.js';
import {
  GLOBALS_FILE,
  GlobalsManifest,
  globalsId,
  globalsKey,
  incompleteGlobals,
  listGlobals,
  parseGlobalsId,
  readGlobalsManifest,
  serverFolder,
} from '../repository/globals.js';
import { compactTimestamp } from '../repository/layout.js';
import type { Verification } from '../repository/manifest.js';
import { timestampOf } from '../repository/retention.js';
import { writeAll, type Repository } from '../repository/types.js';
import { createEncryptionSupport, storedName } from './encryption.js';
import { removeFolderManifestFirst } from './retirement.js';
import { activitySupport, type ActivityDeps } from './support.js';
import { PGRUNBOOK_VERSION } from './version.js';

// A fleet's globals: `pg_dumpall --globals-only` (roles, memberships, role settings, tablespaces)
// once per server, into `globals/<server>/<stamp>/` of the repository, verified, then the
// server's older copies beyond keepLast removed. One activity, idempotent as a whole: the folder
// is named by the fleet run's start, so a retry writes the same folder, and a retry after the
// manifest was written finds it, checks it and only finishes the pruning.

export interface GlobalsBackupInput {
  /** A configured database on the server; pgrunbook connects through it (its credentials, its dbname). */
  database: string;
  /** Default: the database's repository. */
  repository?: string;
  /** ISO time the fleet run started: names the folder, so a retried activity converges. */
  startedAt: string;
  /** Dump role password hashes too (needs a superuser); false: --no-role-passwords. */
  rolePasswords: boolean;
  /** Complete globals backups of this server kept after this one is verified (this one included). */
  keepLast: number;
}

export interface GlobalsBackupResult {
  /** host:port of the server, as configured (no credentials). */
  server: string;
  /** Its folder in the repository (globals/<serverId>/). */
  serverId: string;
  database: string;
  repository: string;
  /** The backup's id and folder: globals/<serverId>/<YYYYMMDDTHHMMSSZ>. */
  key: string;
  /** globals.sql, or globals.sql.age when the repository encrypts. */
  file: string;
  bytes: number;
  sha256: string;
  roles: number;
  tablespaces: number;
  rolePasswords: boolean;
  encrypted: boolean;
  serverVersion: string;
  /** true: a previous attempt had already written and verified it; nothing was dumped again. */
  alreadyDone: boolean;
  verification: Verification;
  /** Ids of this server's older globals backups removed by keepLast (and stale incomplete folders). */
  pruned: string[];
}

/** A folder with no manifest this much older than the run is a dead writer's, not a running one's. */
const INCOMPLETE_MAX_AGE_MS = 24 * 3_600_000;

export function createGlobalsActivities(deps: ActivityDeps) {
  const { databaseConfig, connection, repository, withHeartbeat, withDumpSlot, byteProgress } = activitySupport(deps);
  const { encryptionFor, verificationKeys } = createEncryptionSupport(deps);

  return {
    /** The roles and tablespaces of the server `database` lives on, dumped, verified and pruned. */
    async backupGlobals(input: GlobalsBackupInput): Promise<GlobalsBackupResult> {
      // Step 1: refuse bad input before anything runs.
      const db = databaseConfig(input.database);
      const startedAt = new Date(input.startedAt);
      if (typeof input.startedAt !== 'string' || Number.isNaN(startedAt.getTime())) {
        throw failure('InvalidInput', `startedAt: expected an ISO 8601 time, got ${JSON.stringify(input.startedAt)}`, 'the fleet workflow passes its start time, e.g. 2026-11-21T02:00:00.000Z');
      }
      if (!Number.isInteger(input.keepLast) || input.keepLast < 1) {
        throw failure('InvalidInput', `keepLast: expected a whole number of at least 1, got ${JSON.stringify(input.keepLast)}`, 'fleets.<id>.globals.keepLast counts the copies kept per server, the new one included, e.g. 30');
      }
      if (typeof input.rolePasswords !== 'boolean') {
        throw failure('InvalidInput', `rolePasswords: expected true or false, got ${JSON.stringify(input.rolePasswords)}`, 'fleets.<id>.globals.rolePasswords: false keeps password hashes out of the repository');
      }
      const repositoryId = input.repository ?? defaultRepositoryId(deps.config, input.database);
      const repo = repository(repositoryId);
      const params = connection(input.database);
      const where = describeConnection(params);
      const signal = Context.current().cancellationSignal;

      // Step 2: which server, which pg_dumpall (pg_dump's rule: its major or the closest newer one).
      let facts;
      try {
        facts = await probeServer(params);
      } catch (error) {
        throw classifyPostgresError(error, where);
      }
      const tools = await clientToolsFor(facts.serverMajor, db.pgBinDir);
      pgDumpallOf(tools); // a missing pg_dumpall fails here, before anything is written
      const server = `${params.host}:${params.port}`;
      const serverId = serverFolder(params.host, params.port);
      const id = globalsId(serverId, compactTimestamp(startedAt));
      const encryption = await encryptionFor(repositoryId);
      const file = storedName(GLOBALS_FILE.sql, encryption);
      const key = globalsKey(id, file);
      const manifestKey = globalsKey(id, GLOBALS_FILE.manifest);
      const base = { server, serverId, database: input.database, repository: repositoryId, key: id, file, rolePasswords: input.rolePasswords, encrypted: encryption !== null, serverVersion: facts.serverVersion };

      // Step 3: a retry after the manifest was written: if the stored file still matches it, done
      // but for pruning. One that does not match is retired (manifest first) and written anew.
      if (await repo.stat(manifestKey)) {
        const previous = await readGlobalsManifest(repo, id).catch(() => undefined);
        const stored = previous && previous.file === file ? await repo.read(globalsKey(id, file), { signal }).then(digestStream).catch(() => undefined) : undefined;
        if (previous && stored && stored.sha256 === previous.sha256 && stored.size === previous.bytes) {
          const pruned = await pruneGlobals(repo, serverId, id, input.keepLast, startedAt, signal);
          return { ...base, bytes: previous.bytes, sha256: previous.sha256, roles: previous.roles, tablespaces: previous.tablespaces, alreadyDone: true, verification: previous.verification, pruned };
        }
        await repo.delete(manifestKey);
      }

      // Step 4: pg_dumpall --globals-only streamed into the repository (encrypted when configured),
      // in one of the worker's dump slots. A dead attempt's unpublished write goes first.
      await repo.removeIncompleteWrites(key).catch(() => 0);
      let outcome;
      try {
        outcome = await withHeartbeat((report) =>
          withDumpSlot(() =>
            dumpGlobalsToRepository({
              params, tools, repository: repo, key,
              rolePasswords: input.rolePasswords,
              ...(encryption ? { encryptTo: encryption.recipients } : {}),
              signal,
              onBytes: byteProgress(report),
            }),
          ),
        );
      } catch (error) {
        if (signal.aborted) throw error;
        throw classifyGlobalsError(error, where, input.rolePasswords);
      }

      // Step 5: re-read what was stored: checksum and size, and the SQL itself where this worker
      // can read it (in the clear, or encrypted to an identity it holds).
      const keys = await verificationKeys(repositoryId, encryption);
      const verification = await withHeartbeat((report) => verifyStoredGlobals(repo, key, outcome, keys, input.rolePasswords, signal, byteProgress(report)));
      if (!verification.ok) {
        throw failure('VerificationFailed', `globals backup ${id} in ${repo.location} failed verification: ${verification.error ?? 'unknown'}; it is not listed (no manifest)`, 'retry the fleet backup; if it fails again, check the repository\'s storage');
      }

      // Step 6: the manifest, written last: it alone makes the backup listable.
      const manifest = GlobalsManifest.parse({
        manifestVersion: 1,
        kind: 'globals',
        id,
        repository: repositoryId,
        server,
        serverVersion: facts.serverVersion,
        database: input.database,
        file,
        bytes: outcome.size,
        sha256: outcome.sha256,
        sqlBytes: outcome.content.sqlBytes,
        roles: outcome.content.roles,
        tablespaces: outcome.content.tablespaces,
        rolePasswords: input.rolePasswords,
        encrypted: encryption !== null,
        encryption,
        pgDumpallVersion: tools.version.replace(/^pg_dump\b/, 'pg_dumpall'),
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        verification,
        pgrunbookVersion: PGRUNBOOK_VERSION,
      } satisfies GlobalsManifest);
      await writeAll(repo, manifestKey, JSON.stringify(manifest, null, 2) + '\n');

      // Step 7: retention, now that a verified copy exists.
      const pruned = await pruneGlobals(repo, serverId, id, input.keepLast, startedAt, signal);
      return { ...base, bytes: outcome.size, sha256: outcome.sha256, roles: outcome.content.roles, tablespaces: outcome.content.tablespaces, alreadyDone: false, verification, pruned };
    },
  };
}

export type GlobalsActivities = ReturnType<typeof createGlobalsActivities>;

/**
 * Checks the stored file against what was streamed: sha256 and size of the stored bytes; then,
 * in plaintext, pg_dumpall's header and trailer, the same roles and tablespaces, at least one
 * CREATE ROLE, and no password hash unless they were asked for.
 */
async function verifyStoredGlobals(
  repo: Repository,
  key: string,
  written: { size: number; sha256: string; content: GlobalsContent },
  /** As for database backups: identities to decrypt with, or null (checksum only) and why. */
  encryption: VerifyRequest['encryption'],
  rolePasswords: boolean,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
): Promise<Verification> {
  const checkedAt = new Date().toISOString();
  const stored = await digestStream(await repo.read(key, { signal }));
  onBytes(stored.size);
  const sha256Matches = stored.sha256 === written.sha256;
  const sizeMatches = stored.size === written.size;
  const result: Verification = { ok: false, checkedAt, sha256Matches, sizeMatches, sha256: stored.sha256, size: stored.size, tocEntries: null, completeMarker: null };
  if (!sha256Matches || !sizeMatches) return { ...result, error: 'the stored bytes differ from what was written (sha256 or size)' };

  let content = written.content;
  let note: string | undefined;
  if (encryption && !encryption.identities) {
    // Backup-only worker: the SQL was checked as it streamed, before encryption.
    note = encryption.note;
  } else {
    const source = await repo.read(key, { signal });
    try {
      content = await scanGlobals(encryption?.identities ? await decryptStream(source, encryption.identities) : source);
    } catch (error) {
      if (error instanceof DecryptionError) return { ...result, decrypted: false, error: `cannot decrypt the stored file: ${error.message}` };
      throw error;
    } finally {
      source.destroy();
    }
  }
  const decrypted = encryption ? { decrypted: encryption.identities !== null } : {};
  const problems: string[] = [];
  if (!content.complete) problems.push('pg_dumpall\'s header or "dump complete" trailer is missing');
  if (content.roles < 1) problems.push('no CREATE ROLE statement (every server has at least its bootstrap superuser)');
  if (content.roles !== written.content.roles || content.tablespaces !== written.content.tablespaces || content.sqlBytes !== written.content.sqlBytes) {
    problems.push('the stored SQL differs from what pg_dumpall wrote');
  }
  if (!rolePasswords && content.passwordHashes > 0) problems.push(`${content.passwordHashes} password hash(es) in a dump made with --no-role-passwords`);
  return {
    ...result,
    ...decrypted,
    ok: problems.length === 0,
    completeMarker: content.complete,
    ...(note ? { note } : {}),
    ...(problems.length > 0 ? { error: problems.join('; ') } : {}),
  };
}

/**
 * keepLast over a server's complete globals backups, newest first; the one just written is kept
 * even beyond them (a late retry of an older run). Incomplete folders go once they are a day older
 * than this run: a writer that old is dead, a younger one may still be writing. Manifests go
 * first, so a prune that dies half-way leaves incomplete folders, never a listed broken copy.
 */
async function pruneGlobals(repo: Repository, serverId: string, current: string, keepLast: number, startedAt: Date, signal: AbortSignal): Promise<string[]> {
  const complete = await listGlobals(repo, serverId);
  const doomed = complete.slice(keepLast).map((entry) => entry.id).filter((id) => id !== current);
  const stale = (await incompleteGlobals(repo, serverId)).filter((id) => id !== current && startedAt.getTime() - timestampOf({ timestamp: parseGlobalsId(id)!.timestamp }).getTime() > INCOMPLETE_MAX_AGE_MS);
  for (const id of [...doomed, ...stale]) {
    signal.throwIfAborted();
    await removeFolderManifestFirst(repo, `${id}/`, globalsKey(id, GLOBALS_FILE.manifest), signal);
  }
  return [...doomed, ...stale];
}

/** pg_dumpall's failures as the dump's, with the one hint that differs: password hashes need a superuser. */
function classifyGlobalsError(error: unknown, where: string, rolePasswords: boolean): ApplicationFailure {
  if (error instanceof ApplicationFailure) return error;
  if (rolePasswords && error instanceof ToolError && /permission denied .*pg_authid/i.test(error.stderr)) {
    return failure('PermissionDenied', error.message, 'reading role password hashes (pg_authid) needs a superuser: connect as one, or set rolePasswords: false (pg_dumpall --no-role-passwords)');
  }
  return classifyToolError(error, where);
}
