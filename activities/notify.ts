import { Context } from '@temporalio/activity';
import { failure } from '../postgres/errors.js';
import { registerSecret, scrubSecrets } from '../process/secrets.js';
import { webhookPayload, type NotificationEvent, type WebhookPayload } from '../notifications/events.js';
import type { ActivityDeps } from './support.js';

// Notifications (seed 001 §7 "alerts"): a Slack-compatible incoming webhook. Its URL is the
// credential, so it lives in an env var of the worker and never in a workflow, payload or error.

export interface NotifyResult {
  sent: boolean;
  detail: string;
}

/** POSTs a payload to the configured webhook. Throttling and server errors are retryable (the activity retries); other refusals are not. */
export async function postWebhook(deps: ActivityDeps, payload: WebhookPayload): Promise<NotifyResult> {
  const webhook = deps.config.notifications.webhook;
  if (!webhook) return { sent: false, detail: 'no webhook configured (notifications.webhook.urlEnv)' };
  const url = (deps.env ?? process.env)[webhook.urlEnv];
  if (!url) throw failure('ConfigError', `notifications.webhook.urlEnv: environment variable ${webhook.urlEnv} is not set`, `export ${webhook.urlEnv} in the worker's environment`);
  registerSecret(url);
  // Defence in depth: whatever went into the event, a registered secret does not leave in it.
  const body = scrubSecrets(JSON.stringify(payload));
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      signal: AbortSignal.any([Context.current().cancellationSignal, AbortSignal.timeout(15_000)]),
    });
  } catch (error) {
    throw failure('NotificationFailed', `the webhook did not answer: ${scrubSecrets((error as Error).message)}`);
  }
  if (response.ok) return { sent: true, detail: `HTTP ${response.status}` };
  const answer = scrubSecrets((await response.text().catch(() => '')).slice(0, 200));
  if (response.status === 429 || response.status >= 500) throw failure('NotificationFailed', `the webhook answered HTTP ${response.status}: ${answer}`);
  throw failure('NotificationRejected', `the webhook refused the message with HTTP ${response.status}: ${answer}`, 'check notifications.webhook.urlEnv: the URL may be revoked or wrong');
}

export function createNotifyActivities(deps: ActivityDeps) {
  return {
    /** Step "notify": one event to the webhook, if one is configured and the event's kind is wanted. */
    async notify(input: { event: NotificationEvent }): Promise<NotifyResult> {
      const webhook = deps.config.notifications.webhook;
      if (webhook && !webhook.events.includes(input.event.kind)) return { sent: false, detail: `${input.event.kind} is not in notifications.webhook.events` };
      return postWebhook(deps, webhookPayload(input.event));
    },
  };
}

export type NotifyActivities = ReturnType<typeof createNotifyActivities>;
