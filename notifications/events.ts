// What pgrunbook tells a chat channel, and in what words. Events carry names, ids, outcomes and
// error texts that were already scrubbed of secrets in the worker; never a connection or a key.

export type NotificationKind = 'backup-failed' | 'drill-result' | 'restore-waiting' | 'restore-finished';
export const NOTIFICATION_KINDS: readonly NotificationKind[] = ['backup-failed', 'drill-result', 'restore-waiting', 'restore-finished'];

export type NotificationEvent =
  | { kind: 'backup-failed'; database: string; workflowId: string; backupId: string; step: string; error: string }
  | {
      kind: 'drill-result';
      database: string;
      workflowId: string;
      outcome: 'passed' | 'failed';
      backupId: string | null;
      rtoSeconds: number | null;
      rpoSeconds: number | null;
      /** The failed checks or the error, one line each. */
      problems: string[];
      reportLocation: string | null;
    }
  | {
      kind: 'restore-waiting';
      database: string;
      workflowId: string;
      waitingFor: 'approval' | 'operator';
      step: string;
      error: string | null;
      options: string[];
      deadline: string;
    }
  | {
      kind: 'restore-finished';
      database: string;
      workflowId: string;
      outcome: 'completed' | 'failed' | 'cancelled' | 'rejected';
      backupId: string | null;
      target: string | null;
      durationSeconds: number;
      downtimeSeconds: number | null;
      error: string | null;
    };

/** A Slack-compatible incoming-webhook payload: `text` for every client, `blocks` for Slack. */
export interface WebhookPayload {
  text: string;
  blocks: { type: string; text?: { type: 'mrkdwn'; text: string }; elements?: { type: 'mrkdwn'; text: string }[] }[];
}

const firstLine = (text: string | null): string => (text ?? '').split('\n')[0]!.slice(0, 300);
const seconds = (s: number | null): string => (s === null ? '-' : s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

export function webhookPayload(event: NotificationEvent): WebhookPayload {
  const { text, detail } = describe(event);
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      ...(detail.length > 0 ? [{ type: 'section', text: { type: 'mrkdwn' as const, text: detail.join('\n') } }] : []),
      { type: 'context', elements: [{ type: 'mrkdwn', text: `workflow \`${event.workflowId}\` · \`pgrunbook status ${event.workflowId}\`` }] },
    ],
  };
}

function describe(event: NotificationEvent): { text: string; detail: string[] } {
  switch (event.kind) {
    case 'backup-failed':
      return { text: `:x: pgrunbook backup of *${event.database}* FAILED at ${event.step}: ${firstLine(event.error)}`, detail: [`backup \`${event.backupId}\` is recorded as failed and will never be restored as "latest"`] };
    case 'drill-result':
      return event.outcome === 'passed'
        ? { text: `:white_check_mark: pgrunbook restore drill of *${event.database}* passed: RTO ${seconds(event.rtoSeconds)}, RPO ${seconds(event.rpoSeconds)}`, detail: [`backup \`${event.backupId ?? '-'}\``, ...(event.reportLocation ? [`report ${event.reportLocation}`] : [])] }
        : {
            text: `:rotating_light: pgrunbook restore drill of *${event.database}* FAILED: ${firstLine(event.problems[0] ?? 'unknown')}`,
            detail: [...event.problems.slice(1, 6).map((p) => `• ${firstLine(p)}`), `backup \`${event.backupId ?? '-'}\``, ...(event.reportLocation ? [`report ${event.reportLocation}`] : [])],
          };
    case 'restore-waiting':
      return event.waitingFor === 'approval'
        ? { text: `:hourglass: pgrunbook restore of *${event.database}* waits for approval (until ${event.deadline})`, detail: [`\`pgrunbook approve ${event.workflowId} --reason "..."\` or \`pgrunbook reject ...\``] }
        : {
            text: `:warning: pgrunbook restore of *${event.database}* waits for an operator: step ${event.step} failed: ${firstLine(event.error)}`,
            detail: [`\`pgrunbook step ${event.options.join('|')} ${event.workflowId} --reason "..."\` (until ${event.deadline})`],
          };
    case 'restore-finished': {
      const icon = event.outcome === 'completed' ? ':white_check_mark:' : event.outcome === 'rejected' ? ':no_entry:' : ':x:';
      return {
        text: `${icon} pgrunbook restore of *${event.database}* ${event.outcome}${event.backupId ? ` from \`${event.backupId}\`` : ''}`,
        detail: [
          `duration ${seconds(event.durationSeconds)}, application downtime ${event.downtimeSeconds === null ? 'none' : seconds(event.downtimeSeconds)}${event.target ? `, target ${event.target}` : ''}`,
          ...(event.error ? [`error: ${firstLine(event.error)}`] : []),
        ],
      };
    }
  }
}
