import { readFileSync } from 'node:fs';

// PostgreSQL's server tools refuse to run as root. A worker (or test) running as root runs
// initdb/pg_ctl as the `postgres` user instead; anyone else runs them as themselves.

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** [file, args] to run a server binary: through `runuser -u postgres --` when root. */
export function asServerUser(asPostgres: boolean, binary: string, args: string[]): [string, string[]] {
  return asPostgres ? ['runuser', ['-u', 'postgres', '--', binary, ...args]] : [binary, args];
}

export function postgresUid(): { uid: number; gid: number } {
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!passwd) {
    throw new Error('running as root but there is no `postgres` user to run the server as\nHINT: create one (`useradd -r postgres`) or run as a non-root user');
  }
  const [, , uid, gid] = passwd.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}
