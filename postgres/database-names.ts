// Names of the databases a restore creates beside the live one. Pure: the restore workflow
// derives them from its start time, so every replay and every retried activity agrees on them.

/** PostgreSQL truncates identifiers beyond 63 bytes (NAMEDATALEN - 1); we refuse instead. */
export const MAX_IDENTIFIER_BYTES = 63;

const SCRATCH = '__restore_';
const PRE_RESTORE = '__pre_restore_';

/** 20261122101500: digits only, so the names never need quoting differently in psql. */
export function restoreStamp(at: Date): string {
  return at.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/** Where a swap restore writes and verifies, while the application still uses the live database. */
export function scratchDatabaseName(database: string, stamp: string): string {
  return `${database}${SCRATCH}${stamp}`;
}

/** What the live database is renamed to by a swap: the safety net, kept until dropped on purpose. */
export function preRestoreDatabaseName(database: string, stamp: string): string {
  return `${database}${PRE_RESTORE}${stamp}`;
}

export interface PreRestoreName {
  database: string;
  stamp: string;
  /** When the swap happened. */
  at: Date;
}

export function parsePreRestoreName(name: string): PreRestoreName | undefined {
  const match = /^(.+)__pre_restore_(\d{14})$/.exec(name);
  if (!match) return undefined;
  const s = match[2]!;
  const at = new Date(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(8, 10)}:${s.slice(10, 12)}:${s.slice(12, 14)}Z`);
  return { database: match[1]!, stamp: s, at };
}

export function isScratchDatabaseName(name: string): boolean {
  return /__restore_\d{14}$/.test(name);
}

export function byteLength(name: string): number {
  // TextEncoder exists in workflow isolates too (no node: import needed).
  return new TextEncoder().encode(name).length;
}
