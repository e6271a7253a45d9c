import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCommandController } from '../../app-controllers/command/controller.js';
import { waitUntilHealthy } from '../../app-controllers/health.js';
import { createAppController } from '../../app-controllers/registry.js';
import { CommandAppConfig } from '../../app-controllers/schema.js';
import { registerSecret } from '../../process/secrets.js';
import { demoAppCommandConfig } from '../../stack/demo-app.js';
import { freePort } from '../../stack/ports.js';
import { startPostgresCluster, type PostgresCluster } from '../../stack/postgres-cluster.js';

describe('command app controller', () => {
  let cluster: PostgresCluster;
  let dir: string;
  const signal = new AbortController().signal;

  beforeAll(async () => {
    cluster = await startPostgresCluster();
    await cluster.sql('CREATE DATABASE app');
    dir = mkdtempSync(join(tmpdir(), 'pgrunbook-command-'));
  });

  afterAll(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const demoSessions = async (): Promise<number> =>
    Number(await cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrunbook-demo-app' AND datname = 'app'"));

  it('stops the demo app that holds connections (none remain in pg_stat_activity) and starts it back healthy, idempotently', async () => {
    const config = demoAppCommandConfig({ pidFile: join(dir, 'demo.pid'), port: await freePort(), urlEnv: 'DEMO_APP_DATABASE_URL', connections: 3 });
    // The URL (with its password) reaches the app through the worker's environment, never argv.
    const app = createAppController(CommandAppConfig.parse(config), { ...process.env, DEMO_APP_DATABASE_URL: cluster.url('app') });
    const health = config.health!;
    expect(`${config.start}\n${config.stop}`).not.toContain(cluster.password);
    try {
      await app.start({ controller: 'command' }, signal);
      await waitUntilHealthy(health, signal);
      await expect.poll(demoSessions, { timeout: 10_000 }).toBe(3);
      const snapshot = await app.capture(signal);
      expect(snapshot).toEqual({ controller: 'command', status: 'running' });

      await app.stop(snapshot, signal);
      expect(await demoSessions()).toBe(0);
      await expect(fetch(health.url)).rejects.toThrow();
      await app.stop(snapshot, signal); // already stopped: nothing to do
      expect(await app.capture(signal)).toEqual({ controller: 'command', status: 'stopped' });

      await app.start(snapshot, signal);
      await app.start(snapshot, signal); // already running: nothing to do, still one app
      await waitUntilHealthy(health, signal);
      expect((await fetch(health.url)).status).toBe(200);
      await expect.poll(demoSessions, { timeout: 10_000 }).toBe(3);
    } finally {
      await app.stop({ controller: 'command' }, signal);
    }
  });

  it('the demo app reports 503 on /health when its connections break, and recovers', async () => {
    const config = demoAppCommandConfig({ pidFile: join(dir, 'demo2.pid'), port: await freePort(), urlEnv: 'DEMO_APP_DATABASE_URL', connections: 2 });
    const app = createAppController(config, { ...process.env, DEMO_APP_DATABASE_URL: cluster.url('app') });
    try {
      await app.start({ controller: 'command' }, signal);
      await waitUntilHealthy(config.health!, signal);
      await cluster.sql("ALTER DATABASE app ALLOW_CONNECTIONS false");
      await cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgrunbook-demo-app'");
      await expect.poll(async () => (await fetch(config.health!.url)).status, { timeout: 10_000 }).toBe(503);
      await cluster.sql("ALTER DATABASE app ALLOW_CONNECTIONS true");
      await waitUntilHealthy({ ...config.health!, timeoutSeconds: 10 }, signal);
    } finally {
      await cluster.sql("ALTER DATABASE app ALLOW_CONNECTIONS true");
      await app.stop({ controller: 'command' }, signal);
    }
  });

  it('a failing command reports its exit code, the end of stderr with secrets masked, and a HINT', async () => {
    const token = 'tok-3f9a1c77e2b4';
    registerSecret(token);
    const app = createCommandController(
      CommandAppConfig.parse({ type: 'command', stop: 'echo "draining"; echo "cannot stop: token $APP_TOKEN refused" >&2; exit 3', start: 'true' }),
      { PATH: process.env.PATH, APP_TOKEN: token },
    );
    const error = await app.stop({ controller: 'command' }, signal).then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/^command app controller: stop command failed \(exit code 3\): cannot stop: token \*\*\* refused\nHINT: run the stop command by hand/);
    expect(error?.message).not.toContain(token);
  });

  it('runs with the given environment and cwd', async () => {
    const app = createCommandController(
      CommandAppConfig.parse({ type: 'command', stop: 'true', start: 'true', status: 'echo "$APP_NAME in $(pwd)"', cwd: dir }),
      { PATH: process.env.PATH, APP_NAME: 'billing' },
    );
    expect(await app.capture(signal)).toEqual({ controller: 'command', status: `billing in ${dir}` });
  });

  it('a start command that leaves the application running in the background returns when the shell exits', async () => {
    const pidFile = join(dir, 'background.pid');
    const app = createCommandController(CommandAppConfig.parse({ type: 'command', stop: 'true', start: `sleep 30 & echo $! > ${pidFile}` }), { PATH: process.env.PATH });
    const started = Date.now();
    await app.start({ controller: 'command' }, signal);
    expect(Date.now() - started).toBeLessThan(3_000);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(() => process.kill(pid, 0)).not.toThrow(); // still running after start returned
    process.kill(pid, 'SIGKILL');
  });

  it('a command that outlives timeoutSeconds is killed and reported as timed out', async () => {
    const app = createCommandController(CommandAppConfig.parse({ type: 'command', stop: 'sleep 30', start: 'true', timeoutSeconds: 1 }), { PATH: process.env.PATH });
    const started = Date.now();
    await expect(app.stop({ controller: 'command' }, signal)).rejects.toThrow(/stop command failed \(timed out after 1s\)\nHINT: make the stop command finish within timeoutSeconds/);
    expect(Date.now() - started).toBeLessThan(8_000);
  });

  it('cancellation kills a running command at once', async () => {
    const app = createCommandController(CommandAppConfig.parse({ type: 'command', stop: 'true', start: 'sleep 30' }), { PATH: process.env.PATH });
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(new Error('activity cancelled')), 300);
    const started = Date.now();
    await expect(app.start({ controller: 'command' }, cancel.signal)).rejects.toThrow('activity cancelled');
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
