import { readdirSync, readFileSync } from 'node:fs';

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

/** SIGSTOPs every process `find` returns once they have read `bytes` together; returns their pids. */
export async function freezeAfterRead(what: string, find: () => number[], bytes: number, timeoutMs = 90_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pids = find();
    const read = pids.reduce((sum, pid) => {
      try {
        return sum + Number(/rchar: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
      } catch {
        return sum;
      }
    }, 0);
    if (pids.length > 0 && read > bytes) {
      for (const pid of pids) process.kill(pid, 'SIGSTOP');
      return pids;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`${what} never read ${bytes} bytes`);
}
