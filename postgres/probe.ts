import pg from 'pg';
import { pgClientConfig, type ConnectionParams } from './connection.js';

export interface ServerFacts {
  /** e.g. "15.18 (Debian 15.18-0+deb12u1)" */
  serverVersion: string;
  serverVersionNum: number;
  serverMajor: number;
  databaseSizeBytes: number;
}

/** Connects and reads what the backup needs to know before pg_dump starts. */
export async function probeServer(params: ConnectionParams): Promise<ServerFacts> {
  const client = new pg.Client(pgClientConfig(params));
  await client.connect();
  try {
    const { rows } = await client.query<{ v: string; n: string; size: string }>(
      `SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n, pg_database_size(current_database()) AS size`,
    );
    const row = rows[0]!;
    return { ...serverVersionFacts(row.v, row.n), databaseSizeBytes: Number(row.size) };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** What `server_version` and `server_version_num` say: the text, the number, and the major (15 for 150018). */
export function serverVersionFacts(version: string, versionNum: string): Pick<ServerFacts, 'serverVersion' | 'serverVersionNum' | 'serverMajor'> {
  const num = Number(versionNum);
  return { serverVersion: version, serverVersionNum: num, serverMajor: Math.floor(num / 10_000) };
}
