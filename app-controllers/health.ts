import type { HealthCheck } from './schema.js';
import { AppControllerError } from './errors.js';
import { abortReason, sleep } from './wait.js';

/** One probe of the health endpoint: the HTTP status, or why there was none. */
export type HealthAttempt = { attempt: number; status?: number; error?: string };

/** The health check with its defaults applied (what the schema produces). */
export type HealthCheckSettings = Pick<HealthCheck, 'url'> & Partial<Omit<HealthCheck, 'url'>>;

/**
 * Polls `health.url` with GET until it answers `expectStatus` (any 2xx when unset), or throws an
 * AppControllerError naming the URL, the last status or error and a HINT once `timeoutSeconds` have
 * passed. Each probe may take at most the interval (at least 1 s, at most 10 s). `onAttempt` is
 * called after every probe (activities heartbeat from it).
 */
export async function waitUntilHealthy(
  health: HealthCheckSettings,
  signal: AbortSignal,
  onAttempt?: (attempt: HealthAttempt) => void,
): Promise<void> {
  const timeoutMs = (health.timeoutSeconds ?? 300) * 1000;
  const intervalMs = (health.intervalSeconds ?? 2) * 1000;
  const probeTimeoutMs = Math.min(Math.max(intervalMs, 1000), 10_000);
  const isReady = (status: number): boolean => (health.expectStatus === undefined ? status >= 200 && status < 300 : status === health.expectStatus);
  const deadline = Date.now() + timeoutMs;
  let last: HealthAttempt = { attempt: 0 };
  for (let attempt = 1; ; attempt++) {
    if (signal.aborted) throw abortReason(signal);
    last = await probe(health.url, attempt, AbortSignal.any([signal, AbortSignal.timeout(probeTimeoutMs)]));
    if (signal.aborted) throw abortReason(signal);
    onAttempt?.(last);
    if (last.status !== undefined && isReady(last.status)) return;
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(intervalMs, left), signal);
  }
  const expected = health.expectStatus === undefined ? 'a 2xx status' : `status ${health.expectStatus}`;
  const got = last.status !== undefined ? `last status ${last.status}` : `last error: ${last.error ?? 'none'}`;
  throw new AppControllerError(
    `health check ${health.url}`,
    `not healthy after ${health.timeoutSeconds ?? 300}s and ${last.attempt} attempts (expected ${expected}; ${got})`,
    'check that the application started and can reach its database (its logs say why), or raise health.timeoutSeconds if it needs longer to start',
  );
}

async function probe(url: string, attempt: number, signal: AbortSignal): Promise<HealthAttempt> {
  try {
    const response = await fetch(url, { signal, redirect: 'follow', headers: { 'user-agent': 'pgrunbook-health-check' } });
    // Drain the body so the connection is released; its content does not matter.
    await response.arrayBuffer().catch(() => undefined);
    return { attempt, status: response.status };
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const reason = error instanceof Error && error.name === 'TimeoutError' ? 'no answer within the probe timeout' : (cause?.code ?? cause?.message ?? (error as Error).message);
    return { attempt, error: reason };
  }
}
