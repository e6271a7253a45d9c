import { readFileSync, readdirSync, writeFileSync } from 'node:fs';

// Linux /proc readers for the benchmark: memory (bytes) and CPU time (seconds).

function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined; // gone
  }
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) * 1024 : undefined;
}

export const rssOf = (pid: number): number | undefined => statusField(pid, 'VmRSS');

/** The command line of a process, arguments joined by spaces; '' when gone. */
export function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}
export const peakRssOf = (pid: number): number | undefined => statusField(pid, 'VmHWM');

/**
 * Resets the kernel's peak-RSS counter (VmHWM) to the current RSS (`echo 5 > clear_refs`, Linux
 * 4.0+), so the next VmHWM read covers only what ran since. False when not permitted.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Children of every thread of `pid` (a child belongs to the thread that forked it). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) {
        if (child) out.push(Number(child));
      }
    } catch {
      // thread or process gone
    }
  }
  return out;
}

export function descendantsOf(pid: number, exclude?: (pid: number) => boolean): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of childrenOf(queue.shift()!)) {
      if (exclude?.(child)) continue;
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

export interface RssSample {
  /** Peak VmRSS of the process itself over the samples. */
  self: number;
  /** Peak over the samples of the sum of VmRSS of the process and all its descendants. */
  tree: number;
  /** Peak VmRSS of any single descendant. */
  child: number;
  samples: number;
}

/**
 * Samples VmRSS of a process (and, summed, of its descendants) every `intervalMs` until stopped.
 * Descendants for which `exclude` returns true are left out (with their own descendants).
 */
export function sampleRss(pid: number, intervalMs = 200, exclude?: (pid: number) => boolean): { stop(): RssSample } {
  const result: RssSample = { self: 0, tree: 0, child: 0, samples: 0 };
  const sample = (): void => {
    const self = rssOf(pid);
    if (self === undefined) return;
    let tree = self;
    for (const child of descendantsOf(pid, exclude)) {
      const rss = rssOf(child) ?? 0;
      tree += rss;
      result.child = Math.max(result.child, rss);
    }
    result.self = Math.max(result.self, self);
    result.tree = Math.max(result.tree, tree);
    result.samples++;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return { ...result };
    },
  };
}

const CLK_TCK = 100; // USER_HZ on Linux

/** CPU seconds of a process (utime+stime) and of its reaped children (cutime+cstime); zeros when gone. */
export function cpuOf(pid: number | 'self'): { self: number; children: number } {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return { self: 0, children: 0 };
  }
  // Fields after "(comm)" start at field 3 (state): utime is 14, stime 15, cutime 16, cstime 17.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const f = (n: number): number => Number(fields[n - 3]);
  return { self: (f(14) + f(15)) / CLK_TCK, children: (f(16) + f(17)) / CLK_TCK };
}

/**
 * All CPU a process tree has used so far: itself, its reaped children and its live descendants.
 * Differences of two readings are exact for children that are reaped by then.
 */
export function treeCpuOf(pid: number): number {
  const own = cpuOf(pid);
  return own.self + own.children + descendantsOf(pid).reduce((sum, child) => sum + cpuOf(child).self, 0);
}

/** Busy and total CPU seconds of the whole machine (all CPUs), from /proc/stat. */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq! + steal!;
  return { busy: busy / CLK_TCK, total: (busy + idle! + iowait!) / CLK_TCK };
}
