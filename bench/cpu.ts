import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { PostgresCluster } from '../stack/postgres-cluster.js';
import { round } from './common.js';
import { cpuOf, descendantsOf, machineCpu, treeCpuOf } from './proc.js';

// CPU accounting: on a small host a backup or restore competes for cores with PostgreSQL, SeaweedFS and
// Temporal; these figures show who used the CPU during each run.

/** CPU seconds used during one run, by component. */
export interface CpuUse {
  /** All CPUs of the machine, busy seconds, and busy / (wall x CPUs). */
  machineBusy: number;
  utilization: number;
  /** postmaster and all backends (pg_dump's COPY, row counts). */
  postgres: number;
  /** pg_dump (raw, or spawned by the worker) and pg_restore -l. */
  tools: number;
  /** The node worker process itself (streams, sha256, S3 SDK, Temporal). */
  worker: number;
  weed: number;
  temporal: number;
  /** This benchmark process (RSS sampler). */
  bench: number;
  /** Busy time not accounted to any of the above: other processes on the machine (noise). */
  other: number;
}

type CpuReading = { machine: number; postgres: number; workerSelf: number; workerTree: number; weed: number; temporal: number; benchSelf: number; benchChildren: number };

export class CpuAccounting {
  private constructor(
    private readonly pids: { postmaster: number; weed?: number; temporal?: number },
    private worker?: number,
  ) {}

  static find(cluster: PostgresCluster): CpuAccounting {
    const postmaster = Number(readFileSync(join(cluster.baseDir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const byName = (name: string): number | undefined =>
      descendantsOf(process.pid).find((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name;
        } catch {
          return false;
        }
      });
    return new CpuAccounting({ postmaster, weed: byName('weed'), temporal: byName('temporal') });
  }

  setWorker(pid: number): void {
    this.worker = pid;
  }

  read(): CpuReading {
    const tree = (pid: number | undefined): number => (pid === undefined ? 0 : treeCpuOf(pid));
    const bench = cpuOf('self');
    return {
      machine: machineCpu().busy,
      postgres: tree(this.pids.postmaster),
      workerSelf: this.worker === undefined ? 0 : cpuOf(this.worker).self,
      workerTree: tree(this.worker),
      weed: tree(this.pids.weed),
      temporal: tree(this.pids.temporal),
      benchSelf: bench.self,
      benchChildren: bench.children,
    };
  }

  static since(before: CpuReading, after: CpuReading, wallSeconds: number): CpuUse {
    const d = (k: keyof CpuReading): number => after[k] - before[k];
    const known = d('postgres') + d('benchChildren') + d('workerTree') + d('weed') + d('temporal') + d('benchSelf');
    return {
      other: round(Math.max(0, d('machine') - known), 1),
      machineBusy: round(d('machine'), 1),
      utilization: round(d('machine') / (wallSeconds * cpus().length), 2),
      postgres: round(d('postgres'), 1),
      // Raw pg_dump is this process's child; the worker's pg_dump/pg_restore are the worker's.
      tools: round(d('benchChildren') + d('workerTree') - d('workerSelf'), 1),
      worker: round(d('workerSelf'), 1),
      weed: round(d('weed'), 1),
      temporal: round(d('temporal'), 1),
      bench: round(d('benchSelf'), 1),
    };
  }
}

export const describeCpu = (c: CpuUse): string =>
  `cpu ${c.machineBusy} s (${Math.round(c.utilization * 100)}% of all CPUs): postgres ${c.postgres}, pg tools ${c.tools}, worker ${c.worker}, weed ${c.weed}, temporal ${c.temporal}, other processes ${c.other}`;
