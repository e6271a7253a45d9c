// The worker under test runs as its own `pgrunbook worker` process, so its memory and CPU are its own.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../stack/binaries.js';

export interface WorkerProcess {
  pid: number;
  child: ChildProcess;
  logPath: string;
  stop(): Promise<void>;
}

/**
 * Starts `pgrunbook worker --config FILE` as a separate process (its output goes to `logPath`) and
 * returns once it reports it polls `taskQueue`. `workerArgs`: more options, e.g. --task-queue.
 */
export async function startWorkerProcess(configPath: string, env: NodeJS.ProcessEnv, logPath: string, taskQueue: string, nodeArgs: string[] = [], workerArgs: string[] = []): Promise<WorkerProcess> {
  const main = join(projectRoot, 'dist', 'client', 'main.js');
  const child = spawn(process.execPath, [...nodeArgs, main, 'worker', '--config', configPath, ...workerArgs], { cwd: projectRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logFile = createWriteStream(logPath);
  child.stdout!.pipe(logFile, { end: false });
  child.stderr!.pipe(logFile, { end: false });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the worker did not report ready within 120 s; see ${logPath}`)), 120_000);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      if (output.includes(`worker for task queue "${taskQueue}"`)) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the worker exited during startup (${code ?? signal}):\n${output.slice(-2000)}`));
    });
  });
  if (child.pid === undefined) throw new Error('could not spawn the worker');
  await ready;
  let stopping: Promise<void> | undefined;
  return {
    pid: child.pid,
    child,
    logPath,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timeout = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(timeout);
        }
        process.off('exit', killOnExit);
        logFile.end();
      })()),
  };
}
