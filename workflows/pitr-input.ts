import { defineSignal } from '@temporalio/workflow';
import { z } from 'zod';
import { ConfigId } from './input-fields.js';

// pointInTimeRestore input: names and a target only (a cluster id from the worker's config), so it
// can be typed into `temporal workflow start --input '{"cluster":"main","target":{"latest":true}}'`.
// Where the archive lives, the server binaries and every credential stay in the worker.

const LSN = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/;
const RESTORE_POINT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const BASE_BACKUP_ID = /^[a-z0-9][a-z0-9_-]{0,62}\/\d{8}T\d{6}Z$/;

// 2026-03-14T14:30:00, 2026-03-14 14:30:00.123456+01:00, 2026-03-14T14:30Z ...: seconds and the
// fraction optional, the zone optional (UTC assumed), nothing else (no "yesterday", no epoch).
const TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$/;

export const TIME_FORMAT_HINT = 'an ISO 8601 time such as 2026-03-14T14:30:00Z or 2026-03-14 14:30:00.123456+01:00; without a zone, UTC is assumed';

export interface PitrTime {
  /** The time as PostgreSQL reads it (microseconds kept): 2026-03-14 14:30:00.123456+00:00. */
  text: string;
  /** The same instant to the millisecond, for comparing with manifests. */
  iso: string;
  /** No zone was given: UTC was assumed. */
  assumedUtc: boolean;
}

/** Parses a target time strictly; undefined when it is not a real time in TIME's shape. */
export function parsePitrTime(raw: string): PitrTime | undefined {
  const m = TIME.exec(raw.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s = '00', fraction = '', zoneRaw] = m;
  const zone = !zoneRaw || /^(z|utc)$/i.test(zoneRaw) ? '+00:00' : zoneRaw.length === 3 ? `${zoneRaw}:00` : zoneRaw.includes(':') ? zoneRaw : `${zoneRaw.slice(0, 3)}:${zoneRaw.slice(3)}`;
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59 || Number(zone.slice(1, 3)) > 15 || Number(zone.slice(4)) > 59) return undefined;
  // The day must exist in that month (no 2026-02-30).
  const probe = new Date(Date.UTC(year, month - 1, day));
  if (probe.getUTCMonth() !== month - 1 || probe.getUTCDate() !== day) return undefined;
  const text = `${y}-${mo}-${d} ${h}:${mi}:${s}${fraction} ${zone}`;
  const millis = fraction ? `.${fraction.slice(1).padEnd(3, '0').slice(0, 3)}` : '.000';
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${millis}${zone}`);
  if (Number.isNaN(at.getTime())) return undefined;
  return { text, iso: at.toISOString(), assumedUtc: !zoneRaw };
}

export const PitrTarget = z
  .object({
    /** Recover up to this time (recovery_target_time). */
    time: z.string().refine((t) => parsePitrTime(t) !== undefined, `expected ${TIME_FORMAT_HINT}`).optional(),
    /** Recover up to this WAL position (recovery_target_lsn). */
    lsn: z.string().regex(LSN, 'expected an LSN like 0/3000060 (SELECT pg_current_wal_lsn())').optional(),
    /** Recover up to a named restore point (`pgrunbook wal restore-point NAME`). */
    restorePoint: z.string().regex(RESTORE_POINT, 'expected a restore point name of letters, digits, ".", "-", "_"').optional(),
    /** Replay all archived WAL. */
    latest: z.literal(true, 'expected true').optional(),
  })
  .strict()
  .superRefine((target, ctx) => {
    const given = (['time', 'lsn', 'restorePoint', 'latest'] as const).filter((k) => target[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({ code: 'custom', message: `expected exactly one of time, lsn, restorePoint, latest${given.length > 1 ? ` (got ${given.join(', ')})` : ''}` });
    }
  });
export type PitrTarget = z.infer<typeof PitrTarget>;

export const PitrInput = z
  .object({
    cluster: ConfigId,
    target: PitrTarget,
    /** new (default): recover into a new data directory and port, then promote or discard it; replace: recover the cluster itself. */
    mode: z.enum(['new', 'replace']).default('new'),
    /** A base backup id (`main/20260314T010000Z`); default: the newest verified one before the target. */
    baseBackup: z.string().regex(BASE_BACKUP_ID, 'expected a base backup id like main/20260314T010000Z (see `pgrunbook basebackups list`)').optional(),
    /** replace: `skip` starts without waiting for approval (the operator approves by starting, `--yes`). */
    approval: z.enum(['required', 'skip']).optional(),
    /** Who started it, for the report (user@host); informational. */
    requestedBy: z.string().max(200).optional(),
  })
  .strict();
export type PitrInput = z.input<typeof PitrInput>;
export type ParsedPitrInput = z.output<typeof PitrInput>;

/** The target in words, for status lines, errors and the report. */
export function describeTarget(target: PitrTarget): string {
  if (target.time !== undefined) return `time ${parsePitrTime(target.time)?.text ?? target.time}`;
  if (target.lsn !== undefined) return `LSN ${target.lsn.toUpperCase()}`;
  if (target.restorePoint !== undefined) return `restore point "${target.restorePoint}"`;
  return 'latest (the end of the archived WAL)';
}

/** Where recovery is, sent by the `recover` and `promote` activities for the status query. */
export interface RecoveryProgress {
  inRecovery: boolean;
  /** pg_last_wal_replay_lsn(), or the current LSN once out of recovery. */
  replayedLsn: string | null;
  /** The LSN recovery stops at when known (an LSN target, a restore point, the archive's end). */
  targetLsn: string | null;
  /** pg_get_wal_replay_pause_state(): not paused | pause requested | paused. */
  pauseState: string | null;
  /** pg_last_xact_replay_timestamp(): the commit time of the last replayed transaction. */
  lastTransactionAt: string | null;
  at: string;
}

export const recoveryProgressSignal = defineSignal<[RecoveryProgress]>('recoveryProgress');
