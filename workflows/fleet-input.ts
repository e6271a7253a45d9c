import { z } from 'zod';

// backupFleet's input: names only (a fleet in the worker's config, or a selector), never
// connections. `temporal workflow start --type backupFleet --input '{"fleet":"nightly"}'` works.

const Id = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected an id from the worker\'s config (lowercase letters, digits, "-", "_")');

export const FleetInput = z
  .object({
    /** A fleet in the config (fleets.<id>); its selector, concurrency and globals are the defaults. */
    fleet: Id.optional(),
    /** Databases: ids matching any glob AND every label. Replaces the fleet's selector; neither: every database. */
    select: z
      .object({
        databases: z.array(z.string().regex(/^[a-z0-9_*?-]{1,63}$/, 'expected a database id or a glob of one, e.g. orders-*')).min(1).optional(),
        labels: z.record(z.string().min(1), z.string()).optional(),
      })
      .strict()
      .optional(),
    /** Database backups at once; default: the fleet's, else 4. */
    concurrency: z.number().int().min(1).max(100).optional(),
    /** Dump each server's roles and tablespaces (pg_dumpall --globals-only); default: the fleet's, else true. */
    globals: z.boolean().optional(),
    /** Label of every database backup; a scheduled run labels them `scheduled`. */
    label: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected a short label of letters, digits, ".", "-", "_" (e.g. pre-upgrade)')
      .optional(),
    requestedBy: z.enum(['cli', 'schedule', 'api']).default('api'),
  })
  .strict();
export type FleetInput = z.input<typeof FleetInput>;

/** What resolveFleet read from the worker's config: every database with its site, every server once. */
export interface FleetPlan {
  fleet: string | null;
  concurrency: number;
  databases: { database: string; taskQueue: string; server: string }[];
  /** Every server (host:port) once, in the order first met; its globals go through one of its databases. */
  servers: string[];
  globals: { enabled: boolean; rolePasswords: boolean; keepLast: number };
  settings: { heartbeatSeconds: number; longStepSeconds: number; retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number } };
}

export type FleetOutcomeStatus = 'succeeded' | 'failed' | 'cancelled';

export interface FleetDatabaseOutcome {
  database: string;
  taskQueue: string;
  status: FleetOutcomeStatus;
  workflowId: string;
  backupId?: string;
  bytes?: number;
  durationMs: number;
  error?: string;
}

export interface FleetGlobalsOutcome {
  server: string;
  database: string;
  taskQueue: string;
  status: FleetOutcomeStatus;
  key?: string;
  roles?: number;
  tablespaces?: number;
  error?: string;
}

export interface FleetResult {
  fleet: string | null;
  databases: FleetDatabaseOutcome[];
  globals: FleetGlobalsOutcome[];
  succeeded: number;
  failed: number;
  durationMs: number;
}
