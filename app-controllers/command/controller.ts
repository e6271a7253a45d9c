import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scrubSecrets } from '../../process/secrets.js';
import { AppControllerError } from '../errors.js';
import type { CommandAppConfig } from '../schema.js';
import type { AppController, AppSnapshot } from '../types.js';
import { abortReason } from '../wait.js';

/**
 * Stops and starts the application with the operator's own shell commands (`/bin/sh -c`), run with
 * the worker's environment so they can reach secrets by variable name. Both commands must be
 * idempotent themselves: stop returns once the application is down, also when it already was.
 */
export function createCommandController(config: CommandAppConfig, env: NodeJS.ProcessEnv): AppController {
  const describe = (): string => `command app controller${config.cwd ? ` in ${config.cwd}` : ''}`;

  async function shell(which: 'stop' | 'start' | 'status', signal: AbortSignal): Promise<string> {
    const command = config[which];
    if (command === undefined) return '';
    const result = await runShell(command, { env, cwd: config.cwd, timeoutMs: config.timeoutSeconds * 1000, signal });
    if (result.outcome === 'exited' && result.exitCode === 0) return result.stdout;
    if (result.outcome === 'cancelled') throw abortReason(signal);
    const how =
      result.outcome === 'timed-out'
        ? `timed out after ${config.timeoutSeconds}s`
        : result.outcome === 'spawn-failed'
          ? `could not be run: ${result.spawnError ?? 'unknown error'}`
          : result.signal
            ? `killed by ${result.signal}`
            : `exit code ${result.exitCode ?? 'unknown'}`;
    const tail = lastLines(result.stderr, 8) || lastLines(result.stdout, 4);
    throw new AppControllerError(
      describe(),
      `${which} command failed (${how})${tail ? `: ${scrubSecrets(tail)}` : ''}`,
      result.outcome === 'timed-out'
        ? `make the ${which} command finish within timeoutSeconds (${config.timeoutSeconds}), or raise it`
        : result.outcome === 'spawn-failed'
          ? `check that cwd (${config.cwd ?? 'the worker\'s directory'}) exists and /bin/sh can run there`
          : `run the ${which} command by hand as the worker's user to see why it fails; it must be idempotent (succeed when the application is already ${which === 'start' ? 'running' : 'stopped'})`,
    );
  }

  return {
    type: 'command',
    describe,
    capture: async (signal): Promise<AppSnapshot> => {
      if (config.status === undefined) return { controller: 'command' };
      return { controller: 'command', status: scrubSecrets(lastLines(await shell('status', signal), 20)) };
    },
    stop: async (_snapshot, signal) => {
      await shell('stop', signal);
    },
    start: async (_snapshot, signal) => {
      await shell('start', signal);
    },
  };
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

interface ShellResult {
  outcome: 'exited' | 'timed-out' | 'cancelled' | 'spawn-failed';
  exitCode?: number;
  signal?: string;
  spawnError?: string;
  stdout: string;
  stderr: string;
}

const KILL_GRACE_MS = 5_000;

/**
 * Runs `/bin/sh -c command` in its own process group. Output goes to files, not pipes: a start
 * command that leaves the application running in the background (which inherits them) must not
 * keep us waiting. On timeout or cancellation the whole group gets SIGTERM, then SIGKILL, so no
 * `sleep` or half-started child outlives the step.
 */
async function runShell(
  command: string,
  options: { env: NodeJS.ProcessEnv; cwd: string | undefined; timeoutMs: number; signal: AbortSignal },
): Promise<ShellResult> {
  if (options.signal.aborted) return { outcome: 'cancelled', stdout: '', stderr: '' };
  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-command-'));
  const read = (name: string): string => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch {
      return '';
    }
  };
  try {
    const stdoutFd = openSync(join(dir, 'stdout'), 'w', 0o600);
    const stderrFd = openSync(join(dir, 'stderr'), 'w', 0o600);
    const child = spawn('/bin/sh', ['-c', command], { env: options.env, cwd: options.cwd, stdio: ['ignore', stdoutFd, stderrFd], detached: true });
    closeSync(stdoutFd);
    closeSync(stderrFd);
    let ending: 'timed-out' | 'cancelled' | undefined;
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // The group is gone already.
      }
    };
    let forceKill: NodeJS.Timeout | undefined;
    const end = (why: 'timed-out' | 'cancelled'): void => {
      if (ending) return;
      ending = why;
      killGroup('SIGTERM');
      forceKill = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
    };
    const timer = setTimeout(() => end('timed-out'), options.timeoutMs);
    const onAbort = (): void => end('cancelled');
    options.signal.addEventListener('abort', onAbort, { once: true });
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: Error }>((resolve) => {
      child.once('error', (error) => resolve({ error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    clearTimeout(timer);
    if (forceKill) clearTimeout(forceKill);
    options.signal.removeEventListener('abort', onAbort);
    const output = { stdout: read('stdout').replace(/\n$/, ''), stderr: read('stderr') };
    if ('error' in exit) return { outcome: 'spawn-failed', spawnError: exit.error.message, ...output };
    if (ending) return { outcome: ending, ...output };
    return { outcome: 'exited', exitCode: exit.code ?? undefined, signal: exit.signal ?? undefined, ...output };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
