import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { Worker, type WorkflowBundle } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { bundleWorkflows } from '../worker/worker.js';

// Histories recorded from real runs (test/histories/record.ts). A change to workflow code that
// would break workflows already running in production fails here; such a change needs patched().
const dir = fileURLToPath(new URL('./histories', import.meta.url));
const histories = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

let bundle: WorkflowBundle;
beforeAll(async () => {
  bundle = await bundleWorkflows();
});

describe('replaying recorded workflow histories', () => {
  it('has histories for every backup, restore and drill path that matters', () => {
    expect(histories).toEqual([
      'backup-cancelled.json', 'backup-connection-failed.json', 'backup-failed-notified.json', 'backup-invalid-input.json', 'backup-pruned.json', 'backup-verified.json',
      // base backups (point-in-time recovery): verified; with retention, starting its prune child; the prune itself.
      'basebackup-prune-completed.json', 'basebackup-pruned.json', 'basebackup-verified.json',
      // drill: canary + child backup + every check, no backup to drill, failed checks (notify), cancelled mid-restore,
      // and (patched notify-drill-result) a passed drill told to the webhook.
      'drill-backup-not-found.json', 'drill-canary-passed.json', 'drill-cancelled.json', 'drill-checks-failed.json', 'drill-passed-notified.json',
      // fleet: child backups on the control queue and a site's, a broken database reported, globals; an unknown fleet.
      // fleet-child-backup: one of its children (patched verified-manifest-not-cancellable).
      'fleet-child-backup.json', 'fleet-partial.json', 'fleet-unknown.json',
      // point-in-time restore (mode new): promoted at a time target, discarded at an LSN target (undo stack), refused at resolve (WAL gap).
      'pitr-discarded.json', 'pitr-promoted.json', 'pitr-unreachable.json',
      // prune (retention): plan, retire, delete, report; a dry run. backup-pruned (patched
      // prune-after-backup) starts its prune child.
      'prune-completed.json', 'prune-dry-run.json',
      // restore: approval + app + health (swap), child safety backup (in-place), rejection, an
      // operator's retry of a failed step, the full undo stack, a failed preflight; with notifications
      // (patched notify-restore-waiting/-finished) a rejected one told while waiting and at its end.
      'restore-failed-compensated.json', 'restore-in-place-completed.json', 'restore-operator-retry.json',
      'restore-preflight-failed.json', 'restore-rejected-notified.json', 'restore-rejected.json', 'restore-swap-completed.json',
    ]);
  });

  it.each(histories)('%s replays deterministically against the current workflow code', async (file) => {
    const history = historyFromJSON(JSON.parse(readFileSync(join(dir, file), 'utf8')));
    // Child workflow ids derive from the parent's (restore-app-safety-backup-1): replay under the
    // id the restores were recorded with.
    // Drills were recorded under their file's name (the canary drill's child backup id derives from it).
    // Prunes and backup-pruned likewise (its prune child's id derives from it).
    // Base backups and point-in-time restores likewise (record-pitr.ts), and fleets (record-fleet.ts).
    const workflowId = file.startsWith('restore-') ? 'restore-app' : /^(drill-|prune-|backup-pruned|basebackup-|pitr-|fleet-)/.test(file) ? file.replace(/\.json$/, '') : file;
    await expect(Worker.runReplayHistory({ workflowBundle: bundle }, history, workflowId)).resolves.toBeUndefined();
  });

  it('detects a history whose commands no longer match the code', async () => {
    // Drop the first activity the workflow scheduled: replay must notice the divergence.
    const json = JSON.parse(readFileSync(join(dir, 'backup-verified.json'), 'utf8')) as { events: { eventType: string }[] };
    const scheduled = json.events.findIndex((e) => /ACTIVITY_TASK_SCHEDULED|ActivityTaskScheduled/.test(String(e.eventType)));
    expect(scheduled).toBeGreaterThan(0);
    json.events.splice(scheduled, 1);
    const history = historyFromJSON(json);
    await expect(Worker.runReplayHistory({ workflowBundle: bundle }, history, 'tampered')).rejects.toThrow();
  });
});
