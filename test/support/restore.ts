import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { demoAppCommandConfig } from '../../stack/demo-app.js';
import { freePort } from '../../stack/ports.js';
import type { createActivities } from '../../worker/worker.js';
import type { TestStack } from './stack.js';

type Activities = ReturnType<typeof createActivities>;

/** The demo app (a real process holding connections, with /health) in front of `database`. */
export async function demoApp(stack: TestStack, database: string, name = database) {
  const port = await freePort();
  const pidFile = join(stack.workDir, `${name}-app.pid`);
  const urlEnv = `TEST_APP_URL_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
  stack.workerEnv[urlEnv] = stack.cluster.url(database);
  const config = demoAppCommandConfig({ pidFile, port, urlEnv, connections: 3 });
  const pid = (): number | undefined => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : undefined);
  const running = (): boolean => {
    const p = pid();
    if (!p) return false;
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  };
  const { execa } = await import('execa');
  const sh = (script: string) => execa('/bin/sh', ['-c', script], { env: stack.workerEnv });
  return {
    config,
    pid,
    running,
    start: () => sh(config.start),
    stop: () => sh(config.stop),
    /** The app's sessions on the database, as PostgreSQL sees them. */
    sessions: async (): Promise<number> => Number(await stack.cluster.sql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrunbook-demo-app'`)),
    healthy: async (): Promise<boolean> => (await fetch(config.health!.url).catch(() => undefined))?.status === 200,
  };
}

/**
 * Wraps one activity so that its `call`-th invocation fails with a non-retryable error, before or
 * after the real activity ran (after: the step half-succeeded, its undo must clean up).
 */
export function failingAt(name: keyof Activities, when: 'before' | 'after' = 'before', call = 1) {
  return (activities: Activities): Activities => {
    let calls = 0;
    const real = activities[name] as (...args: unknown[]) => Promise<unknown>;
    return {
      ...activities,
      [name]: async (...args: unknown[]) => {
        calls += 1;
        if (calls !== call) return real(...args);
        if (when === 'after') await real(...args);
        throw ApplicationFailure.nonRetryable(`injected failure in ${String(name)} (${when})`, 'InjectedFailure');
      },
    };
  };
}

/** Flips one bit of a stored file in place: the smallest corruption a checksum must catch. */
export async function flipByte(path: string, offset: number): Promise<void> {
  const { open } = await import('node:fs/promises');
  const file = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0x01;
    await file.write(byte, 0, 1, offset);
  } finally {
    await file.close();
  }
}
