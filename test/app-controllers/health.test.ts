import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntilHealthy, type HealthAttempt } from '../../app-controllers/health.js';
import { freePort } from '../../stack/ports.js';

describe('waitUntilHealthy', () => {
  let server: Server | undefined;
  const signal = new AbortController().signal;

  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server = undefined;
  });

  /** A health endpoint that answers 503 until `readyAfterMs`, then `readyStatus`. */
  async function endpoint(readyAfterMs: number, readyStatus = 200): Promise<string> {
    const readyAt = Date.now() + readyAfterMs;
    server = createServer((_req, res) => res.writeHead(Date.now() >= readyAt ? readyStatus : 503).end());
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const address = server.address();
    return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/health`;
  }

  it('polls until the endpoint turns ready', async () => {
    const url = await endpoint(700);
    const attempts: HealthAttempt[] = [];
    await waitUntilHealthy({ url, timeoutSeconds: 10, intervalSeconds: 0.2 }, signal, (a) => attempts.push(a));
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    expect(attempts[0]).toEqual({ attempt: 1, status: 503 });
    expect(attempts.at(-1)?.status).toBe(200);
  });

  it('with expectStatus, only that status means ready', async () => {
    const url = await endpoint(0, 204);
    await waitUntilHealthy({ url, timeoutSeconds: 5, intervalSeconds: 0.1, expectStatus: 204 }, signal);
    await expect(waitUntilHealthy({ url, timeoutSeconds: 1, intervalSeconds: 0.2, expectStatus: 200 }, signal)).rejects.toThrow(/expected status 200; last status 204/);
  });

  it('times out with the URL, the last status and a HINT', async () => {
    const url = await endpoint(60_000);
    const started = Date.now();
    await expect(waitUntilHealthy({ url, timeoutSeconds: 1, intervalSeconds: 0.2 }, signal)).rejects.toThrow(
      new RegExp(`^health check ${url.replace(/[.?]/g, '\\$&')}: not healthy after 1s and \\d+ attempts \\(expected a 2xx status; last status 503\\)\\nHINT: check that the application started`),
    );
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('reports the connection error when nothing listens', async () => {
    const url = `http://127.0.0.1:${await freePort()}/health`;
    await expect(waitUntilHealthy({ url, timeoutSeconds: 1, intervalSeconds: 0.3 }, signal)).rejects.toThrow(/last error: ECONNREFUSED/);
  });

  it('stops waiting as soon as it is cancelled', async () => {
    const url = await endpoint(60_000);
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(new Error('activity cancelled')), 300);
    const started = Date.now();
    await expect(waitUntilHealthy({ url, timeoutSeconds: 60, intervalSeconds: 1 }, cancel.signal)).rejects.toThrow('activity cancelled');
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
