// Shared by the benchmarks: logging with elapsed time, timers, units and rounding.
import { hrtime } from 'node:process';

export const MB = 1024 * 1024;
export const GB = 1024 * MB;

const t0 = Date.now();
export function log(line: string): void {
  const elapsed = ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stdout.write(`[${elapsed}s] ${line}\n`);
}

export function secondsSince(start: bigint): number {
  return Number(hrtime.bigint() - start) / 1e9;
}

export const mb = (bytes: number): number => Math.round((bytes / MB) * 10) / 10;
export const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
