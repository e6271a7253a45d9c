import { execa, type ResultPromise, type Options } from 'execa';
import { scrubSecrets } from './secrets.js';

/**
 * A child process that failed. It carries what an operator needs to diagnose it (command, exit
 * code, signal, the end of stderr) with secrets scrubbed. Arguments never hold secrets in the
 * first place: passwords reach PostgreSQL tools through the environment (PGPASSWORD).
 */
export class ToolError extends Error {
  override readonly name = 'ToolError';
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly signal: string | undefined,
    readonly stderr: string,
  ) {
    const how = signal ? `killed by ${signal}` : `exit code ${exitCode ?? 'unknown'}`;
    super(scrubSecrets(`${command} failed (${how})${stderr ? `: ${lastLines(stderr, 8)}` : ''}`));
  }
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  /**
   * false: the tool sees only `env`, not this process's environment (a server started for a
   * recovery gets the few variables it needs, not the worker's other secrets). Default true.
   */
  extendEnv?: boolean;
  input?: string;
  cancelSignal?: AbortSignal;
  cwd?: string;
}

/** Runs a tool to completion and returns its stdout; throws ToolError on failure. */
export async function runTool(file: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const result = await execa(file, args, {
    env: options.env,
    extendEnv: options.extendEnv ?? true,
    input: options.input,
    cancelSignal: options.cancelSignal,
    cwd: options.cwd,
    reject: false,
    stripFinalNewline: true,
  });
  if (result.failed) throw toolErrorFrom(file, result);
  return result.stdout;
}

/**
 * Starts a long-running tool whose stdout the caller streams. The caller must await
 * `finished(child)` to learn how it ended.
 */
export function spawnTool(
  file: string,
  args: readonly string[],
  options: RunOptions & { stdin?: Options['stdin'] } = {},
): ResultPromise<{ buffer: { stdout: false; stderr: true }; reject: false; stdin: Options['stdin'] }> {
  return execa(file, args, {
    env: options.env,
    extendEnv: options.extendEnv ?? true,
    cancelSignal: options.cancelSignal,
    cwd: options.cwd,
    stdin: options.stdin ?? 'ignore',
    buffer: { stdout: false, stderr: true },
    reject: false,
    // pg_dump stops cleanly on SIGTERM; make sure a stuck one cannot outlive its activity.
    forceKillAfterDelay: 5_000,
  });
}

/** Awaits a spawned tool and converts a failure into a ToolError. */
export async function finished(file: string, child: ReturnType<typeof spawnTool>): Promise<void> {
  const result = await child;
  if (result.failed) throw toolErrorFrom(file, result);
}

function toolErrorFrom(
  file: string,
  result: { exitCode?: number; signal?: string; stderr?: unknown; isCanceled?: boolean },
): ToolError {
  const stderr = typeof result.stderr === 'string' ? result.stderr : '';
  const name = file.split('/').pop() ?? file;
  return new ToolError(name, result.exitCode, result.isCanceled ? (result.signal ?? 'SIGTERM') : result.signal, stderr);
}
