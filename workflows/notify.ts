import { log, proxyActivities } from '@temporalio/workflow';
import type { NotifyActivities } from '../activities/notify.js';
import type { NotificationEvent } from '../notifications/events.js';
import { messageOf } from './runbook.js';

// Telling people is best effort: a chat service that is down is retried for about two minutes,
// then logged, and never changes what the runbook does or how it ends.
const { notify } = proxyActivities<NotifyActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 6, initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '40 seconds' },
});

/** Sends one event; returns what happened, in words, for the status query. Never throws. */
export async function notifySafely(event: NotificationEvent): Promise<string> {
  try {
    const result = await notify({ event });
    return result.sent ? `sent (${result.detail})` : `not sent: ${result.detail}`;
  } catch (error) {
    log.warn('notification failed', { kind: event.kind, error: messageOf(error) });
    return `failed: ${messageOf(error)}`;
  }
}
