import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ArchiveEncryption, Verification } from './manifest.js';
import type { Repository } from './types.js';
import { readAll } from './types.js';

// Where a server's globals (pg_dumpall --globals-only: roles, memberships, tablespaces) live in a
// repository, beside the databases' `<database>/` folders, `pitr/` and `reports/`:
//
//   globals/<server>/<YYYYMMDDTHHMMSSZ>/globals.sql[.age]   the SQL, as pg_dumpall wrote it
//   globals/<server>/<YYYYMMDDTHHMMSSZ>/manifest.json       written last (GlobalsManifest)
//
// <server> is host and port made safe for file systems and S3 keys (serverFolder). One folder per
// server: every database of a server shares its roles, so a fleet dumps them once per server.
// A database with the id "globals" keeps its backups apart: a backup id has exactly one slash
// (`globals/20261121T020000Z`), a globals folder two.

export const GLOBALS_FOLDER = 'globals';

export const GLOBALS_FILE = {
  sql: 'globals.sql',
  /** Written last: a folder without it is incomplete and never listed. */
  manifest: 'manifest.json',
} as const;

/**
 * The folder name of a server: `db.internal-5432`, `127.0.0.1-5432`. Characters a file system or
 * an S3 key would trip over become `_`, and then (the name no longer says exactly which host it
 * was) a short hash of the host keeps two such hosts apart: `_var_run_postgresql_1a2b3c4d-5432`.
 */
export function serverFolder(host: string, port: number): string {
  const lower = host.toLowerCase();
  const safe = lower.replace(/[^a-z0-9.-]/g, '_').replace(/^[.-]/, '_');
  const exact = safe === lower && !safe.includes('..') && safe.length <= 120;
  const name = exact ? safe : `${safe.replace(/\.\./g, '_').slice(0, 120)}_${createHash('sha256').update(host).digest('hex').slice(0, 8)}`;
  return `${name}-${port}`;
}

const SERVER_FOLDER = /^[a-z0-9_][a-z0-9._-]{0,130}-\d{1,5}$/;
const STAMP = /^\d{8}T\d{6}Z$/;

/** `globals/<server>/<stamp>`: the id of one globals backup (its folder, without the slash). */
export const globalsId = (server: string, stamp: string): string => `${GLOBALS_FOLDER}/${server}/${stamp}`;
export const globalsKey = (id: string, name: string): string => `${id}/${name}`;
export const globalsServerPrefix = (server: string): string => `${GLOBALS_FOLDER}/${server}/`;

export function parseGlobalsId(id: string): { server: string; timestamp: string } | undefined {
  const [folder, server, stamp, ...rest] = id.split('/');
  if (folder !== GLOBALS_FOLDER || !server || !stamp || rest.length > 0) return undefined;
  if (!SERVER_FOLDER.test(server) || !STAMP.test(stamp)) return undefined;
  return { server, timestamp: stamp };
}

/** manifest.json of a globals backup: what was dumped, from where, and that it was verified. */
export const GlobalsManifest = z.object({
  manifestVersion: z.literal(1),
  kind: z.literal('globals'),
  id: z.string(),
  repository: z.string(),
  /** host:port as configured for `database` (no credentials). */
  server: z.string(),
  serverVersion: z.string(),
  /** The configured database pgrunbook connected through. */
  database: z.string(),
  /** The stored file's name in the folder: globals.sql or globals.sql.age. */
  file: z.string(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Bytes of SQL before encryption. */
  sqlBytes: z.number().int().nonnegative(),
  roles: z.number().int().nonnegative(),
  tablespaces: z.number().int().nonnegative(),
  /** Role password hashes were dumped (rolePasswords: true); false: --no-role-passwords. */
  rolePasswords: z.boolean(),
  encrypted: z.boolean(),
  /** Absent or null: stored in the clear. Recipients only, never a key. */
  encryption: ArchiveEncryption.nullable(),
  pgDumpallVersion: z.string(),
  /** The fleet run's start: it names the folder, so a retried activity writes the same one. */
  startedAt: z.string(),
  finishedAt: z.string(),
  verification: Verification,
  pgrunbookVersion: z.string(),
});
export type GlobalsManifest = z.infer<typeof GlobalsManifest>;

export interface GlobalsEntry {
  id: string;
  server: string;
  timestamp: string;
  manifest: GlobalsManifest;
}

/**
 * Complete globals backups (those with a manifest), newest first: of one server, or of every
 * server when `server` is absent. Folders still being written, or left by a writer that died,
 * have no manifest and are not listed.
 */
export async function listGlobals(repository: Repository, server?: string): Promise<GlobalsEntry[]> {
  const objects = await repository.list(server ? globalsServerPrefix(server) : `${GLOBALS_FOLDER}/`);
  const complete = objects
    .filter((object) => object.key.endsWith(`/${GLOBALS_FILE.manifest}`))
    .map((object) => object.key.slice(0, -`/${GLOBALS_FILE.manifest}`.length))
    .filter((id) => parseGlobalsId(id) !== undefined);
  const entries = await Promise.all(
    complete.map(async (id): Promise<GlobalsEntry | undefined> => {
      const parsed = parseGlobalsId(id)!;
      // A manifest that does not parse vouches for nothing: not listed (and so never counted as a kept copy).
      const manifest = await readGlobalsManifest(repository, id).catch(() => undefined);
      return manifest && { id, server: parsed.server, timestamp: parsed.timestamp, manifest };
    }),
  );
  return entries.filter((entry) => entry !== undefined).sort((a, b) => b.timestamp.localeCompare(a.timestamp) || a.server.localeCompare(b.server));
}

/** Folders of a server that have files but no manifest: being written, or orphaned by a writer that died. */
export async function incompleteGlobals(repository: Repository, server: string): Promise<string[]> {
  const folders = new Map<string, boolean>();
  const note = (key: string, isManifest: boolean): void => {
    const id = key.slice(0, key.lastIndexOf('/'));
    if (parseGlobalsId(id)) folders.set(id, folders.get(id) === true || isManifest);
  };
  for (const object of await repository.list(globalsServerPrefix(server))) note(object.key, object.key.endsWith(`/${GLOBALS_FILE.manifest}`));
  for (const write of await repository.listIncompleteWrites(globalsServerPrefix(server))) note(write.key, false);
  return [...folders].filter(([, hasManifest]) => !hasManifest).map(([id]) => id).sort();
}

export async function readGlobalsManifest(repository: Repository, id: string): Promise<GlobalsManifest> {
  const text = (await readAll(repository, globalsKey(id, GLOBALS_FILE.manifest))).toString('utf8');
  return GlobalsManifest.parse(JSON.parse(text));
}
