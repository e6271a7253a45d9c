import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { ageEncrypter } from '../encryption/age.js';
import { ChecksumStream } from '../repository/checksum-stream.js';
import type { Repository } from '../repository/types.js';
import { finished, spawnTool } from '../process/run.js';
import { libpqEnv, type ConnectionParams } from './connection.js';
import { storeToolOutput } from './dump.js';
import { failure } from './errors.js';
import type { ClientTools } from './tools.js';

// `pg_dumpall --globals-only`: the roles, role memberships, role settings and tablespaces of a
// server, which no pg_dump of a single database carries. A restore onto a fresh server needs them
// first (`psql -f globals.sql`), or every GRANT and OWNER TO in the database dumps fails.

/** What pg_dumpall writes first and last; a file without both was cut short. */
const FIRST_LINE = '--\n-- PostgreSQL database cluster dump\n--\n';
const COMPLETE_MARKER = '-- PostgreSQL database cluster dump complete';

export interface GlobalsDumpRequest {
  params: ConnectionParams;
  tools: ClientTools;
  repository: Repository;
  key: string;
  /**
   * true: role password hashes are dumped (pg_authid: superusers only). false: --no-role-passwords.
   */
  rolePasswords: boolean;
  /** age recipients: the stored file is encrypted to them as it streams. */
  encryptTo?: string[];
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

/** What the SQL says, read as it streams: the manifest records it and verification checks it. */
export interface GlobalsContent {
  /** `CREATE ROLE` statements: one per role on the server. */
  roles: number;
  /** `CREATE TABLESPACE` statements (pg_default and pg_global are never dumped). */
  tablespaces: number;
  /** Role password hashes in the file (`PASSWORD 'SCRAM-SHA-256$...'` or md5...). */
  passwordHashes: number;
  /** Bytes of SQL (before encryption). */
  sqlBytes: number;
  /** pg_dumpall's header and its "dump complete" trailer are both there. */
  complete: boolean;
}

export interface GlobalsDumpOutcome {
  /** Stored bytes (encrypted when encrypting). */
  size: number;
  sha256: string;
  content: GlobalsContent;
}

/** pg_dumpall of the same directory as the pg_dump chosen for the server's major version. */
export function pgDumpallOf(tools: ClientTools): string {
  const path = join(tools.dir, 'pg_dumpall');
  if (!existsSync(path)) {
    throw failure('VersionIncompatible', `no pg_dumpall next to pg_dump in ${tools.dir}`, 'install the full PostgreSQL client tools (Debian: apt-get install postgresql-client), or point pgBinDir at a directory that has pg_dumpall');
  }
  return path;
}

/** pg_dumpall's arguments. Never a secret: the password reaches it through libpq's environment. */
export function globalsArgs(params: ConnectionParams, rolePasswords: boolean): string[] {
  return [
    '--globals-only',
    // pg_dumpall defaults to the database "postgres" (then template1), which a managed service or
    // a restricted role may not be allowed to connect to; the configured database always is.
    `--database=${params.database}`,
    '--no-password',
    // Without password hashes pg_dumpall reads pg_roles instead of pg_authid, so a non-superuser
    // (and managed services such as RDS or Cloud SQL, where nobody is superuser) can dump the
    // globals; and the hashes (offline-crackable, and a login credential wherever md5 is still
    // accepted) stay out of the repository. Operators set rolePasswords: true to carry them.
    ...(rolePasswords ? [] : ['--no-role-passwords']),
  ];
}

/**
 * Streams `pg_dumpall --globals-only` into the repository: counted on the way (roles,
 * tablespaces, the completion trailer), encrypted when asked, sha256 of the stored bytes. The
 * write publishes only if pg_dumpall exits 0 and its output is complete; otherwise nothing is
 * visible under the key.
 */
export async function dumpGlobalsToRepository(request: GlobalsDumpRequest): Promise<GlobalsDumpOutcome> {
  const encrypter = request.encryptTo ? await ageEncrypter(request.encryptTo) : undefined;
  const child = spawnTool(pgDumpallOf(request.tools), globalsArgs(request.params, request.rolePasswords), { env: libpqEnv(request.params), cancelSignal: request.signal });
  const scanner = new GlobalsScanner();
  const checksum = new ChecksumStream({
    beforeEnd: async () => {
      await finished('pg_dumpall', child);
      // An exit code of 0 with a cut-short stream must not publish either.
      if (!scanner.content.complete) throw failure('VerificationFailed', 'pg_dumpall --globals-only output is incomplete (no "dump complete" trailer)', 'retry the backup; if it persists, run pg_dumpall --globals-only by hand and look at its stderr');
    },
    onBytes: request.onBytes,
  });
  // pipe() does not forward errors: a failing stage must fail the write, not stall it.
  scanner.once('error', (error) => checksum.destroy(error));
  const size = await storeToolOutput(child, child.stdout.pipe(scanner), encrypter, checksum, request);
  return { size, sha256: checksum.digest(), content: scanner.content };
}

/**
 * A pass-through that reads pg_dumpall's SQL line by line: how many roles and tablespaces it
 * creates, whether it carries password hashes, and whether it is complete. It keeps only the
 * current partial line, never the file.
 */
export class GlobalsScanner extends Transform {
  readonly content: GlobalsContent = { roles: 0, tablespaces: 0, passwordHashes: 0, sqlBytes: 0, complete: false };
  // Chunks end anywhere, also inside a multi-byte character (role names are UTF-8).
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private head = '';
  private lastLine = '';

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.content.sqlBytes += chunk.length;
    this.consume(this.decoder.write(chunk));
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.consume(this.decoder.end());
    if (this.partial) this.line(this.partial);
    this.content.complete = this.head === FIRST_LINE && this.lastLine === COMPLETE_MARKER;
    callback();
  }

  private consume(text: string): void {
    if (this.head.length < FIRST_LINE.length) this.head = (this.head + text).slice(0, FIRST_LINE.length);
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) this.line(line);
  }

  private line(line: string): void {
    if (line.startsWith('CREATE ROLE ')) this.content.roles += 1;
    else if (line.startsWith('CREATE TABLESPACE ')) this.content.tablespaces += 1;
    // ALTER ROLE name WITH ... PASSWORD 'SCRAM-SHA-256$...' (or 'md5...'); a role without a
    // password has no PASSWORD clause at all.
    if (line.startsWith('ALTER ROLE ') && / PASSWORD '(SCRAM-SHA-256\$|md5)/.test(line)) this.content.passwordHashes += 1;
    // The trailer is the marker between two `--` lines; whatever follows it means it was not the end.
    const text = line.trim();
    if (text && text !== '--') this.lastLine = text;
  }
}

/** Reads a (decrypted) globals file to its end and says what it holds. */
export async function scanGlobals(sql: Readable): Promise<GlobalsContent> {
  const scanner = new GlobalsScanner();
  sql.once('error', (error) => scanner.destroy(error));
  for await (const chunk of sql.pipe(scanner)) void chunk;
  return scanner.content;
}
