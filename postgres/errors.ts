import { ApplicationFailure } from '@temporalio/common';
import { ConfigError } from '../config/errors.js';
import { scrubSecrets } from '../process/secrets.js';
import { ToolError } from '../process/run.js';

/**
 * Failure types as they appear in Temporal and the CLI. Non-retryable ones mean "a person must
 * change something"; retrying would only delay the bad news.
 */
export type FailureType =
  | 'InvalidInput'
  | 'ConfigError'
  | 'AuthenticationFailed'
  | 'DatabaseNotFound'
  | 'VersionIncompatible'
  | 'PermissionDenied'
  | 'VerificationFailed'
  | 'ConnectionFailed'
  | 'ToolFailed'
  | 'StorageFailed'
  | 'BackupNotFound'
  | 'TargetExists'
  | 'RestoreFailed'
  | 'ConnectionsRemain'
  | 'AppControllerFailed'
  | 'HealthCheckFailed'
  | 'InsufficientSpace'
  | 'TargetUnavailable'
  | 'NotificationFailed'
  | 'NotificationRejected'
  | 'DecryptionFailed';

const NON_RETRYABLE: ReadonlySet<FailureType> = new Set([
  'InvalidInput', 'ConfigError', 'AuthenticationFailed', 'DatabaseNotFound', 'VersionIncompatible', 'PermissionDenied', 'VerificationFailed',
  'BackupNotFound', 'TargetExists', 'RestoreFailed', 'ConnectionsRemain', 'InsufficientSpace', 'NotificationRejected',
  'DecryptionFailed',
]);

export function failure(type: FailureType, message: string, hint?: string): ApplicationFailure {
  const text = scrubSecrets(hint ? `${message}\nHINT: ${hint}` : message);
  return ApplicationFailure.create({ type, message: text, nonRetryable: NON_RETRYABLE.has(type) });
}

interface PgLikeError {
  code?: string;
  message?: string;
  errno?: number;
}

/** SQLSTATE and socket errors -> a FailureType, with a hint an operator can act on. */
export function classifyPostgresError(error: unknown, where: string): ApplicationFailure {
  if (error instanceof ApplicationFailure) return error;
  if (error instanceof ConfigError) return failure('ConfigError', error.message);
  const e = error as PgLikeError;
  const message = scrubSecrets(e?.message ?? String(error));
  switch (e?.code) {
    case '28P01':
    case '28000':
      return failure('AuthenticationFailed', `authentication to ${where} failed: ${message}`, 'check the user and the password variable in the worker\'s environment');
    case '3D000':
      return failure('DatabaseNotFound', `${where}: ${message}`, 'check dbname/url in the config; the database must exist to be backed up');
    case '42501':
      return failure('PermissionDenied', `${where}: ${message}`, 'the backup role needs SELECT on all tables (e.g. GRANT pg_read_all_data TO <role>)');
    case 'ECONNREFUSED':
    case 'ETIMEDOUT':
    case 'ENOTFOUND':
    case 'EHOSTUNREACH':
    case 'ECONNRESET':
    case '57P03': // cannot_connect_now: starting up
    case '53300': // too_many_connections
      return failure('ConnectionFailed', `cannot connect to ${where}: ${message}`, 'is the server up and reachable from the worker? pgrunbook retries with backoff');
    default:
      break;
  }
  // Connection timeouts only; statement_timeout (57014) and lock_timeout (55P03) are not "cannot connect".
  if (/connection timeout|timeout expired|connect ETIMEDOUT/i.test(message)) {
    return failure('ConnectionFailed', `cannot connect to ${where}: ${message}`, 'is the server up and reachable from the worker? pgrunbook retries with backoff');
  }
  if (error instanceof ToolError) return failure('ToolFailed', message);
  return failure('ToolFailed', `${where}: ${message}`);
}

/** pg_dump/psql stderr -> the same classification as driver errors. */
export function classifyToolError(error: unknown, where: string): ApplicationFailure {
  if (!(error instanceof ToolError)) return classifyPostgresError(error, where);
  const text = error.stderr;
  if (/password authentication failed|no password supplied|authentication failed/i.test(text)) {
    return failure('AuthenticationFailed', error.message, 'check the user and the password variable in the worker\'s environment');
  }
  if (/database ".*" does not exist/i.test(text)) return failure('DatabaseNotFound', error.message, 'check dbname/url in the config');
  if (/server version mismatch|aborting because of server version mismatch/i.test(text)) {
    return failure('VersionIncompatible', error.message, 'install PostgreSQL client tools of the server\'s major version or newer, or set pgBinDir');
  }
  if (/Connection refused|could not connect|timeout expired|could not translate host name/i.test(text)) {
    return failure('ConnectionFailed', error.message, 'is the server up and reachable from the worker? pgrunbook retries with backoff');
  }
  if (/permission denied/i.test(text)) return failure('PermissionDenied', error.message, 'the backup role needs SELECT on all tables (e.g. GRANT pg_read_all_data TO <role>)');
  return failure('ToolFailed', error.message);
}
