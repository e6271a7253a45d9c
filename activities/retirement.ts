import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { writeAll, type Repository } from '../repository/types.js';
import { statusQuery } from '../workflows/runbook.js';

// What both prunes (a database's backups: activities/prune.ts; a cluster's base backups:
// activities/basebackup.ts) do the same way: ask running workflows what they use and never delete
// it, retire manifests first, remove the rest of a folder, write the report.

/** In use by running workflows: backup id -> who; `unknown`: workflows that could not say which backup they use. */
export interface BackupsInUse {
  byId: Map<string, string>;
  unknown: string[];
}

/** How long one running workflow may take to answer its status query. */
const QUERY_TIMEOUT_MS = 10_000;

/** A running workflow's status details; undefined when it does not answer in time (what it uses is then unknown). */
export async function runningStatusDetails(client: Client, execution: Pick<WorkflowExecutionInfo, 'workflowId' | 'runId'>): Promise<Record<string, unknown> | undefined> {
  try {
    return (await withTimeout(client.workflow.getHandle(execution.workflowId, execution.runId).query(statusQuery), QUERY_TIMEOUT_MS)).details;
  } catch {
    return undefined;
  }
}

/** Why `id` must stay, or undefined: a workflow uses it, or one could not say which `kind` ('backup', 'base backup') it uses. */
export function inUseGuard(inUse: BackupsInUse, id: string, kind: string): string | undefined {
  return inUse.byId.get(id) ?? (inUse.unknown.length > 0 ? `${inUse.unknown.join('; ')} and did not say which ${kind} it uses` : undefined);
}

/** The plan's guards: what running workflows use and, when one could not say which `kind` it uses, every verified one. */
export function planGuards(inUse: BackupsInUse, candidates: { id: string; state: string }[], kind: string): Map<string, string> {
  const guards = new Map(inUse.byId);
  if (inUse.unknown.length > 0) {
    // A workflow that cannot tell which one it uses might use any: keep them all this time.
    for (const c of candidates) if (c.state === 'verified' && !guards.has(c.id)) guards.set(c.id, inUseGuard(inUse, c.id, kind)!);
  }
  return guards;
}

/**
 * Deletes the manifests of `backupIds`: each stops being listed as good at once. What a workflow
 * started using since the plan (`inUse`, asked again just now) is skipped, not deleted.
 */
export async function retireManifests(
  repository: Repository,
  backupIds: string[],
  inUse: BackupsInUse,
  kind: string,
  manifestKey: (id: string) => string,
): Promise<{ retired: string[]; skipped: { backupId: string; reason: string }[] }> {
  const retired: string[] = [];
  const skipped: { backupId: string; reason: string }[] = [];
  for (const id of backupIds) {
    const guard = inUseGuard(inUse, id, kind);
    if (guard) {
      skipped.push({ backupId: id, reason: `protected: ${guard}` });
      continue;
    }
    await repository.delete(manifestKey(id));
    retired.push(id);
  }
  return { retired, skipped };
}

/**
 * Removes one backup folder: the manifest first (from then on it is not a good backup), then
 * incomplete writes, then every other file. Idempotent: a re-run finishes what a dead run began.
 */
export async function removeFolderManifestFirst(repository: Repository, folder: string, manifest: string, signal?: AbortSignal): Promise<number> {
  await repository.delete(manifest);
  let removed = 0;
  for (const write of await repository.listIncompleteWrites(folder)) removed += await repository.removeIncompleteWrites(write.key);
  for (const object of await repository.list(folder)) {
    signal?.throwIfAborted();
    await repository.delete(object.key);
    removed += 1;
  }
  // Again, now that nothing else is there: also removes a local folder left empty.
  await repository.delete(manifest);
  return removed;
}

/** Writes a prune report as indented JSON at `key`; returns the key and where an operator finds it. */
export async function writePruneReportFile(repository: Repository, key: string, report: object): Promise<{ key: string; location: string }> {
  await writeAll(repository, key, JSON.stringify(report, null, 2) + '\n');
  return { key, location: `${repository.location.replace(/\/?$/, '/')}${key}` };
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
