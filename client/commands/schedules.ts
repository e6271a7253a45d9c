import { Client } from '@temporalio/client';
import type { LoadedConfig } from '../../config/load.js';
import { applySchedules, scheduleField, type ScheduleChange } from '../../schedules/apply.js';
import { deleteSchedule, findSchedule, listSchedules, pauseSchedule, triggerSchedule, unpauseSchedule, viewOf, type ScheduleView } from '../../schedules/operate.js';
import { operatorIdentity } from '../restore.js';
import { connectClient } from '../temporal-connection.js';
import { EXIT, table, UsageError, type Output } from '../output.js';
import { clientDataConverter } from '../../encryption/payload-codec.js';

const SUBCOMMANDS = 'pgrunbook schedules apply [--dry-run]|list|describe ID|pause ID [--reason TEXT]|unpause ID|trigger ID|delete ID';

export async function schedulesCommand(loaded: LoadedConfig, out: Output, sub: string | undefined, id: string | undefined, flags: { 'dry-run'?: boolean; reason?: string }): Promise<number> {
  if (!sub || !['apply', 'list', 'describe', 'pause', 'unpause', 'trigger', 'delete'].includes(sub)) {
    throw new UsageError(`unknown subcommand "schedules ${sub ?? ''}"`, SUBCOMMANDS);
  }
  const { config } = loaded;
  const connection = await connectClient(config.temporal);
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: clientDataConverter(config.temporal) });
    switch (sub) {
      case 'apply': {
        const dryRun = flags['dry-run'] === true;
        const changes = await applySchedules(client, config, { dryRun });
        out.result({ ok: true, dryRun, schedules: changes }, () => describeChanges(changes, dryRun));
        return EXIT.ok;
      }
      case 'list': {
        const schedules = await listSchedules(client, config);
        out.result({ ok: true, schedules }, () =>
          schedules.length === 0
            ? 'no schedules: the config has none enabled and Temporal holds none of pgrunbook\'s'
            : table(
                ['SCHEDULE', 'STATE', 'NEXT RUN', 'WHEN'],
                schedules.map((s) =>
                  s.exists
                    ? [s.scheduleId, `${s.paused ? 'paused' : 'active'}${s.inConfig ? '' : ', not in config'}`, s.paused || !s.nextActionTimes[0] ? '-' : formatTime(s.nextActionTimes[0]), s.spec]
                    : [s.scheduleId, 'missing: run `pgrunbook schedules apply`', '-', s.spec],
                ),
              ),
        );
        return EXIT.ok;
      }
      case 'describe': {
        const { description } = await findSchedule(client, config, id, { mutating: false, usage: 'pgrunbook schedules describe ID' });
        const view = viewOf(description, config);
        out.result({ ok: true, ...view }, () => describeView(view));
        return EXIT.ok;
      }
      case 'pause':
      case 'unpause': {
        const { handle } = await findSchedule(client, config, id, { mutating: true, usage: `pgrunbook schedules ${sub} ID` });
        const note = `${flags.reason ?? `${sub}d from the CLI`} (${operatorIdentity()})`;
        await (sub === 'pause' ? pauseSchedule(handle, note) : unpauseSchedule(handle, note));
        const view = viewOf(await handle.describe(), config);
        out.result({ ok: true, scheduleId: view.scheduleId, paused: view.paused, note: view.note, nextActionTimes: view.nextActionTimes }, () =>
          view.paused
            ? `paused ${view.scheduleId}: ${view.note ?? ''}\nresume it with: pgrunbook schedules unpause ${view.scheduleId}`
            : `unpaused ${view.scheduleId}; next run ${view.nextActionTimes[0] ? formatTime(view.nextActionTimes[0]) : '-'}`,
        );
        return EXIT.ok;
      }
      case 'trigger': {
        const { handle, description } = await findSchedule(client, config, id, { mutating: true, usage: 'pgrunbook schedules trigger ID' });
        const result = await triggerSchedule(handle, description);
        if (result.skipped) {
          out.result({ ok: false, ...result }, () =>
            `trigger of ${result.scheduleId} skipped: ${result.runningWorkflows.join(', ') || 'a previous run'} is still running and the overlap policy is ${viewOf(description, config).overlap}\nHINT: wait for it (pgrunbook status ${result.runningWorkflows[0] ?? 'WORKFLOW_ID'}), then trigger again`,
          );
          return EXIT.failed;
        }
        out.result({ ok: true, ...result }, () =>
          result.workflowId
            ? `triggered ${result.scheduleId}: started ${result.workflowId}\nfollow it with: pgrunbook status ${result.workflowId}`
            : `triggered ${result.scheduleId}; the run will show in: pgrunbook schedules describe ${result.scheduleId}`,
        );
        return EXIT.ok;
      }
      case 'delete': {
        const { handle, description } = await findSchedule(client, config, id, { mutating: true, usage: 'pgrunbook schedules delete ID' });
        const view = viewOf(description, config);
        await deleteSchedule(handle);
        const note = view.inConfig
          ? `the config still wants it: the next \`pgrunbook schedules apply\` recreates it; set ${view.kind && view.database ? scheduleField(view.kind, view.database) : `databases.${view.database}.schedules`}.enabled: false to keep it gone`
          : null;
        out.result({ ok: true, scheduleId: view.scheduleId, deleted: true, note }, () => `deleted ${view.scheduleId}${note ? `\nnote: ${note}` : ''}`);
        return EXIT.ok;
      }
    }
    throw new UsageError(`unknown subcommand "schedules ${sub}"`, SUBCOMMANDS);
  } finally {
    await connection.close();
  }
}

function describeChanges(changes: ScheduleChange[], dryRun: boolean): string {
  if (changes.length === 0) return 'no schedules in the config and none of pgrunbook\'s in Temporal';
  const verb = (action: ScheduleChange['action']): string => (dryRun && action !== 'unchanged' ? `would be ${action}` : action);
  const counts = (['created', 'updated', 'deleted', 'unchanged'] as const).map((a) => `${changes.filter((c) => c.action === a).length} ${a}`).join(', ');
  return [
    table(['SCHEDULE', 'ACTION', 'WHY', 'WHEN'], changes.map((c) => [c.scheduleId, verb(c.action), c.reason, c.spec ?? '-'])),
    dryRun ? `dry run, nothing changed: ${counts.replace(/(\d+) (created|updated|deleted)/g, '$1 would be $2')}` : counts,
  ].join('\n');
}

function describeView(v: ScheduleView): string {
  const owner = v.managedByPgrunbook ? `${v.kind} of ${v.database}, managed by pgrunbook${v.inConfig ? '' : '; no longer in the config: `schedules apply` deletes it'}` : 'not created by pgrunbook';
  const lines = [
    `${v.scheduleId}  (${owner})`,
    `  when        ${v.spec}`,
    `  workflow    ${v.workflowType} on task queue ${v.taskQueue}, id ${v.workflowId}-<scheduled time>`,
    `  policies    overlap ${v.overlap}; catch-up window ${v.catchupWindowMinutes} min; jitter ${v.jitterSeconds ? `up to ${formatJitter(v.jitterSeconds)}` : 'none'}`,
    `  state       ${v.paused ? `PAUSED${v.note ? `: ${v.note}` : ''}` : `active${v.note ? ` (${v.note})` : ''}`}`,
    ...block('next runs', v.nextActionTimes.map((t) => formatTime(t) + (v.paused ? ' (if unpaused)' : ''))),
    ...block('recent', v.recentActions.map((a) => `${formatTime(a.scheduledAt)}  ${a.workflowId}`)),
    ...(v.runningWorkflows.length ? block('running', v.runningWorkflows) : []),
    `  actions     ${v.actionsTaken} taken, ${v.skippedOverlap} skipped (overlap), ${v.missedCatchupWindow} missed (catch-up window)`,
  ];
  return lines.join('\n');
}

function block(title: string, rows: string[]): string[] {
  if (rows.length === 0) return [`  ${title.padEnd(12)}-`];
  return rows.map((row, i) => `  ${(i === 0 ? title : '').padEnd(12)}${row}`);
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

/** 2026-06-06 10:00 UTC (Sat): the weekday makes "first Saturday" checkable at a glance. */
function formatTime(iso: string): string {
  const date = new Date(iso);
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC (${WEEKDAYS[date.getUTCDay()]})`;
}

function formatJitter(seconds: number): string {
  return seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}
