import { ScheduleOverlapPolicy, type CalendarSpec, type CalendarSpecDescription, type DayOfWeek, type Month, type Range, type ScheduleSpec, type ScheduleSpecDescription } from '@temporalio/client';
import type { ScheduleConfig } from '../config/schema.js';
import { cronFields, MONTH_NAMES, parseCalendar, WEEKDAY_NAMES, type CalendarFieldName, type FieldRange, type ParsedCalendar } from './calendar.js';

// pgrunbook.yaml's schedule → Temporal's ScheduleSpec, and any ScheduleSpec back into words.
// Calendars go to Temporal structured, never as cron strings: its calendar fields AND-match
// (day-of-month and day-of-week both), which is exactly what "the first Saturday" needs.

/** The schedule's calendar as ranges; cron strings go through the same parser as `calendar:`. */
export function parsedCalendarOf(schedule: ScheduleConfig): ParsedCalendar {
  const fields: Record<CalendarFieldName, number | string> | null = schedule.cron ? cronFields(schedule.cron) : (schedule.calendar ?? null);
  if (!fields) throw new Error('a schedule needs a calendar or a cron string');
  const parsed = parseCalendar(fields);
  // The config schema has refused these already; this is for callers that skipped it.
  if (!parsed.ok) throw new Error(`invalid schedule: ${parsed.problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`);
  return parsed.calendar;
}

/** The ScheduleSpec Temporal gets: one structured calendar, the time zone and the jitter. */
export function scheduleSpec(schedule: ScheduleConfig): ScheduleSpec {
  const calendar = parsedCalendarOf(schedule);
  const description = calendarDescription(calendar);
  const spec: ScheduleSpec = {
    calendars: [
      {
        minute: numeric(calendar.minute),
        hour: numeric(calendar.hour),
        dayOfMonth: numeric(calendar.dayOfMonth),
        month: named(calendar.month, (n) => MONTH_NAMES[n - 1] as Month),
        dayOfWeek: named(calendar.dayOfWeek, (n) => WEEKDAY_NAMES[n] as DayOfWeek),
        // Shown by the Temporal UI and `temporal schedule describe`.
        comment: describeCalendar(description),
      } satisfies CalendarSpec,
    ],
    timezone: schedule.timezone,
  };
  if (schedule.jitterMinutes > 0) spec.jitter = Math.round(schedule.jitterMinutes * 60_000);
  return spec;
}

export function overlapPolicy(overlap: ScheduleConfig['overlap']): ScheduleOverlapPolicy {
  return { skip: ScheduleOverlapPolicy.SKIP, 'buffer-one': ScheduleOverlapPolicy.BUFFER_ONE, 'allow-all': ScheduleOverlapPolicy.ALLOW_ALL }[overlap];
}

/** Our words for Temporal's overlap policies, the config's where one exists. */
export function describeOverlap(policy: ScheduleOverlapPolicy | undefined): string {
  switch (policy) {
    case undefined:
    case ScheduleOverlapPolicy.SKIP:
      return 'skip (a run due while the previous one still runs is skipped)';
    case ScheduleOverlapPolicy.BUFFER_ONE:
      return 'buffer-one (runs once the previous one ends)';
    case ScheduleOverlapPolicy.ALLOW_ALL:
      return 'allow-all (runs side by side)';
    default:
      return policy.toLowerCase().replace(/_/g, '-');
  }
}

function numeric(ranges: FieldRange[] | null): CalendarSpec['minute'] {
  return ranges === null ? '*' : ranges.map((r) => ({ start: r.start, end: r.end, step: r.step }));
}

function named<T>(ranges: FieldRange[] | null, name: (n: number) => T): '*' | Range<T>[] {
  return ranges === null ? '*' : ranges.map((r) => ({ start: name(r.start), end: name(r.end), step: r.step }));
}

/** Our parsed calendar in the shape `describe()` returns, so one function puts both into words. */
function calendarDescription(calendar: ParsedCalendar): CalendarSpecDescription {
  const all = (start: number, end: number): FieldRange[] => [{ start, end, step: 1 }];
  const toNames = <T>(ranges: FieldRange[], name: (n: number) => T): Range<T>[] => ranges.map((r) => ({ start: name(r.start), end: name(r.end), step: r.step }));
  return {
    second: [{ start: 0, end: 0, step: 1 }],
    minute: calendar.minute ?? all(0, 59),
    hour: calendar.hour ?? all(0, 23),
    dayOfMonth: calendar.dayOfMonth ?? all(1, 31),
    month: toNames(calendar.month ?? all(1, 12), (n) => MONTH_NAMES[n - 1] as Month),
    year: [],
    dayOfWeek: toNames(calendar.dayOfWeek ?? all(0, 6), (n) => WEEKDAY_NAMES[n] as DayOfWeek),
  };
}

/** A schedule's spec in words, e.g. "10:00 UTC on the first Saturday of every month (days 1-7 that are a Saturday)". */
export function describeSpec(spec: ScheduleSpec | ScheduleSpecDescription): string {
  const timezone = spec.timezone || 'UTC';
  const parts: string[] = [];
  for (const calendar of spec.calendars ?? []) parts.push(describeCalendar(asDescription(calendar), timezone));
  for (const interval of spec.intervals ?? []) parts.push(`every ${formatInterval(Number(interval.every))}`);
  for (const cron of (spec as ScheduleSpec).cronExpressions ?? []) parts.push(`cron "${cron}" (${timezone})`);
  return parts.join('; ') || 'never (no calendar)';
}

/** A calendar in words; the time zone follows the time of day when given. */
export function describeCalendar(calendar: CalendarSpecDescription, timezone?: string): string {
  const minute = toNumbers(calendar.minute, 0, 59, (x) => x);
  const hour = toNumbers(calendar.hour, 0, 23, (x) => x);
  const dayOfMonth = toNumbers(calendar.dayOfMonth, 1, 31, (x) => x);
  const month = toNumbers(calendar.month, 1, 12, (m) => MONTH_NAMES.indexOf(m) + 1);
  const dayOfWeek = toNumbers(calendar.dayOfWeek, 0, 6, (d) => WEEKDAY_NAMES.indexOf(d));

  const time = describeTime(hour, minute, timezone);
  const months = month ? `in ${listOf(month, (n) => title(MONTH_NAMES[n - 1]!))}` : 'every month';
  const weekdays = dayOfWeek ? listOf(dayOfWeek, (n) => title(WEEKDAY_NAMES[n]!)) : null;

  if (!dayOfMonth && !weekdays) return `${time} every day${month ? ` ${months}` : ''}`;
  if (!dayOfMonth) return `${time} every ${weekdays}${month ? ` ${months}` : ''}`;
  const days = listOf(dayOfMonth, String);
  const plural = dayOfMonth.length > 1 || dayOfMonth[0]!.start !== dayOfMonth[0]!.end;
  if (!weekdays) return `${time} on day${plural ? 's' : ''} ${days} of ${months === 'every month' ? 'every month' : `the month ${months}`}`;
  // Day-of-month AND day-of-week: a week of days and one weekday is "the n-th <weekday>".
  const week = dayOfMonth.length === 1 && dayOfMonth[0]!.step === 1 && dayOfMonth[0]!.end - dayOfMonth[0]!.start === 6 ? (dayOfMonth[0]!.start - 1) / 7 : -1;
  const nth = ['first', 'second', 'third', 'fourth'][week];
  const scope = months === 'every month' ? 'every month' : `the month ${months}`;
  if (nth) return `${time} on the ${nth} ${weekdays} of ${scope} (days ${days} that are a ${weekdays})`;
  return `${time} on days ${days} of ${scope} that are a ${weekdays}`;
}

/** Temporal's loose or described calendar as described ranges (numbers or names as given). */
function asDescription(calendar: CalendarSpec | CalendarSpecDescription): CalendarSpecDescription {
  const field = <T>(value: unknown, fallback: Range<T>[]): Range<T>[] => {
    if (value === undefined) return fallback;
    if (value === '*') return [];
    return (Array.isArray(value) ? value : [value]).map((v) => (typeof v === 'object' && v !== null ? { start: v.start, end: v.end ?? v.start, step: v.step ?? 1 } : { start: v, end: v, step: 1 }));
  };
  return {
    second: field(calendar.second, [{ start: 0, end: 0, step: 1 }]),
    minute: field(calendar.minute, [{ start: 0, end: 0, step: 1 }]),
    hour: field(calendar.hour, [{ start: 0, end: 0, step: 1 }]),
    dayOfMonth: field(calendar.dayOfMonth, []),
    month: field(calendar.month, []),
    year: field(calendar.year, []),
    dayOfWeek: field(calendar.dayOfWeek, []),
    comment: calendar.comment,
  };
}

/** Ranges as numbers, or null when they cover the whole field (an empty list does too). */
function toNumbers<T>(ranges: Range<T>[], min: number, max: number, toNumber: (value: T) => number): FieldRange[] | null {
  const numbers = ranges.map((r) => ({ start: toNumber(r.start), end: Math.max(toNumber(r.end), toNumber(r.start)), step: r.step > 0 ? r.step : 1 }));
  if (numbers.length === 0) return null;
  const covered = new Set(numbers.flatMap((r) => values(r)));
  for (let v = min; v <= max; v++) if (!covered.has(v)) return numbers;
  return null;
}

function values(range: FieldRange): number[] {
  const out: number[] = [];
  for (let v = range.start; v <= range.end; v += range.step) out.push(v);
  return out;
}

/** "02:00 UTC" or "02:00, 14:00 UTC" for a few times a day; otherwise "every 15 minutes of hour 1-3 (UTC)". */
function describeTime(hour: FieldRange[] | null, minute: FieldRange[] | null, timezone: string | undefined): string {
  const hours = hour ? hour.flatMap(values) : null;
  const minutes = minute ? minute.flatMap(values) : null;
  if (hours && minutes && hours.length * minutes.length <= 6) {
    return hours.flatMap((h) => minutes.map((m) => `${pad(h)}:${pad(m)}`)).join(', ') + (timezone ? ` ${timezone}` : '');
  }
  const step = minute?.length === 1 && minute[0]!.start === 0 && minute[0]!.end === 59 ? minute[0]!.step : 0;
  const minuteWords = !minute ? 'every minute' : step ? `every ${step} minutes` : `at minute ${listOf(minute, String)}`;
  return `${minuteWords} of ${hour ? `hour ${listOf(hour, String)}` : 'every hour'}${timezone ? ` (${timezone})` : ''}`;
}

function listOf(ranges: FieldRange[], name: (n: number) => string): string {
  return ranges
    .map((r) => {
      if (r.start === r.end) return name(r.start);
      const span = `${name(r.start)}-${name(r.end)}`;
      return r.step > 1 ? `${span} step ${r.step}` : span;
    })
    .join(', ');
}

const pad = (n: number): string => String(n).padStart(2, '0');
const title = (name: string): string => name[0] + name.slice(1).toLowerCase();

export function formatInterval(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${Math.round(ms / 1000)} s`;
}
