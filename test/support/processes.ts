import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../stack/binaries.js';

// /proc lookups for tests that kill or freeze tools mid-way (worker-killed scenarios).

/** Pids whose argv matches `argv` and, when given, whose environment satisfies `env`. */
export function processesMatching(argv: RegExp, env?: (environ: string[]) => boolean): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((pid) => {
    try {
      if (!argv.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) return false;
      return !env || env(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0'));
    } catch {
      return false;
    }
  }).map(Number);
}

/** A process's name and parent from /proc/<pid>/stat, or undefined once it has gone. */
export function procStat(pid: number | string): { comm: string; ppid: number } | undefined {
  try {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) };
  } catch {
    return undefined;
  }
}

/** SIGSTOPs every process `find` returns once they have read `bytes` together; returns their pids. */
export function freezeAfterRead(what: string, find: () => number[], bytes: number, timeoutMs = 90_000): Promise<number[]> {
  return freezeAfterIo(what, find, bytes, 'read', timeoutMs);
}

/** SIGSTOPs every process `find` returns once they have read or written (/proc/<pid>/io) `bytes` together. */
export async function freezeAfterIo(what: string, find: () => number[], bytes: number, direction: 'read' | 'written', timeoutMs: number): Promise<number[]> {
  const counter = direction === 'read' ? /rchar: (\d+)/ : /wchar: (\d+)/;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pids = find();
    const moved = pids.reduce((sum, pid) => {
      try {
        return sum + Number(counter.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
      } catch {
        return sum;
      }
    }, 0);
    if (pids.length > 0 && moved > bytes) {
      for (const pid of pids) process.kill(pid, 'SIGSTOP');
      return pids;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${what} never ${direction} ${bytes} bytes`);
}

/**
 * Runs `run` while a `pgrunbook worker` process (dist/, on `configPath`, with `env`) serves the
 * task queue: `kill` SIGKILLs it and waits for it to exit, `restart` starts a new one. The last
 * one is killed afterwards.
 */
export async function withKillableWorker(configPath: string, env: NodeJS.ProcessEnv, run: (kill: () => Promise<void>, restart: () => void) => Promise<void>): Promise<void> {
  const start = (): ChildProcess => spawn(process.execPath, [join(projectRoot, 'dist', 'client', 'main.js'), 'worker', '--config', configPath], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  let worker = start();
  try {
    await run(
      async () => {
        worker.kill('SIGKILL');
        await new Promise((r) => worker.once('exit', r));
      },
      () => {
        worker = start();
      },
    );
  } finally {
    worker.kill('SIGKILL');
  }
}
