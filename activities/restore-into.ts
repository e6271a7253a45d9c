import { tmpdir } from 'node:os';
import { Context } from '@temporalio/activity';
import { databaseInfo, withMaintenanceClient } from '../postgres/admin.js';
import { describeConnection, type ConnectionParams } from '../postgres/connection.js';
import { classifyToolError, failure } from '../postgres/errors.js';
import { ArchiveChangedError, restoreArchive, type RestorePhase } from '../postgres/restore.js';
import { clientToolsFor } from '../postgres/tools.js';
import { verifyArtifact } from '../postgres/verify.js';
import { DecryptionError } from '../encryption/age.js';
import { ToolError } from '../process/run.js';
import { artifactKey } from '../repository/layout.js';
import type { Verification } from '../repository/manifest.js';
import { progressSignal, type RestoreProgress } from '../workflows/restore-messages.js';
import type { RestorePlan, RestoreStepResult } from './restore.js';
import { createEncryptionSupport } from './encryption.js';
import { activitySupport, type ActivityDeps } from './support.js';

// The restore of one archive into one empty database, shared by the restore runbook (scratch or
// target database on the live server) and the drill (a disposable server).

/** A server other than the plan's own: where a drill restores. Resolved in the worker. */
export interface RestoreTarget {
  params: ConnectionParams;
  maintenanceDatabase: string;
  pgBinDir: string | undefined;
}

export function createRestoreSteps(deps: ActivityDeps) {
  const { databaseConfig, connection, repository, withHeartbeat, byteProgress } = activitySupport(deps);
  const { identitiesFor } = createEncryptionSupport(deps);

  /** Progress for the status query: a signal every few seconds while bytes move. */
  function progressReporter(step: string, totalBytes: number | null) {
    const info = Context.current().info;
    let last = 0;
    let pending: Promise<unknown> = Promise.resolve();
    return (phase: RestorePhase, bytes: number): void => {
      const now = Date.now();
      if (now - last < 5_000) return;
      last = now;
      const progress: RestoreProgress = { step, phase, bytes, totalBytes, at: new Date(now).toISOString() };
      // Best effort: progress must never fail or slow the restore.
      pending = pending.then(() =>
        Context.current().client.workflow.getHandle(info.workflowExecution!.workflowId, info.workflowExecution!.runId).signal(progressSignal, progress).catch(() => undefined),
      );
    };
  }

  /**
   * Restores the plan's archive into `into`, on the plan's server or on `target` (a drill's
   * disposable server). Idempotency is the caller's: it hands over an empty database.
   */
  async function restoreInto(input: { plan: RestorePlan; into: string; step: string; target?: RestoreTarget }): Promise<RestoreStepResult> {
    const { plan } = input;
    const db = databaseConfig(plan.database);
    const params = input.target?.params ?? connection(plan.database);
    const maintenanceDatabase = input.target?.maintenanceDatabase ?? db.restore.maintenanceDatabase;
    const pgBinDir = input.target ? input.target.pgBinDir : db.pgBinDir;
    const repo = repository(plan.repository);
    const started = Date.now();
    const signal = Context.current().cancellationSignal;
    const watchSize = plan.format === 'custom' && plan.jobs > 1;
    const report = progressReporter(input.step, watchSize ? plan.dump.databaseSizeBytes : plan.dump.size);
    const identities = await identitiesFor(plan);
    try {
      // One maintenance session for the whole step: the server version, the size watch, the final size.
      // (withMaintenanceClient, not maintenance(): tool errors must reach the classification below unwrapped.)
      return await withMaintenanceClient(params, maintenanceDatabase, async (client) => {
        const { rows } = await client.query<{ n: string }>("SELECT current_setting('server_version_num') AS n");
        const tools = await clientToolsFor(Math.floor(Number(rows[0]!.n) / 10_000), pgBinDir);
        const sizeOf = async (): Promise<number> => (await databaseInfo(client, input.into))?.sizeBytes ?? 0;
        const outcome = await withHeartbeat(async (beat) => {
          const onBytes = byteProgress(beat, started);
          let phase: RestorePhase = 'restore';
          // pg_restore -j on a file says nothing while it works: the growing database is the progress.
          const sizeWatch = watchSize
            ? setInterval(() => {
                if (phase !== 'restore') return;
                sizeOf().then((bytes) => {
                  onBytes(bytes);
                  report('restore', bytes);
                }, () => undefined);
              }, 3_000)
            : undefined;
          try {
            return await restoreArchive({
              params, database: input.into, tools, repository: repo,
              key: artifactKey(plan.backupId, plan.dumpFile),
              format: plan.format,
              expected: { size: plan.dump.size, sha256: plan.dump.sha256 },
              jobs: plan.jobs,
              noOwner: plan.noOwner,
              noPrivileges: plan.noPrivileges,
              ...(plan.role ? { role: plan.role } : {}),
              tempDir: db.restore.tempDir ?? tmpdir(),
              ...(identities ? { identities } : {}),
              signal,
              onBytes: (current, bytes) => {
                phase = current;
                onBytes(bytes);
                report(current, bytes);
              },
            });
          } finally {
            clearInterval(sizeWatch);
          }
        });
        return { database: input.into, ...outcome, restoredSizeBytes: await sizeOf(), seconds: (Date.now() - started) / 1000 };
      });
    } catch (error) {
      if (signal.aborted) throw error;
      if (error instanceof ArchiveChangedError) throw failure('VerificationFailed', error.message, 'the stored backup changed after preflight; run `pgrunbook backups verify` on it');
      if (error instanceof DecryptionError) {
        throw failure(error.problem === 'no-matching-identity' ? 'DecryptionFailed' : 'VerificationFailed', `decrypting ${plan.backupId} during the restore into ${input.into} failed: ${error.message}`, 'the stored backup changed after preflight, or the key did; run `pgrunbook backups verify` on it');
      }
      const classified = classifyToolError(error, describeConnection({ ...params, database: input.into }));
      // pg_restore/psql exiting with errors will do so again: an operator must look, not a retry loop.
      if (error instanceof ToolError && error.exitCode !== undefined && classified.type === 'ToolFailed') {
        throw failure('RestoreFailed', `restoring ${plan.backupId} into ${input.into} failed: ${error.message}`, 'fix the cause (missing role? extension not installed? use noOwner/role options) and retry the step');
      }
      throw classified;
    }
  }

  /** The plan's archive read back end to end: sha256 and size against the manifest, and pg_restore -l. */
  async function verifyArchive(plan: RestorePlan, pgRestore: string): Promise<Verification> {
    // An encrypted archive is decrypted in-stream; without a matching identity this throws DecryptionFailed.
    const identities = await identitiesFor(plan);
    return withHeartbeat((report) =>
      verifyArtifact({
        repository: repository(plan.repository),
        key: artifactKey(plan.backupId, plan.dumpFile),
        format: plan.format,
        expected: { size: plan.dump.size, sha256: plan.dump.sha256 },
        pgRestore,
        ...(identities ? { encryption: { identities } } : {}),
        signal: Context.current().cancellationSignal,
        onBytes: byteProgress(report),
      }),
    );
  }

  return { restoreInto, verifyArchive };
}
