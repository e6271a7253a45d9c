// Human units for the CLI and the HTML report: one set, so a number read in the terminal matches
// the one in the report.

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/**
 * A duration the way an operator reads it: seconds for a quick restore, minutes for a slow one,
 * hours and days for a recovery point (a nightly backup is about a day old before the next one).
 */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0 s';
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) {
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds - m * 60);
    return s === 0 ? `${m} min` : `${m} min ${s} s`;
  }
  if (seconds < 2 * 86_400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

/** 2026-03-07T10:00:05.123Z -> 2026-03-07 10:00 UTC (reports are read across time zones). */
export function formatTimestamp(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
