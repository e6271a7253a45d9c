import { z } from 'zod';
import { AppConfig } from '../app-controllers/schema.js';
import { CALENDAR_FIELDS, cronFields, parseCalendar, parseCalendarField } from '../schedules/calendar.js';

// The pgrunbook.yaml schema. Types share their schema's name. Secrets are never values in this
// file: they are names of environment variables (`*Env`) or `${VAR}` references in URLs, resolved
// inside the worker only.

const Id = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected an id of lowercase letters, digits, "-" and "_" (at most 63 characters)');

const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected the name of an environment variable');

const Seconds = z.number().int().positive();

const TaskQueue = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, 'expected a task queue name (letters, digits, ".", "-", "_"), e.g. pgrunbook-eu');

/** Kubernetes-style label keys and values, so selectors read the same as kubectl's. */
const LabelKey = z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/, 'expected a label key (letters, digits, ".", "-", "_", "/"), e.g. tier');
const LabelValue = z.string().regex(/^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/, 'expected a label value (letters, digits, ".", "-", "_"), e.g. prod');

export const TemporalConfig = z
  .object({
    address: z.string().min(1).default('localhost:7233'),
    namespace: z.string().min(1).default('default'),
    /** The control task queue: fleets run here, and every database without a taskQueue of its own. */
    taskQueue: TaskQueue.default('pgrunbook'),
    /** mTLS or server-TLS. File paths; the files are read by the process that connects. */
    tls: z
      .object({
        serverNameOverride: z.string().optional(),
        caFile: z.string().optional(),
        certFile: z.string().optional(),
        keyFile: z.string().optional(),
      })
      .strict()
      .optional(),
    /** Name of the environment variable holding a Temporal Cloud API key (implies TLS). */
    apiKeyEnv: EnvName.optional(),
    /**
     * AES-256-GCM payload codec (encryption/payload-codec.ts): workflow inputs, results and
     * failure messages are encrypted in Temporal's history. The 32-byte key (base64 or hex) is in
     * the named environment variable of every worker and client.
     */
    payloadCodec: z.object({ keyEnv: EnvName }).strict().optional(),
  })
  .strict();
export type TemporalConfig = z.infer<typeof TemporalConfig>;

/** An age X25519 recipient as `age-keygen -y` prints it (encryption/age.ts's AGE_RECIPIENT). */
const AgeRecipient = z
  .string()
  .refine((value) => !value.startsWith('AGE-SECRET-KEY-'), 'this is a secret key (an age identity), which never belongs in the config: put it in a file (identityFile) or an environment variable (identityEnv) and list its public key here (age-keygen -y key.txt)')
  .refine((value) => value.startsWith('AGE-SECRET-KEY-') || /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/.test(value), 'expected an age X25519 recipient: "age1" and 58 more characters, as printed by age-keygen');

/**
 * Client-side encryption of a repository's backups in the age format (decrypts with the stock
 * `age` CLI). Recipients (public keys) may be in the config; identities (secret keys) only in a
 * file or an environment variable, and only on workers that restore, drill or verify.
 */
export const EncryptionConfig = z
  .object({
    recipients: z.array(AgeRecipient).min(1).optional(),
    /** A file of recipients, one per line (`age -R` format); relative to the config file. */
    recipientsFile: z.string().min(1).optional(),
    /** An age identity file (age-keygen's output); relative to the config file. */
    identityFile: z.string().min(1).optional(),
    /** Name of an environment variable holding the identity (AGE-SECRET-KEY-1...). */
    identityEnv: EnvName.optional(),
  })
  .strict()
  .superRefine((encryption, ctx) => {
    if (!encryption.recipients && !encryption.recipientsFile) ctx.addIssue({ code: 'custom', path: ['recipients'], message: 'expected recipients (age1... public keys) or recipientsFile: whom new backups are encrypted to' });
    if (encryption.identityFile && encryption.identityEnv) ctx.addIssue({ code: 'custom', path: ['identityEnv'], message: 'give either identityFile or identityEnv, not both' });
  });
export type EncryptionConfig = z.infer<typeof EncryptionConfig>;

export const LocalRepositoryConfig = z
  .object({
    type: z.literal('local'),
    /** Directory holding backups; relative paths are relative to the config file. */
    path: z.string().min(1),
    encryption: EncryptionConfig.optional(),
  })
  .strict();
export type LocalRepositoryConfig = z.infer<typeof LocalRepositoryConfig>;

export const S3RepositoryConfig = z
  .object({
    type: z.literal('s3'),
    bucket: z.string().min(3),
    prefix: z.string().default(''),
    /** Custom endpoint (SeaweedFS, MinIO, ...); omit for AWS. */
    endpoint: z.url().optional(),
    region: z.string().min(1).default('us-east-1'),
    forcePathStyle: z.boolean().default(false),
    accessKeyIdEnv: EnvName.default('AWS_ACCESS_KEY_ID'),
    secretAccessKeyEnv: EnvName.default('AWS_SECRET_ACCESS_KEY'),
    sessionTokenEnv: EnvName.optional(),
    /** Multipart part size. Memory held per upload is about partSizeMiB x queueSize. */
    partSizeMiB: z.number().int().min(5).max(512).default(8),
    queueSize: z.number().int().min(1).max(16).default(2),
    encryption: EncryptionConfig.optional(),
  })
  .strict();
export type S3RepositoryConfig = z.infer<typeof S3RepositoryConfig>;

export const RepositoryConfig = z.discriminatedUnion('type', [LocalRepositoryConfig, S3RepositoryConfig]);
export type RepositoryConfig = z.infer<typeof RepositoryConfig>;

export const Compression = z
  .string()
  .regex(/^(none|gzip(:[1-9])?|zstd(:([1-9]|1[0-9]|2[0-2]))?|lz4(:([1-9]|1[0-2]))?)$/, 'expected none, gzip[:1-9], zstd[:1-22] or lz4[:1-12]');

export const DumpOptions = z
  .object({
    /** custom: pg_dump -Fc (seed 000); plain: SQL with --clean --if-exists, gzipped (seeds 001, 004). */
    format: z.enum(['custom', 'plain']).default('custom'),
    /** Compression. gzip:6 is the seeds' -Z6. zstd and lz4 need pg_dump 16+. */
    compression: Compression.default('gzip:6'),
    excludeSchemas: z.array(z.string().min(1)).default([]),
    excludeTables: z.array(z.string().min(1)).default([]),
    /** Exact per-table row counts taken in the dump's own snapshot, for restore verification. */
    rowCounts: z.boolean().default(true),
  })
  .strict();
export type DumpOptions = z.infer<typeof DumpOptions>;

export const SmokeQuery = z
  .object({
    /** Shown in status, errors and the report, e.g. "seeded user present". */
    name: z.string().min(1),
    /** One statement; the first column of the first row is compared with `expect`. */
    sql: z.string().min(1),
    /** Expected value, compared as text (true/false, numbers, strings). Omitted: the query must just return a row. */
    expect: z.union([z.string(), z.number(), z.boolean()]).optional(),
  })
  .strict();
export type SmokeQuery = z.infer<typeof SmokeQuery>;

export const RestoreOptions = z
  .object({
    /** swap: restore beside the live database, verify, then rename (short downtime); in-place: drop, recreate, restore (seeds). */
    strategy: z.enum(['swap', 'in-place']).default('swap'),
    /** A restore over an existing database waits for an approve/reject Update. */
    approval: z
      .object({ required: z.boolean().default(true), timeoutMinutes: z.number().positive().default(60) })
      .strict()
      .default({ required: true, timeoutMinutes: 60 }),
    /** auto: on for in-place (the undo needs it), off for swap (the renamed old database is the safety net). */
    safetyBackup: z.enum(['auto', 'always', 'never']).default('auto'),
    /** pg_restore -j for custom archives: N > 1 restores from a seekable local file (S3 archives are downloaded first). */
    jobs: z.number().int().min(1).max(64).default(2),
    noOwner: z.boolean().default(false),
    noPrivileges: z.boolean().default(false),
    /** pg_restore --role / psql SET ROLE: the role that owns what is restored. */
    role: z.string().min(1).optional(),
    /** Database to connect to for CREATE/DROP/ALTER DATABASE and for terminating connections. */
    maintenanceDatabase: z.string().min(1).default('postgres'),
    smokeQueries: z.array(SmokeQuery).default([]),
    analyze: z.boolean().default(true),
    /** How long to wait for existing connections to go after terminating them. */
    drainTimeoutSeconds: Seconds.default(60),
    /** Drop `<db>__pre_restore_<ts>` databases older than this after a successful restore; unset keeps them until dropped by hand. */
    keepPreRestoreDays: z.number().positive().optional(),
    /** When a step still fails after its retries: ask an operator (resolveStep Update) or abort and undo at once. */
    onStepFailure: z.enum(['ask', 'abort']).default('ask'),
    /** How long an operator decision may take before the restore aborts and undoes. */
    decisionTimeoutHours: z.number().positive().default(24),
    /** Where archives are downloaded for pg_restore -j; default the OS temp dir. */
    tempDir: z.string().min(1).optional(),
  })
  .strict();
export type RestoreOptions = z.infer<typeof RestoreOptions>;

/** One calendar field: a number or text ("*", "1-7", "*\/15", "1,15", SATURDAY, JAN); checked per field below. */
const CalendarField = z.union([z.number().int().nonnegative(), z.string().min(1)]);

/**
 * When a schedule fires. `calendar` fields AND-match, as in Temporal's calendar specs: the default
 * drill, dayOfMonth "1-7" and dayOfWeek "SATURDAY", is the first Saturday of the month. Values are
 * a number, "*", a range "1-7", a step "*\/15" or a comma list.
 */
export const CalendarConfig = z
  .object({
    minute: CalendarField.default(0),
    hour: CalendarField.default(0),
    dayOfMonth: CalendarField.default('*'),
    month: CalendarField.default('*'),
    dayOfWeek: CalendarField.default('*'),
  })
  .strict()
  .superRefine((calendar, ctx) => {
    for (const field of CALENDAR_FIELDS) {
      const parsed = parseCalendarField(field, calendar[field]);
      if (!parsed.ok) ctx.addIssue({ code: 'custom', path: [field], message: parsed.message });
    }
  });
export type CalendarConfig = z.infer<typeof CalendarConfig>;

export const ScheduleConfig = z
  .object({
    /** false: `schedules apply` deletes this schedule if it exists. */
    enabled: z.boolean().default(true),
    calendar: CalendarConfig.optional(),
    /** Five-field cron, as an alternative to `calendar`; one that sets both day-of-month and day-of-week is refused. */
    cron: z.string().min(1).optional(),
    /** IANA time zone the calendar or cron is read in. */
    timezone: z.string().min(1).default('UTC'),
    /** Random delay up to this long, so many databases do not all dump at the same second. */
    jitterMinutes: z.number().min(0).default(0),
    /** After a Temporal outage, actions missed less than this long ago still run; older ones are skipped. */
    catchupWindowMinutes: z.number().positive().default(60),
    /** What a run due while the previous one still runs does: skip (default), buffer-one, allow-all. */
    overlap: z.enum(['skip', 'buffer-one', 'allow-all']).default('skip'),
    /** Created paused. `schedules apply` never undoes an operator's pause/unpause; it sets the state only when this value changes. */
    paused: z.boolean().default(false),
  })
  .strict()
  .superRefine((schedule, ctx) => {
    if (schedule.calendar && schedule.cron) ctx.addIssue({ code: 'custom', path: ['cron'], message: 'give either calendar or cron, not both' });
    if (schedule.cron) {
      const problem = cronProblem(schedule.cron);
      if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
      const fields = problem ? null : cronFields(schedule.cron);
      const parsed = fields ? parseCalendar(fields) : null;
      if (parsed && !parsed.ok) {
        for (const p of parsed.problems) ctx.addIssue({ code: 'custom', path: ['cron'], message: `${p.field} field: ${p.message}` });
      }
    }
    if (!isTimeZone(schedule.timezone)) {
      ctx.addIssue({ code: 'custom', path: ['timezone'], message: `unknown time zone "${schedule.timezone}"; expected an IANA name such as UTC or Europe/Berlin` });
    }
  });

export type ScheduleConfig = z.infer<typeof ScheduleConfig>;

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a cron string cannot be used, or null. Classic cron fires when day-of-month OR day-of-week
 * matches; Temporal fires only when both match. "0 10 1 * 6" (seed 001's "first Saturday") thus
 * means "the 1st, when it is a Saturday" here and something else in crontab: refused either way.
 */
export function cronProblem(cron: string): string | null {
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5) return `expected five cron fields (minute hour day-of-month month day-of-week), got ${fields.length} in "${cron}"`;
  const [, , dayOfMonth, , dayOfWeek] = fields;
  if (dayOfMonth !== '*' && dayOfMonth !== '?' && dayOfWeek !== '*' && dayOfWeek !== '?') {
    return (
      `"${cron}" sets both day-of-month (${dayOfMonth}) and day-of-week (${dayOfWeek}): crontab fires when either matches, Temporal only when both do, ` +
      `so it means something different from what it says in one of them. HINT: for "the first Saturday" write calendar: {dayOfMonth: "1-7", dayOfWeek: SATURDAY, hour: 10}`
    );
  }
  return null;
}

/**
 * A schedule with defaults for its kind: omitted entirely, it is the default; given without
 * `calendar` or `cron` (say, only `jitterMinutes`), it keeps the default timing.
 */
function scheduleWithDefaults(defaults: { calendar: Record<string, number | string>; catchupWindowMinutes?: number }) {
  return z.preprocess((value) => {
    if (value === undefined) return defaults;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
    const given = value as Record<string, unknown>;
    const { calendar, ...policies } = defaults;
    return given.calendar === undefined && given.cron === undefined ? { calendar, ...policies, ...given } : { ...policies, ...given };
  }, ScheduleConfig);
}

export const DatabaseSchedules = z
  .object({
    /** Nightly backup, 02:00 UTC (seed 001). */
    backup: scheduleWithDefaults({ calendar: { hour: 2, minute: 0 } }),
    /** Monthly restore drill on the first Saturday, 10:00 UTC (seed 001 §5): day 1-7 AND Saturday. */
    drill: scheduleWithDefaults({ calendar: { dayOfMonth: '1-7', dayOfWeek: 'SATURDAY', hour: 10, minute: 0 }, catchupWindowMinutes: 360 }),
    /** Daily prune, 03:00 UTC (after the 02:00 backup). Only applied when `retention` is configured. */
    prune: scheduleWithDefaults({ calendar: { hour: 3, minute: 0 } }),
  })
  .strict();
export type DatabaseSchedules = z.infer<typeof DatabaseSchedules>;

/** A drill server: connection fields as for a database; drills create and drop scratch databases on it. */
export const DrillServerTarget = z
  .object({
    type: z.literal('server'),
    url: z.string().min(1).optional(),
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    user: z.string().min(1).optional(),
    passwordEnv: EnvName.optional(),
    sslmode: z.enum(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
    /** Database to connect to for CREATE/DROP DATABASE. */
    maintenanceDatabase: z.string().min(1).default('postgres'),
  })
  .strict()
  .superRefine((target, ctx) => {
    if (!target.url && !target.host) ctx.addIssue({ code: 'custom', path: ['host'], message: 'a drill server needs url or host, e.g. url: postgres://drill:${DRILL_PASSWORD}@drill-host:5432/postgres' });
    if (target.url && (target.host || target.port || target.user)) ctx.addIssue({ code: 'custom', path: ['url'], message: 'give either url or discrete host/port/user fields, not both' });
  });
export type DrillServerTarget = z.infer<typeof DrillServerTarget>;

/** A throwaway cluster: initdb from the worker host's PostgreSQL binaries, on a free port, removed afterwards. */
export const DrillClusterTarget = z
  .object({
    type: z.literal('cluster'),
    /** Directory of initdb/pg_ctl; default: the newest PostgreSQL server binaries on the worker host. */
    pgBinDir: z.string().min(1).optional(),
    /** Parent directory for the cluster's data; default the OS temp dir. */
    dir: z.string().min(1).optional(),
  })
  .strict();
export type DrillClusterTarget = z.infer<typeof DrillClusterTarget>;

export const DrillOptions = z
  .object({
    target: z.discriminatedUnion('type', [DrillClusterTarget, DrillServerTarget]).default({ type: 'cluster' }),
    /** Seed 002: write a marker row into a dedicated table, take a fresh backup, and check the row survived. */
    canary: z
      .object({ enabled: z.boolean().default(false), table: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'expected an unqualified lowercase table name').default('pgrunbook_canary') })
      .strict()
      .default({ enabled: false, table: 'pgrunbook_canary' }),
    /** Smoke queries for drills, run after restore.smokeQueries. */
    smokeQueries: z.array(SmokeQuery).default([]),
    /** Every smoke query (and the row counts) must answer within this many milliseconds. */
    queryBudgetMs: z.number().int().positive().default(5000),
    /** pg_restore -j for drills. */
    jobs: z.number().int().min(1).max(64).default(2),
  })
  .strict();
export type DrillOptions = z.infer<typeof DrillOptions>;

const BackupLabel = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected a backup label (letters, digits, ".", "-", "_"), e.g. pre-upgrade');

/** Keep rules for the backups with one label (seed 003: pre-upgrade keeps 2, on-demand keeps 5). */
export const LabelRetention = z
  .object({
    keepLast: z.number().int().min(1).optional(),
    maxAgeDays: z.number().positive().optional(),
  })
  .strict();

/**
 * Which backups a prune deletes (repository/retention.ts). Absent: nothing is ever deleted. A
 * verified backup is kept if ANY rule of its series keeps it; the newest verified backup and
 * backups a running restore or drill uses are never deleted.
 */
export const RetentionConfig = z
  .object({
    /** The N newest verified backups (seed 002: 7). */
    keepLast: z.number().int().min(1).optional(),
    /** Verified backups younger than this (seed 004: 30). */
    maxAgeDays: z.number().positive().optional(),
    /** Grandfather-father-son (seed 000: 7 daily, 4 weekly, 6 monthly): the newest backup of each of the N newest UTC days, ISO weeks, months, years. */
    gfs: z
      .object({
        daily: z.number().int().nonnegative().default(0),
        weekly: z.number().int().nonnegative().default(0),
        monthly: z.number().int().nonnegative().default(0),
        yearly: z.number().int().nonnegative().default(0),
      })
      .strict()
      .optional(),
    /** Rules per label; they replace the rules above for backups with that label. Unlabelled, `scheduled` and other labels use the rules above. */
    labels: z.record(BackupLabel, LabelRetention).default({}),
    /** Failed and cancelled backups are deleted this many days after they started. */
    failedMaxAgeDays: z.number().nonnegative().default(7),
    /** A folder without manifest (orphaned partial upload, half-deleted backup) is deleted this many hours after its backup started, unless a running backup writes it. */
    incompleteMaxAgeHours: z.number().nonnegative().default(24),
  })
  .strict();
export type RetentionConfig = z.infer<typeof RetentionConfig>;

export const DatabaseConfig = z
  .object({
    /** postgres://user:${DB_PASSWORD}@host:5432/dbname?sslmode=require; ${VAR} is substituted in the worker. */
    url: z.string().min(1).optional(),
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    user: z.string().min(1).optional(),
    dbname: z.string().min(1).optional(),
    passwordEnv: EnvName.optional(),
    sslmode: z.enum(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
    /** Repository id; defaults to defaults.repository, or the only repository. */
    repository: Id.optional(),
    dump: DumpOptions.default(DumpOptions.parse({})),
    /** Query returning one value: the schema version (e.g. SELECT version_num FROM alembic_version). */
    schemaVersionQuery: z.string().min(1).optional(),
    /** Directory of pg_dump/pg_restore/psql to use instead of automatic selection. */
    pgBinDir: z.string().min(1).optional(),
    restore: RestoreOptions.default(RestoreOptions.parse({})),
    /** The application writing to this database, stopped around a restore. */
    app: AppConfig.default({ type: 'none' }),
    drill: DrillOptions.default(DrillOptions.parse({})),
    schedules: DatabaseSchedules.default(DatabaseSchedules.parse({})),
    /** Which backups `pruneBackups` deletes; absent: none (retention is off). */
    retention: RetentionConfig.optional(),
    /**
     * The task queue of this database's site: its backups, restores, drills and prunes (workflows
     * and every activity) run on a worker polling it, next to the database. Default:
     * temporal.taskQueue.
     */
    taskQueue: TaskQueue.optional(),
    /** Free-form labels that fleets select on, e.g. {tier: prod, team: payments}. */
    labels: z.record(LabelKey, LabelValue).default({}),
  })
  .strict()
  .superRefine((db, ctx) => {
    if (db.url && (db.host || db.dbname || db.port || db.user)) {
      ctx.addIssue({ code: 'custom', message: 'give either url or discrete host/port/user/dbname fields, not both' });
    }
    if (!db.url && !db.dbname) {
      ctx.addIssue({ code: 'custom', message: 'expected a connection: url, or dbname with host/port/user', path: ['url'] });
    }
  });
export type DatabaseConfig = z.infer<typeof DatabaseConfig>;

export const ClusterSchedules = z
  .object({
    /** Weekly base backup, Sunday 01:00 UTC; with retention configured it also prunes old base backups and their WAL. */
    basebackup: scheduleWithDefaults({ calendar: { dayOfWeek: 'SUNDAY', hour: 1, minute: 0 } }),
  })
  .strict();
export type ClusterSchedules = z.infer<typeof ClusterSchedules>;

/**
 * A PostgreSQL cluster with continuous WAL archiving and base backups (point-in-time recovery).
 * WAL belongs to a cluster, not a database: `database` names the configured database whose
 * connection reaches the server (a superuser or a REPLICATION role for pg_basebackup), whose
 * application is stopped around a replace-the-cluster recovery, and whose smoke queries check
 * the recovered server.
 */
export const ClusterConfig = z
  .object({
    database: Id,
    /** Repository for WAL and base backups; defaults to the database's repository. */
    repository: Id.optional(),
    /**
     * The server's data directory (PGDATA), as seen by the worker. Needed only to replace the
     * cluster in place (pointInTimeRestore mode "replace"), by a worker on the database host.
     */
    dataDirectory: z.string().min(1).optional(),
    /** Directory of the server binaries (postgres, pg_ctl) for recovered clusters; default: the newest installed. */
    pgBinDir: z.string().min(1).optional(),
    wal: z
      .object({
        /** none, gzip[:1-9] or zstd[:1-19] (default zstd:3); stored segments decompress with stock gunzip/zstd. */
        compression: z
          .string()
          .regex(/^(none|gzip(:[1-9])?|zstd(:([1-9]|1[0-9]))?)$/, 'expected none, gzip[:1-9] or zstd[:1-19]')
          .default('zstd:3'),
        /**
         * How many further completed segments (pg_wal/archive_status/*.ready) each wal-push also
         * archives, in parallel, so that PostgreSQL's next calls find them done (pgBackRest's
         * archive-async). 0: only the segment PostgreSQL asked for.
         */
        pushAhead: z.number().int().min(0).max(32).default(0),
        /**
         * How many following segments each wal-fetch also fetches (in parallel, checked) into
         * pg_wal/.pgrunbook-prefetch/, so a recovery's next calls find them there at once
         * (pgBackRest's archive-get queue). 0: only the file PostgreSQL asked for.
         */
        fetchAhead: z.number().int().min(0).max(32).default(8),
      })
      .strict()
      .default({ compression: 'zstd:3', pushAhead: 0, fetchAhead: 8 }),
    basebackup: z
      .object({
        compression: z
          .string()
          .regex(/^(none|gzip(:[1-9])?|zstd(:([1-9]|1[0-9]))?)$/, 'expected none, gzip[:1-9] or zstd[:1-19]')
          .default('zstd:3'),
        /** pg_basebackup --checkpoint: fast (default, the backup starts at once) or spread. */
        checkpoint: z.enum(['fast', 'spread']).default('fast'),
        /** pg_basebackup --max-rate, e.g. "100M"; absent: unthrottled. */
        maxRate: z.string().regex(/^\d+[kM]?$/, 'expected a rate such as 32768, 500k or 100M').optional(),
      })
      .strict()
      .default({ compression: 'zstd:3', checkpoint: 'fast' }),
    /** Which base backups `pruneBaseBackups` deletes, with the WAL only they needed; absent: none. */
    retention: z
      .object({
        /** The newest N verified base backups are kept. */
        keepLast: z.number().int().min(1).optional(),
        /** Base backups younger than this are kept. */
        maxAgeDays: z.number().positive().optional(),
      })
      .strict()
      .refine((r) => r.keepLast !== undefined || r.maxAgeDays !== undefined, 'expected keepLast and/or maxAgeDays')
      .optional(),
    schedules: ClusterSchedules.default(ClusterSchedules.parse({})),
    restore: z
      .object({
        /**
         * Parent directory of recovered data directories (mode "new", the default); default: beside
         * dataDirectory, else the system temp directory.
         */
        dir: z.string().min(1).optional(),
        /** Port of a recovered cluster in mode "new"; default: a free port. */
        port: z.number().int().min(1).max(65535).optional(),
        /** How long recovery may take to reach its target before the step fails. */
        recoveryTimeoutMinutes: z.number().positive().default(240),
        /** How long a recovered cluster waits for promote or discard (mode "new"). */
        decisionTimeoutHours: z.number().positive().default(72),
        /**
         * restore_command's program, as the recovered server runs it; default: this worker's own
         * `node <pgrunbook> wal-fetch`. %f and %p are appended by pgrunbook.
         */
        walFetchCommand: z.string().min(1).optional(),
      })
      .strict()
      .default({ recoveryTimeoutMinutes: 240, decisionTimeoutHours: 72 }),
  })
  .strict();
export type ClusterConfig = z.infer<typeof ClusterConfig>;

export const TimeoutsConfig = z
  .object({
    /** A worker that stops heartbeating for this long is presumed dead and its step is retried elsewhere. */
    heartbeatSeconds: Seconds.default(30),
    /** Upper bound for one dump, verify or upload. */
    longStepHours: z.number().positive().default(24),
  })
  .strict();

export const RetryConfig = z
  .object({
    /** Attempts for steps that fail transiently (connection refused, timeouts). */
    maxAttempts: z.number().int().min(1).max(100).default(5),
    initialIntervalSeconds: z.number().positive().default(1),
    maximumIntervalSeconds: z.number().positive().default(60),
  })
  .strict();

export const NotificationsConfig = z
  .object({
    /**
     * A Slack-compatible incoming webhook. Its URL is a secret: the name of an env var. It is told
     * about failed backups, drill results, restores waiting for a person, and finished restores.
     */
    webhook: z
      .object({
        urlEnv: EnvName,
        events: z.array(z.enum(['backup-failed', 'drill-result', 'restore-waiting', 'restore-finished'])).default(['backup-failed', 'drill-result', 'restore-waiting', 'restore-finished']),
      })
      .strict()
      .optional(),
  })
  .strict();
export type NotificationsConfig = z.infer<typeof NotificationsConfig>;

/**
 * The worker's Prometheus endpoint (/metrics, /healthz). Loopback by default: the endpoint names
 * databases and their timings, so listening on every interface is the operator's choice
 * (host: 0.0.0.0 where Prometheus scrapes from another host or pod).
 */
export const MetricsConfig = z
  .object({
    enabled: z.boolean().default(true),
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(9464),
    /** Also serve the Temporal SDK's runtime metrics (temporal_*) on the same endpoint. */
    temporalRuntime: z.boolean().default(true),
  })
  .strict();
export type MetricsConfig = z.infer<typeof MetricsConfig>;

/**
 * This worker process: which task queues it polls and how much it does at once. The defaults
 * suit a 2-core host: a pg_dump is a process of its own and its server backend another.
 */
export const WorkerConfig = z
  .object({
    /** Task queues this worker polls; default: temporal.taskQueue. `pgrunbook worker --task-queue Q` overrides. */
    taskQueues: z.array(TaskQueue).min(1).optional(),
    /** Activity slots per task queue. Waiting steps (approval, a recovered cluster's decision) do not hold one. */
    maxConcurrentActivities: z.number().int().min(1).max(200).default(8),
    /** Workflow task slots per task queue. */
    maxConcurrentWorkflowTasks: z.number().int().min(2).max(200).default(10),
    /** pg_dump and pg_dumpall processes at once in this worker process, over all its task queues; more wait their turn. */
    maxConcurrentDumps: z.number().int().min(1).max(64).default(2),
    /**
     * On SIGTERM/SIGINT: how long in-flight steps may go on before they are cancelled and Temporal
     * retries them on another worker. Keep it below Kubernetes' terminationGracePeriodSeconds.
     */
    shutdownGraceSeconds: z.number().int().min(0).max(86_400).default(30),
  })
  .strict();
export type WorkerConfig = z.infer<typeof WorkerConfig>;

/**
 * Seconds after worker.shutdownGraceSeconds at which a draining worker stops waiting for steps
 * that ignore their cancellation. A supervisor's kill timeout (docker's stop_grace_period,
 * Kubernetes' terminationGracePeriodSeconds) should be longer than both together.
 */
export const SHUTDOWN_FORCE_MARGIN_SECONDS = 15;

/** Which databases a fleet backs up: ids matching any glob (`*`, `?`) AND every label. Absent: all. */
export const FleetSelector = z
  .object({
    databases: z.array(z.string().regex(/^[a-z0-9_*?-]{1,63}$/, 'expected a database id or a glob of one, e.g. orders-*')).min(1).optional(),
    labels: z.record(LabelKey, LabelValue).optional(),
  })
  .strict();
export type FleetSelector = z.infer<typeof FleetSelector>;

export const GlobalsOptions = z
  .object({
    /** Roles and tablespaces (pg_dumpall --globals-only), once per server in the fleet. */
    enabled: z.boolean().default(true),
    /**
     * Include role password hashes. Off by default: pg_dumpall then reads pg_roles, which works for
     * non-superusers and managed services, and no password hash is stored in the repository.
     */
    rolePasswords: z.boolean().default(false),
    /** Newest globals dumps kept per server. */
    keepLast: z.number().int().min(1).default(30),
  })
  .strict();
export type GlobalsOptions = z.infer<typeof GlobalsOptions>;

/** A fleet: many databases backed up by one `backupFleet` run, as child workflows. */
export const FleetConfig = z
  .object({
    select: FleetSelector.default({}),
    /** Database backups running at once. */
    concurrency: z.number().int().min(1).max(100).default(4),
    globals: GlobalsOptions.default(GlobalsOptions.parse({})),
    /**
     * When the fleet runs by itself (a Temporal Schedule); absent: on demand only. Databases in a
     * scheduled fleet get no nightly backup schedule of their own.
     */
    schedule: scheduleWithDefaults({ calendar: { hour: 2, minute: 0 } }).optional(),
  })
  .strict();
export type FleetConfig = z.infer<typeof FleetConfig>;

export const Config = z
  .object({
    temporal: TemporalConfig.default(TemporalConfig.parse({})),
    repositories: z.record(Id, RepositoryConfig),
    databases: z.record(Id, DatabaseConfig),
    /** Clusters with WAL archiving and base backups (point-in-time recovery). */
    clusters: z.record(Id, ClusterConfig).default({}),
    defaults: z.object({ repository: Id.optional() }).strict().default({}),
    timeouts: TimeoutsConfig.default(TimeoutsConfig.parse({})),
    retry: RetryConfig.default(RetryConfig.parse({})),
    notifications: NotificationsConfig.default({}),
    metrics: MetricsConfig.default(MetricsConfig.parse({})),
    worker: WorkerConfig.default(WorkerConfig.parse({})),
    /** Named fleets: `pgrunbook fleet backup ID` and their schedules. */
    fleets: z.record(Id, FleetConfig).default({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const repositoryIds = Object.keys(config.repositories);
    if (repositoryIds.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['repositories'], message: 'expected at least one repository' });
    }
    if (config.defaults.repository && !config.repositories[config.defaults.repository]) {
      ctx.addIssue({ code: 'custom', path: ['defaults', 'repository'], message: `unknown repository "${config.defaults.repository}"; known: ${repositoryIds.join(', ')}` });
    }
    for (const [id, db] of Object.entries(config.databases)) {
      if (db.repository && !config.repositories[db.repository]) {
        ctx.addIssue({ code: 'custom', path: ['databases', id, 'repository'], message: `unknown repository "${db.repository}"; known: ${repositoryIds.join(', ')}` });
      }
    }
    for (const [id, cluster] of Object.entries(config.clusters)) {
      if (!config.databases[cluster.database]) {
        ctx.addIssue({ code: 'custom', path: ['clusters', id, 'database'], message: `unknown database "${cluster.database}"; known: ${Object.keys(config.databases).join(', ') || '(none)'}` });
      }
      if (cluster.repository && !config.repositories[cluster.repository]) {
        ctx.addIssue({ code: 'custom', path: ['clusters', id, 'repository'], message: `unknown repository "${cluster.repository}"; known: ${repositoryIds.join(', ')}` });
      }
    }
    for (const [id, fleet] of Object.entries(config.fleets)) {
      // A selector that matches nothing is a typo, not an empty fleet.
      if (selectDatabases(config, fleet.select).length === 0) {
        ctx.addIssue({ code: 'custom', path: ['fleets', id, 'select'], message: `matches no configured database; databases: ${Object.keys(config.databases).join(', ') || '(none)'}` });
      }
    }
  });
export type Config = z.infer<typeof Config>;

/** The repository a database backs up to, unless a backup names another. */
export function defaultRepositoryId(config: Config, databaseId: string): string {
  const explicit = config.databases[databaseId]?.repository ?? config.defaults.repository;
  if (explicit) return explicit;
  const [first] = Object.keys(config.repositories);
  if (!first) throw new Error('no repositories configured');
  return first;
}

/** The repository a cluster's WAL and base backups go to. */
export function clusterRepositoryId(config: Config, clusterId: string): string {
  const cluster = config.clusters[clusterId];
  if (!cluster) throw new Error(`unknown cluster "${clusterId}"`);
  return cluster.repository ?? defaultRepositoryId(config, cluster.database);
}

/** `--cluster` given, or the only configured cluster. */
export function chooseClusterId(config: Config, given: string | undefined): string {
  const ids = Object.keys(config.clusters);
  if (given) {
    if (!config.clusters[given]) throw new Error(`unknown cluster "${given}"\nHINT: clusters in the config: ${ids.join(', ') || '(none: add a clusters: section)'}`);
    return given;
  }
  if (ids.length === 1) return ids[0]!;
  throw new Error(ids.length === 0 ? 'no clusters are configured\nHINT: add a clusters: section naming the database whose server archives WAL (README, "Point-in-time recovery")' : `several clusters are configured (${ids.join(', ')})\nHINT: name one with --cluster`);
}

/** The task queue a database's runbooks run on: its site's, or the control queue. */
export function taskQueueOf(config: Pick<Config, 'temporal' | 'databases'>, databaseId: string): string {
  return config.databases[databaseId]?.taskQueue ?? config.temporal.taskQueue;
}

/**
 * The task queue of a runbook about `subject`: a database's site, or for a cluster (base backups,
 * point-in-time recovery) its database's site.
 */
export function runbookTaskQueue(config: Pick<Config, 'temporal' | 'databases' | 'clusters'>, subject: string): string {
  const cluster = config.databases[subject] ? undefined : config.clusters[subject];
  return taskQueueOf(config, cluster ? cluster.database : subject);
}

/** Every task queue the config names: the control queue and the databases' sites. */
export function configuredTaskQueues(config: Pick<Config, 'temporal' | 'databases'>): string[] {
  return [...new Set([config.temporal.taskQueue, ...Object.values(config.databases).flatMap((db) => (db.taskQueue ? [db.taskQueue] : []))])];
}

/**
 * What a fleet request picks: a named fleet's settings (undefined: no such fleet, when one was
 * named), the selector (the request's, else the fleet's, else all) and the database ids. The CLI
 * checks with it before starting; the worker's resolveFleet plans with it.
 */
export function fleetSelection(config: Pick<Config, 'databases' | 'fleets'>, request: { fleet?: string; select?: FleetSelector }): { named: FleetConfig | undefined; select: FleetSelector; databases: string[] } {
  const named = request.fleet ? config.fleets[request.fleet] : undefined;
  const select = request.select ?? named?.select ?? {};
  return { named, select, databases: selectDatabases(config, select) };
}

/** Database ids (sorted) a fleet selector picks: any glob matches the id, and every label matches. */
export function selectDatabases(config: Pick<Config, 'databases'>, select: FleetSelector): string[] {
  const globs = select.databases?.map(globPattern);
  return Object.entries(config.databases)
    .filter(([id, db]) => (!globs || globs.some((glob) => glob.test(id))) && Object.entries(select.labels ?? {}).every(([key, value]) => db.labels[key] === value))
    .map(([id]) => id)
    .sort();
}

function globPattern(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
}
