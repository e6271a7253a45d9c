import type pg from 'pg';
import { databaseInfo, databasesLike, dropDatabase } from './admin.js';
import { parsePreRestoreName } from './database-names.js';

// `<db>__pre_restore_<ts>` databases: what a swap restore keeps of the old database. They are
// listed by `pgrunbook pre-restore list` and dropped only by an explicit command or, when
// restore.keepPreRestoreDays is set, by a later restore that names each one in its report.

export interface PreRestoreDatabase {
  name: string;
  /** When the swap made it. */
  at: string;
  sizeBytes: number;
}

export async function listPreRestoreDatabases(client: pg.ClientBase, database: string): Promise<PreRestoreDatabase[]> {
  const out: PreRestoreDatabase[] = [];
  for (const name of await databasesLike(client, `${escapeLike(database)}\\_\\_pre\\_restore\\_%`)) {
    const parsed = parsePreRestoreName(name);
    if (parsed?.database !== database) continue;
    out.push({ name, at: parsed.at.toISOString(), sizeBytes: (await databaseInfo(client, name))?.sizeBytes ?? 0 });
  }
  return out.sort((a, b) => a.at.localeCompare(b.at));
}

/** Drops the ones older than `olderThanDays`, except `keep`; returns the names dropped. */
export async function prunePreRestoreDatabases(client: pg.ClientBase, database: string, olderThanDays: number, keep: readonly string[] = [], now = Date.now()): Promise<string[]> {
  const cutoff = now - olderThanDays * 86_400_000;
  const dropped: string[] = [];
  for (const old of await listPreRestoreDatabases(client, database)) {
    if (keep.includes(old.name) || Date.parse(old.at) > cutoff) continue;
    if (await dropDatabase(client, old.name)) dropped.push(old.name);
  }
  return dropped;
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, '\\$&');
}
